"""Tests for ICHOR CSV reading/writing, AtomDataset and subset sampling."""

import csv

import pytest
import torch

from tlgp_torch.data.dataset import AtomDataset, cyclic_feature_mask
from tlgp_torch.data.subsets import complement, random_subsets
from tlgp_torch.io.errors import DataFormatError
from tlgp_torch.io.ichor_csv import read_ichor_csv, read_validation_set, write_ichor_csv

# (file, N, D) from /work/shared/data/README.md
SHARED_SETS = [
    ("WATER_O1_TRAINING_SET.csv", 59, 3), ("WATER_O1_VALIDATION_SET.csv", 500, 3),
    ("WATER_H2_TRAINING_SET.csv", 59, 3), ("WATER_H3_TRAINING_SET.csv", 59, 3),
    ("AMMONIA_N1_TRAINING_SET.csv", 421, 6), ("AMMONIA_N1_VALIDATION_SET.csv", 500, 6),
    ("METHANOL_C1_TRAINING_SET.csv", 636, 12), ("METHANOL_C1_VALIDATION_SET.csv", 500, 12),
    ("NMA_C1_TRAINING_SET.csv", 887, 30), ("NMA_C1_VALIDATION_SET.csv", 500, 30),
    ("GLYCINE_C1_TRAINING_SET.csv", 2130, 51), ("GLYCINE_C1_VALIDATION_SET.csv", 494, 51),
]


def write_text(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- real data
@pytest.mark.parametrize("name,n,d", SHARED_SETS)
def test_shared_csv_shapes(fflux_dir, name, n, d):
    ds = read_ichor_csv(fflux_dir / name)
    assert (ds.n_points, ds.n_features) == (n, d)
    assert ds.x.dtype == ds.y.dtype == torch.float64
    assert "iqa" in ds.property_names
    assert ds.system == name.split("_")[0] and ds.atom == name.split("_")[1]
    assert torch.isfinite(ds.x).all() and torch.isfinite(ds.y).all()


def test_water_properties_by_name(fflux_dir):
    path = fflux_dir / "WATER_O1_TRAINING_SET.csv"
    full = read_ichor_csv(path)
    assert len(full.property_names) == 26 and full.property_names[0] != "iqa"  # shuffled file order
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, row = rows[0], rows[5]  # data row 4 (0-based), file line 6
    some = read_ichor_csv(path, properties=["q00", "iqa"])
    assert some.property_names == ["q00", "iqa"]
    assert some.property("iqa")[4].item() == float(row[header.index("iqa")])
    assert some.property("q00")[4].item() == float(row[header.index("q00")])
    assert full.property("iqa")[4].item() == float(row[header.index("iqa")])
    assert some.x[4].tolist() == [float(row[header.index(f"f{k}")]) for k in (1, 2, 3)]


def test_validation_set_matches_training(fflux_dir):
    train = read_ichor_csv(fflux_dir / "METHANOL_C1_TRAINING_SET.csv")
    val = read_validation_set(fflux_dir / "METHANOL_C1_VALIDATION_SET.csv", like=train, properties=["iqa"])
    assert val.n_features == train.n_features and val.property_names == ["iqa"]
    with pytest.raises(DataFormatError, match="available: iqa"):
        read_validation_set(fflux_dir / "WATER_O1_VALIDATION_SET.csv", properties=["q00"])


def test_real_csv_round_trip(fflux_dir, tmp_path):
    ds = read_ichor_csv(fflux_dir / "NMA_C1_TRAINING_SET.csv")
    back = read_ichor_csv(write_ichor_csv(ds, tmp_path / "NMA_C1_TRAINING_SET.csv"))
    assert torch.equal(back.x, ds.x) and torch.equal(back.y, ds.y)


# ---------------------------------------------------------------- synthetic files
def test_features_sorted_numerically(tmp_path):
    order = [10, 2, 1, 3, 4, 5, 6, 7, 8, 9]
    header = ",".join(f"f{k}" for k in order) + ",iqa"
    row = ",".join(str(float(k)) for k in order) + ",-1.5"
    ds = read_ichor_csv(write_text(tmp_path, "X_C1_TRAINING_SET.csv", f"{header}\n{row}\n{row}\n"))
    assert ds.x[0].tolist() == [float(k) for k in range(1, 11)]
    assert ds.feature_names[-1] == "f10" and ds.property_names == ["iqa"]


def test_index_column_dropped(tmp_path):
    ds = read_ichor_csv(write_text(tmp_path, "a.csv", ",f1,f2,iqa,q00\n0,1,2,3,4\n1,5,6,7,8\n"))
    assert ds.x.tolist() == [[1, 2], [5, 6]] and ds.y.tolist() == [[3, 4], [7, 8]]
    assert ds.property_names == ["iqa", "q00"] and ds.system is None and ds.atom is None


def test_blank_lines_keep_line_numbers(tmp_path):
    path = write_text(tmp_path, "a.csv", "f1,iqa\n1,2\n\n3,x\n\n")
    with pytest.raises(DataFormatError) as err:
        read_ichor_csv(path)
    assert err.value.line == 4 and err.value.column == "iqa"


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="NOPE_C1_TRAINING_SET.csv"):
        read_ichor_csv(tmp_path / "NOPE_C1_TRAINING_SET.csv")


@pytest.mark.parametrize("text,pattern", [
    ("", "empty file"),
    ("iqa,q00\n1,2\n", "no feature columns"),
    (",f1,f2\n0,1,2\n", "no property columns"),
    ("f1,f3,iqa\n1,2,3\n", "missing f2"),
    ("f1,f2,f2,iqa\n1,2,3,4\n", "duplicate column name 'f2'"),
    ("f1,iqa\n", "no data rows"),
    ("f1,iqa\n1,2,3\n", "line 2"),
])
def test_format_errors(tmp_path, text, pattern):
    with pytest.raises(DataFormatError, match=pattern):
        read_ichor_csv(write_text(tmp_path, "a.csv", text))


@pytest.mark.parametrize("cell,pattern", [
    ("abc", "expected a number, got 'abc'"), ("nan", "non-finite"), ("-inf", "non-finite"), ("", "empty cell"),
])
def test_bad_cell_located(tmp_path, cell, pattern):
    rows = [f"{i},{i}.5,1.25,2.5,-3.0" for i in range(20)]
    rows[15] = f"15,0.5,1.25,{cell},-3.0"  # data row 15 is file line 17
    path = write_text(tmp_path, "GLYCINE_C1_TRAINING_SET.csv", ",f1,f2,f3,iqa\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataFormatError, match=pattern) as err:
        read_ichor_csv(path)
    msg = str(err.value)
    assert "GLYCINE_C1_TRAINING_SET.csv" in msg and "line 17" in msg and "column 'f3'" in msg
    assert (err.value.line, err.value.column, err.value.path) == (17, "f3", path)


def test_missing_requested_property(tmp_path):
    path = write_text(tmp_path, "a.csv", "f1,iqa,q00\n1,2,3\n")
    with pytest.raises(DataFormatError, match="'q10' not found; available: iqa, q00"):
        read_ichor_csv(path, properties=["iqa", "q10"])


def test_validation_feature_count_mismatch(tmp_path):
    train = read_ichor_csv(write_text(tmp_path, "W_O1_TRAINING_SET.csv", "f1,f2,f3,iqa\n1,2,3,4\n"))
    val = write_text(tmp_path, "W_O1_VALIDATION_SET.csv", "f1,f2,iqa\n1,2,4\n")
    with pytest.raises(DataFormatError) as err:
        read_validation_set(val, like=train)
    msg = str(err.value)
    assert "W_O1_VALIDATION_SET.csv" in msg and "W_O1_TRAINING_SET.csv" in msg
    assert "2 features" in msg and "has 3" in msg


@pytest.mark.parametrize("index", [True, False])
def test_write_read_bit_identical(tmp_path, index):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 7, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-12, 12, (30, 7), generator=g)
    y = torch.randn(30, 2, generator=g, dtype=torch.float64) / 3
    ds = AtomDataset(x, y, ["q00", "iqa"])
    path = write_ichor_csv(ds, tmp_path / "SYS_H12_VALIDATION_SET.csv", index=index)
    assert path.read_text().startswith(",f1," if index else "f1,")
    back = read_ichor_csv(path)
    assert torch.equal(back.x, x) and torch.equal(back.y, y) and back.property_names == ["q00", "iqa"]
    assert (back.system, back.atom) == ("SYS", "H12")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


# ---------------------------------------------------------------- dataset and sampling
def test_cyclic_mask():
    assert cyclic_feature_mask(7).tolist() == [False, False, True, False, False, True, False]
    ds = AtomDataset(torch.zeros(2, 6, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64), ["iqa"])
    assert ds.cyclic.tolist() == cyclic_feature_mask(6).tolist()


def test_dataset_methods():
    x = torch.arange(12, dtype=torch.float64).reshape(4, 3)
    y = torch.arange(8, dtype=torch.float64).reshape(4, 2)
    ds = AtomDataset(x, y, ["iqa", "q00"], system="S", atom="C1")
    assert len(ds) == 4 and ds.feature_names == ["f1", "f2", "f3"]
    assert ds.property("q00").tolist() == [1, 3, 5, 7]
    with pytest.raises(KeyError, match="available: iqa, q00"):
        ds.property("q10")
    sub = ds.subset(torch.tensor([3, 1]))
    assert sub.x.tolist() == [x[3].tolist(), x[1].tolist()] and sub.atom == "C1"
    sel = ds.select(["q00", "iqa"])
    assert sel.property_names == ["q00", "iqa"] and torch.equal(sel.y, y.flip(1))
    assert ds.to(dtype=torch.float32).x.dtype == torch.float32
    for bad in [dict(x=x[0]), dict(y=y[:3]), dict(property_names=["iqa"])]:
        with pytest.raises(ValueError):
            AtomDataset(**{**dict(x=x, y=y, property_names=["iqa", "q00"]), **bad})


def test_random_subsets():
    a = random_subsets(50, 10, 7, torch.Generator().manual_seed(1))
    b = random_subsets(50, 10, 7, torch.Generator().manual_seed(1))
    assert a.shape == (7, 10) and a.dtype == torch.long and torch.equal(a, b)
    for row in a:
        assert len(set(row.tolist())) == 10 and torch.equal(row, row.sort().values)
        assert 0 <= row.min() and row.max() < 50
    for n, m, k in [(5, 6, 1), (5, 1, 1), (5, 3, 0)]:
        with pytest.raises(ValueError, match=f"n={n}, m={m}, k={k}"):
            random_subsets(n, m, k, torch.Generator())


def test_complement():
    idx = torch.tensor([4, 0, 2])
    assert complement(6, idx).tolist() == [1, 3, 5]
    assert complement(3, torch.tensor([], dtype=torch.long)).tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        complement(3, torch.tensor([3]))
