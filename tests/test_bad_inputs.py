"""Bad inputs and faults a new user meets: each gets a clear message (file, line, column or argument, and what was
expected) or a documented automatic fix with a warning. docs/reliability.md lists them with the tests that pin them."""
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

from tlgp_torch.cli.main import main
from tlgp_torch.config.experiment import ConfigError, load_config
from tlgp_torch.io.errors import DataFormatError
from tlgp_torch.io.ferebus_model import read_ferebus_model
from tlgp_torch.io.ichor_csv import read_ichor_csv
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.training.direct import DirectTrainer

HEADER = ",f1,f2,f3,iqa\n"
ROWS = "".join(f"{i},{1 + 0.1 * i},{2 - 0.05 * i},{0.3 * i},{-0.5 + 0.01 * i * i}\n" for i in range(8))
TINY_FIT = dict(restarts=1, stop=StoppingRule(max_iter=5), device="cpu")


def _csv(tmp_path, body: bytes | str, name="WATER_O1_TRAINING_SET.csv") -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return path


# ------------------------------------------------------------------ ICHOR CSV files

def test_csv_bytes_that_are_not_utf8_are_located(tmp_path):
    path = _csv(tmp_path, (HEADER + ROWS).encode() + b"8,1.0,2.0,0.5,\xff\xfe\n")
    with pytest.raises(DataFormatError) as err:
        read_ichor_csv(path)
    assert (err.value.line, err.value.column) == (10, "iqa") and "not UTF-8" in str(err.value)


def test_csv_row_with_an_extra_cell_names_the_line(tmp_path):
    path = _csv(tmp_path, HEADER + ROWS + "8,1.0,2.0,0.5,-0.4,7.0\n")
    with pytest.raises(DataFormatError, match="row has 6 cells, the header has 5") as err:
        read_ichor_csv(path)
    assert err.value.line == 10


def test_csv_row_with_a_missing_cell_names_line_and_column(tmp_path):
    path = _csv(tmp_path, HEADER + ROWS + "8,1.0,2.0,0.5\n")
    with pytest.raises(DataFormatError, match="empty cell") as err:
        read_ichor_csv(path)
    assert (err.value.line, err.value.column) == (10, "iqa")


@pytest.mark.parametrize("value", ["1e300", "-2.5e200"])
def test_csv_values_whose_square_overflows_are_rejected(tmp_path, value):
    path = _csv(tmp_path, HEADER + ROWS.replace("0.3,", f"{value},", 1))
    with pytest.raises(DataFormatError, match="out of range") as err:
        read_ichor_csv(path)
    assert (err.value.line, err.value.column) == (3, "f3")
    # the largest accepted magnitude still trains to finite numbers: its square is finite
    assert torch.isfinite(torch.tensor(1e150, dtype=torch.float64) ** 2)


# ------------------------------------------------------------------ training data

def _xy(n=12, d=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=torch.float64)
    return x, torch.sin(3 * x).sum(-1)


def test_constant_target_is_a_clear_error():
    x, _ = _xy()
    with pytest.raises(ValueError, match=r"property 'iqa' is constant \(-0.5 at all 12 points\)"):
        DirectTrainer(**TINY_FIT).fit((x, torch.full((12,), -0.5, dtype=torch.float64)), "iqa")


def test_one_point_or_nan_targets_are_clear_errors():
    x, y = _xy()
    with pytest.raises(ValueError, match="need at least 2 training points, got 1"):
        DirectTrainer(**TINY_FIT).fit((x[:1], y[:1]), "iqa")
    y[4] = float("nan")
    with pytest.raises(ValueError, match="training data contain NaN or inf"):
        DirectTrainer(**TINY_FIT).fit((x, y), "iqa")


def test_identical_rows_are_a_clear_error():
    x, y = _xy()
    with pytest.raises(ValueError, match="all 12 training points are identical"):
        DirectTrainer(**TINY_FIT).fit((x[:1].expand(12, 3), y), "iqa")


def test_fewer_points_than_features_warns_and_trains():
    x, y = _xy(n=5, d=8)
    with pytest.warns(UserWarning, match=r"fewer training points \(5\) than features \(8\)") as record:
        res = DirectTrainer(**TINY_FIT).fit((x, y), "iqa")
    assert res.status == "ok" and torch.isfinite(res.predict(x)).all()
    # the warning names the user's line (this file), not a frame inside tlgp_torch
    assert [w.filename for w in record if "fewer training points" in str(w.message)] == [__file__]


def test_training_data_that_require_grad_are_detached_with_a_warning():
    x, y = _xy()
    xg = x.clone().requires_grad_(True)
    with pytest.warns(UserWarning, match="training uses x.detach") as record:
        res = DirectTrainer(**TINY_FIT).fit((xg, y), "iqa")
    assert {w.filename for w in record if "x.detach" in str(w.message)} == {__file__}
    ref = DirectTrainer(**TINY_FIT).fit((x, y), "iqa")
    # the same data, the same seed, the same program: the same fit (the values, not the autograd flag, are used)
    assert res.ll_concentrated == pytest.approx(ref.ll_concentrated, rel=1e-12)
    assert not res.x_train.requires_grad


def test_predict_with_the_wrong_shape_names_the_argument():
    x, y = _xy()
    res = DirectTrainer(**TINY_FIT).fit((x, y), "iqa")
    with pytest.raises(ValueError, match=r"x must be a tensor \[M, 3\].*got \(4, 2\)"):
        res.predict(x[:4, :2])
    with pytest.raises(ValueError, match=r"got \(3,\) \(one point: x.reshape\(1, 3\)\)"):
        res.predict(x[0])
    with pytest.raises(ValueError, match="got list"):
        res.predict(x.tolist())


# ------------------------------------------------------------------ FEREBUS .model files

MODEL = """# [metadata]
# program ferebus
[system]
name TOY
atom O1
property iqa
ALF 1 2 3
[dimensions]
number_of_atoms 3
number_of_features 3
number_of_training_points 2
[mean]
type constant
value 0.5
[kernels]
number_of_kernels 1
composition k1
prefactor 1.0
[kernel.k1]
type rbf
number_of_dimensions 3
active_dimensions 1 2 3
theta 1.0 2.0 0.5
[training_data]
units.y Ha
[training_data.x]
1.0 2.0 3.0
1.5 2.5 3.5
[training_data.y]
1.0
2.0
[weights]
0.25
-0.5
# end
"""


@pytest.mark.parametrize("old,new,pattern,line", [
    ("theta 1.0 2.0 0.5", "theta 1.0 -2.0 0.5", r"theta must be >= 0 .* feature 2 has -2.0", 23),
    ("theta 1.0 2.0 0.5", "theta 1.0 NaN 0.5", "expected a finite number, got 'NaN'", 23),
    ("value 0.5", "value inf", "expected a finite number, got 'inf'", 14),
    ("0.25\n-0.5\n# end\n", "0.25\n# end\n", r"\[weights\] has 1 values, expected 2", 32),
    ("0.25\n-0.5\n# end\n", "0.25\n-0.5\n0.125\n# end\n", r"\[weights\] has 3 values, expected 2", 32),
])
def test_model_file_errors(tmp_path, old, new, pattern, line):
    path = tmp_path / "TOY_iqa_O1.model"
    path.write_text(MODEL.replace(old, new, 1))
    with pytest.raises(DataFormatError, match=pattern) as err:
        read_ferebus_model(path)
    assert err.value.line == line and "TOY_iqa_O1.model" in str(err.value)


@pytest.mark.parametrize("after,pattern", [
    ("number_of_atoms 3\n", r"missing section \[mean\]"),
    ("1.0 2.0 3.0\n", r"missing section \[training_data.y\]"),
    ("0.25\n", r"\[weights\] has 1 values, expected 2"),
])
def test_truncated_model_file_is_named(tmp_path, after, pattern):
    """A file cut short (a copy that stopped): a missing section or a short data block, never a raw error."""
    path = tmp_path / "TOY_iqa_O1.model"
    path.write_text(MODEL[: MODEL.index(after) + len(after)])
    with pytest.raises(DataFormatError, match=pattern) as err:
        read_ferebus_model(path)
    assert "TOY_iqa_O1.model" in str(err.value)


def test_missing_model_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="FEREBUS model file not found: .*TOY_iqa_O1.model"):
        read_ferebus_model(tmp_path / "TOY_iqa_O1.model")


def test_model_file_round_trips_after_the_checks(tmp_path):
    path = tmp_path / "TOY_iqa_O1.model"
    path.write_text(MODEL)
    m = read_ferebus_model(path)
    assert m.theta.tolist() == [1.0, 2.0, 0.5] and m.weights.tolist() == [0.25, -0.5]


# ------------------------------------------------------------------ configs, export, checkpoints, kill -9

def _water(root: pathlib.Path) -> pathlib.Path:
    """Tiny GFN2-style water (energy only) and a config that trains it in seconds."""
    from test_fflux_export import ALF, ATOMS, _gfn2_like_water
    _gfn2_like_water(root, n=10)
    atoms = ", ".join(f'"{a}"' for a in ATOMS)
    alf = ", ".join(f"{a} = {list(v)}" for a, v in ALF.items())
    config = root / "water.toml"
    config.write_text(f'[data]\ndir = "{root}"\nsystem = "WATER"\natoms = [{atoms}]\nproperties = ["energy"]\n'
                      f'n_atoms = 3\nalf = {{ {alf} }}\n[train]\nmethod = "dl"\nseed = 0\ndevice = "cpu"\n'
                      '[train.stop]\nmax_iter = 5\n[train.dl]\nrestarts = 1\n')
    return config


@pytest.fixture(scope="module")
def water(tmp_path_factory):
    root = tmp_path_factory.mktemp("badwater")
    config = _water(root)
    assert main(["train", str(config), "--out", str(root / "run")]) == 0
    return config, root / "run"


def test_config_fflux_energy_must_be_a_property(tmp_path):
    config = _water(tmp_path)
    config.write_text(config.read_text() + '[export]\nfflux_energy = "enrgy"\n')
    with pytest.raises(ConfigError, match=r"water.toml: export.fflux_energy: 'enrgy' is not one of data.properties"):
        load_config(config)
    config.write_text(config.read_text().replace('"enrgy"', "3"))
    with pytest.raises(ConfigError, match="export.fflux_energy: expected str, got int"):
        load_config(config)


def test_export_with_a_wrong_atom_count_or_alf_names_both(water, tmp_path, capsys):
    config, out = water
    wrong_n = tmp_path / "n.toml"
    wrong_n.write_text(config.read_text().replace("n_atoms = 3", "n_atoms = 4"))
    assert main(["export", str(wrong_n), "--out", str(out), "--to", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "[data] n_atoms of" in err and "is 4, but WATER_energy_O1.pt was trained with 3 atoms (3 features)" in err
    wrong_alf = tmp_path / "alf.toml"
    wrong_alf.write_text(config.read_text().replace("H2 = [2, 1, 3]", "H2 = [2, 3, 1]"))
    assert main(["export", str(wrong_alf), "--out", str(out), "--to", str(tmp_path / "a")]) == 2
    assert "H2: [data] alf of" in capsys.readouterr().err
    assert not (tmp_path / "a" / "WATER").exists()
    from tlgp_torch.export.molecule import export_molecule, trained_models
    models = trained_models(load_config(config), out)
    bad = [dataclasses.replace(m, alf=(2, 1, 3)) if m.atom == "O1" else m for m in models]
    with pytest.raises(ValueError, match=r"O1 energy: ALF \[2, 1, 3\] must be .* the first the atom itself \(1\)"):
        export_molecule(bad, tmp_path / "b")
    bad = [dataclasses.replace(m, n_atoms=4) if m.atom == "O1" else m for m in models]
    with pytest.raises(ValueError, match=r"disagree on the number of atoms: \[3, 4\]"):
        export_molecule(bad, tmp_path / "b")
    bad = [dataclasses.replace(m, alf=(3, 1, 4)) if m.atom == "H3" else m for m in models]
    with pytest.raises(ValueError, match=r"H3 energy: ALF \[3, 1, 4\] must be 3 distinct 1-based atom indices in 1..3"):
        export_molecule(bad, tmp_path / "c")
    assert not list((tmp_path / "b").glob("*")) + list((tmp_path / "c").glob("*"))


def test_corrupted_checkpoint_is_reported_and_retrained(water, tmp_path, capsys):
    config, out = water
    run = tmp_path / "run"
    shutil.copytree(out, run)
    bad = run / "models" / "WATER_energy_H2.pt"
    bad.write_bytes(bad.read_bytes()[:200])  # a disk fault / a copy cut short
    capsys.readouterr()
    assert main(["train", str(config), "--out", str(run)]) == 0
    text = capsys.readouterr()
    err, said = text.err, text.out + text.err
    assert "not a readable tlgp_torch checkpoint" in err and "retraining WATER_energy_H2" in err
    assert said.count("skip ") == 2 and (run / "models" / "WATER_energy_H2.pt.corrupt").is_file()
    from tlgp_torch.io.checkpoint import load_checkpoint
    fresh, _ = load_checkpoint(bad)
    old, _ = load_checkpoint(out / "models" / "WATER_energy_H2.pt")
    assert fresh.ll_concentrated == pytest.approx(old.ll_concentrated, rel=1e-9)  # same seed, same data, retrained


KILL = """
import os, signal, sys
import tlgp_torch.export.molecule as mol
from tlgp_torch.config.experiment import load_config
real = mol.save_potential
def save_then_die(potential, path):
    real(potential, path)
    os.kill(os.getpid(), signal.SIGKILL)  # after the .model files and one potential: mid-export
mol.save_potential = save_then_die
cfg = load_config(sys.argv[1])
mol.export_molecule(mol.trained_models(cfg, sys.argv[2]), sys.argv[3], overwrite=True)
"""


def test_sigkill_during_export_leaves_no_half_written_file(water, tmp_path):
    config, out = water
    dest = tmp_path / "export"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", KILL, str(config), str(out), str(dest)], env=env,
                         capture_output=True, text=True)
    assert run.returncode == -9, run.stderr[-2000:]
    assert not (dest / "WATER").exists()  # nothing half-written where FFLUX looks
    assert main(["export", str(config), "--out", str(out), "--to", str(dest), "--formats", "ferebus"]) == 0
    names = sorted(p.name for p in dest.iterdir())
    assert names == ["WATER"], names  # the killed export's staging folder is gone
    before = {p.name: p.read_bytes() for p in (dest / "WATER").iterdir()}
    # killed while overwriting: the previous, complete export stays as it was
    run = subprocess.run([sys.executable, "-c", KILL, str(config), str(out), str(dest)], env=env,
                         capture_output=True, text=True)
    assert run.returncode == -9
    assert {p.name: p.read_bytes() for p in (dest / "WATER").iterdir()} == before
    assert json.loads(before["manifest.json"])["potential"]["files"] == []
