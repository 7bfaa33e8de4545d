"""Tests for reading, writing and evaluating FEREBUS .model files."""

import dataclasses
import math

import pytest
import torch

from tlgp_torch.io.errors import DataFormatError
from tlgp_torch.io.ferebus_model import FerebusModel, ferebus_model_filename, read_ferebus_model, write_ferebus_model

# (file, N, D, '# likelihood' value) of the FEREBUS 7.2.0 reference models
REFERENCE = [
    ("WATER_iqa_O1.marginal.model", 59, 3, 348.9145663746718),
    ("WATER_iqa_O1.concentrated.model", 59, 3, 453.3619290147578),
    ("AMMONIA_iqa_N1.marginal.model", 421, 6, 3002.272119066228),
    ("AMMONIA_iqa_N1.concentrated.model", 421, 6, 3655.640122029796),
    ("METHANOL_iqa_C1.marginal.model", 636, 12, 3546.665283848270),
    ("METHANOL_iqa_C1.concentrated.model", 636, 12, 4636.522891506022),
]


@pytest.fixture(scope="module")
def reference_models(fflux_dir):
    return {name: read_ferebus_model(fflux_dir / "reference" / name) for name, *_ in REFERENCE}


@pytest.mark.parametrize("name,n,d,likelihood", REFERENCE)
def test_reference_read(reference_models, name, n, d, likelihood):
    m = reference_models[name]
    assert (m.n_points, m.n_features) == (n, d)
    assert m.theta.shape == (d,) and m.x.shape == (n, d) and m.y.shape == m.weights.shape == (n,)
    assert m.likelihood == likelihood and m.nugget == 1e-10 and m.prefactor == 1.0
    assert (m.system, m.property, m.kernel_type, m.units_y) == (name.split("_")[0], "iqa", "rbf", "Ha")
    assert m.atom == name.split("_")[2].split(".")[0] and len(m.units_x) == d
    assert m.metadata == {"program": "ferebus", "version": "7.2.0", "method": "B3LYP", "basis-set": "6-31+g(d,p)"}
    assert (m.theta > 0).all()


def test_reference_details(reference_models):
    m = reference_models["METHANOL_iqa_C1.marginal.model"]
    assert m.alf == (1, 3, 2) and m.n_atoms == 6
    assert m.theta[0].item() == 0.4121613358898863 and m.theta[1].item() == 0.7798693371335456e-01
    assert m.mean == -38.04558618284906 and m.y[0].item() == -38.046751866
    assert m.weights[0].item() == -6135.637433266617
    assert m.units_x[:4] == ["bohr", "bohr", "radians", "bohr"]


@pytest.mark.parametrize("name", [r[0] for r in REFERENCE])
def test_reference_round_trip(reference_models, tmp_path, name):
    m = reference_models[name]
    path = write_ferebus_model(m, tmp_path / ferebus_model_filename(m.system, m.property, m.atom), version="9.9")
    text = path.read_text()
    lines = text.splitlines()
    assert lines[:5] == ["# [metadata]", "# program tlgp_torch", "# version 9.9", "# nugget 1e-10",
                         f"# likelihood {m.likelihood!r}"]
    assert "# method = B3LYP" in lines and "# program ferebus" not in lines
    k = lines.index("[kernels]")
    assert lines[k + 1:k + 4] == ["number_of_kernels 1", "composition k1", "prefactor 1.0"]
    sections = [ln for ln in lines if ln.startswith("[")]
    assert sections == ["[system]", "[dimensions]", "[mean]", "[kernels]", "[kernel.k1]", "[training_data]",
                        "[training_data.x]", "[training_data.y]", "[weights]"]
    assert lines[-1] == "# end" and text.endswith("# end\n")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    back = read_ferebus_model(path)
    for attr in ("theta", "x", "y", "weights"):
        assert torch.equal(getattr(back, attr), getattr(m, attr)), attr
    assert back.mean == m.mean and back.likelihood == m.likelihood and back.nugget == m.nugget
    assert (back.alf, back.n_atoms, back.units_x, back.kernel_type) == (m.alf, m.n_atoms, m.units_x, m.kernel_type)
    assert back.metadata == {"program": "tlgp_torch", "version": "9.9", "method": "B3LYP",
                             "basis-set": "6-31+g(d,p)"}


@pytest.mark.parametrize("name", [r[0] for r in REFERENCE])
def test_predict_reproduces_training_y(reference_models, name):
    m = reference_models[name]
    pred = m.predict(m.x)
    # The weights solve (K + nugget I) w = y - mean, so K w = y - mean - nugget * w exactly: the
    # prediction misses y by -nugget * w_i (up to ~3.4e-5 Ha / 6.3e-7 relative for ammonia marginal,
    # whose |w| reaches 3.4e5). With that term restored the match is ~1e-9 Ha.
    assert ((pred - m.y).abs() / m.y.abs()).max() < 1e-6
    assert (pred - m.y + m.nugget * m.weights).abs().max() < 1e-8


def direct_predict(m: FerebusModel, x: torch.Tensor) -> list[float]:
    out = []
    for p in x.tolist():
        total = 0.0
        for xi, wi in zip(m.x.tolist(), m.weights.tolist()):
            s = 0.0
            for dim, (a, b, t) in enumerate(zip(p, xi, m.theta.tolist())):
                delta = a - b
                if m.kernel_type == "rbf-cyclic" and (dim + 1) % 3 == 0:
                    delta = math.copysign(1.0, delta) * (math.fmod(abs(delta) + math.pi, 2 * math.pi) - math.pi)
                s += t * delta * delta
            total += wi * math.exp(-s)
        out.append(m.mean + m.prefactor * total)
    return out


@pytest.mark.numerics
@pytest.mark.parametrize("kernel_type", ["rbf", "rbf-cyclic"])
def test_predict_matches_double_loop(reference_models, kernel_type):
    m = dataclasses.replace(reference_models["AMMONIA_iqa_N1.marginal.model"], kernel_type=kernel_type,
                            prefactor=0.75)
    g = torch.Generator().manual_seed(3)
    x = m.x[:4] + 0.05 * torch.randn(4, m.n_features, generator=g, dtype=torch.float64)
    x[0, 5] = 3.1  # phi near +pi: wrapping matters against training phi near -pi
    fast = m.predict(x, chunk_elements=m.n_points * m.n_features)  # one point per chunk
    # Rounding bound of a sum of N terms w_i k_i in any order: N eps sum_i |w_i k_i| (|w| reaches 3.4e5 here, so
    # the sum cancels to ~1e2 from terms of ~1e5 and the BLAS's summation order moves the last ~10 bits)
    scale = dataclasses.replace(m, weights=m.weights.abs(), mean=0.0).predict(x)
    bound = m.n_points * torch.finfo(torch.float64).eps * scale
    assert ((fast - torch.tensor(direct_predict(m, x), dtype=torch.float64)).abs() <= bound).all()
    assert ((fast - m.predict(x)).abs() <= bound).all()


def test_rbf_cyclic_is_periodic(reference_models):
    m = dataclasses.replace(reference_models["METHANOL_iqa_C1.marginal.model"], kernel_type="rbf-cyclic")
    x = m.x[:3].clone()
    shifted = x.clone()
    shifted[:, 2::3] += 2 * math.pi
    assert torch.allclose(m.predict(x), m.predict(shifted), rtol=0, atol=1e-7)
    plain = dataclasses.replace(m, kernel_type="rbf")
    assert not torch.allclose(plain.predict(x), plain.predict(shifted), rtol=0, atol=1e-3)


MINIMAL = """# [metadata]
# program ferebus
# nugget .1D-09
[system]
name TOY
atom H2
property q00
ALF 2 1 3
[dimensions]
number_of_atoms 3
number_of_features 2
number_of_training_points 2
[mean]
type constant
value .5E+00
[kernels]
number_of_kernels 1
composition k1
prefactor 2.0
[kernel.k1]
type rbf-cyclic
number_of_dimensions 2
active_dimensions 1 2
theta .1E+01 2.0
[training_data]
units.x bohr bohr
units.y e
scaling.x none
scaling.y none
[training_data.x]
1.0 2.0
3.0 4.0
[training_data.y]
1.0
2.0
[weights]
.25
-.5
# end
"""


def test_minimal_file_variants(tmp_path):
    path = tmp_path / "TOY_q00_H2.model"
    path.write_text(MINIMAL)
    m = read_ferebus_model(path)
    assert m.prefactor == 2.0 and m.nugget == 1e-10 and m.mean == 0.5 and m.kernel_type == "rbf-cyclic"
    assert m.theta.tolist() == [1.0, 2.0] and m.alf == (2, 1, 3) and m.units_y == "e"
    assert m.likelihood is None and m.metadata == {"program": "ferebus"}
    expected = 0.5 + 2.0 * (0.25 * math.exp(-(1 + 2 * 4)) - 0.5 * math.exp(-1))
    assert m.predict(torch.tensor([[2.0, 4.0]], dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-14)
    back = read_ferebus_model(write_ferebus_model(m, tmp_path / "out.model"))
    assert back.prefactor == 2.0 and torch.equal(back.x, m.x)


@pytest.mark.parametrize("old,new,pattern,line", [
    ("3.0 4.0\n", "3.0\n", "expected 2 feature values, got 1", 32),
    ("-.5\n", "", r"\[weights\] has 1 values, expected 2", 36),
    ("2.0\n[weights]", "2.0\n7.0\n[weights]", r"\[training_data.y\] has 3 values", 33),
    ("3.0 4.0\n", "3.0 4.0\n5.0 6.0\n", r"has 3 rows, expected 2", 33),
    ("theta .1E+01 2.0", "theta .1E+01 x", "expected a number, got 'x'", 24),
    ("theta .1E+01 2.0", "theta 1.0", "'theta' needs 2 value", 24),
    ("type rbf-cyclic", "type matern", "unsupported kernel type", 21),
    ("[mean]", "[average]", "unknown section", 13),
])
def test_model_format_errors(tmp_path, old, new, pattern, line):
    path = tmp_path / "bad.model"
    path.write_text(MINIMAL.replace(old, new, 1))
    with pytest.raises(DataFormatError, match=pattern) as err:
        read_ferebus_model(path)
    assert err.value.line == line and "bad.model" in str(err.value)


def test_filename():
    assert ferebus_model_filename("WATER", "iqa", "O1") == "WATER_iqa_O1.model"
    assert ferebus_model_filename("N_METHYL_ACETAMIDE", "q00", "C1") == "NMETHYLACETAMIDE_q00_C1.model"
