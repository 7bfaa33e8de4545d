"""Tests for FFLUXPotential: predictions = the FFLUX formula, forces = finite differences, exports load bare."""

import math
import pathlib
import subprocess
import sys

import pytest
import torch

from tlgp_torch.data.dataset import cyclic_feature_mask
from tlgp_torch.export.molecule import export_molecule
from tlgp_torch.export.potential import FFLUXPotential, energy_and_forces
from tlgp_torch.export.saving import load_potential, save_potential
from tlgp_torch.features import alf_features
from tlgp_torch.io.ferebus_model import FerebusModel, read_ferebus_model
from tlgp_torch.io.ichor_csv import read_ichor_csv
from tlgp_torch.models.posterior import fflux_weights
from tlgp_torch.units import ANGSTROM_TO_BOHR, HARTREE_TO_EV, HARTREE_TO_KJMOL

NAMES = ["C1", "O2", "H3", "H4", "H5", "H6"]
ALF = torch.tensor([[0, 1, 2], [1, 0, 5], [2, 0, 1], [3, 0, 1], [4, 0, 1], [5, 1, 0]])
BASE = torch.tensor([[0.0, 0, 0], [1.43, 0, 0], [-0.36, 1.03, 0], [-0.36, -0.51, 0.89], [-0.36, -0.51, -0.89],
                     [1.75, 0.9, 0.1]], dtype=torch.float64)


def geometries(n, seed):
    """Methanol-like geometries (angstrom) around BASE."""
    return BASE + 0.08 * torch.randn(n, 6, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def models():
    """iqa and q00 models of every atom, weights fitted to a smooth function of the distances."""
    pos = geometries(60, 0)
    x = alf_features(pos * ANGSTROM_TO_BOHR, ALF)
    d = x.shape[-1]
    r = torch.cdist(pos, pos)
    out = []
    for a, name in enumerate(NAMES):
        for prop, scale in (("iqa", 1.0), ("q00", 0.1)):
            y = scale * torch.exp(-r[:, a]).sum(-1) - 0.5 * a
            theta = torch.linspace(0.1, 0.5, d, dtype=torch.float64)
            w = fflux_weights(x[:, a], y, theta, float(y.mean()), 1e-8, cyclic_feature_mask(d))
            out.append(FerebusModel(system="TEST", atom=name, property=prop, alf=tuple((ALF[a] + 1).tolist()),
                                    n_atoms=6, kernel_type="rbf-cyclic", theta=theta, mean=float(y.mean()),
                                    x=x[:, a], y=y, weights=w))
    return out


def test_forward_is_the_fflux_formula(models):
    pot = FFLUXPotential(models, energy_unit="hartree")
    pos = geometries(5, 1)
    energy, energies, charges = pot(pos)
    x = alf_features(pos * ANGSTROM_TO_BOHR, ALF)
    for m in models:
        a = NAMES.index(m.atom)
        got = energies[:, a] if m.property == "iqa" else charges[:, a]
        assert torch.allclose(got, m.predict(x[:, a]), rtol=1e-12, atol=0)
    assert torch.allclose(energy, energies.sum(-1), rtol=1e-14)


def test_units(models):
    pos = geometries(3, 2)
    ev = FFLUXPotential(models)(pos)[0]
    hartree_bohr = FFLUXPotential(models, length_unit="bohr", energy_unit="hartree")(pos * ANGSTROM_TO_BOHR)[0]
    assert torch.allclose(ev, hartree_bohr * HARTREE_TO_EV, rtol=1e-13)


def test_forces_match_finite_differences(models):
    pot = FFLUXPotential(models, energy_unit="hartree")
    pos = geometries(2, 3)
    _, forces = energy_and_forces(pot, pos)
    h = 1e-5
    fd = torch.zeros_like(pos)
    for i in range(6):
        for k in range(3):
            step = torch.zeros_like(pos)
            step[:, i, k] = h
            fd[:, i, k] = -(pot(pos + step)[0] - pot(pos - step)[0]) / (2 * h)
    assert float((forces - fd).abs().max() / forces.abs().max()) < 1e-6
    _, scripted = torch.jit.script(pot).energy_and_forces(pos)
    assert torch.allclose(scripted, forces, rtol=1e-12, atol=1e-15)


BARE = """
import sys, torch
sys.modules["tlgp_torch"] = None  # any import of the training code fails
path, pos_file, out = sys.argv[1:]
pos = torch.load(pos_file)
if path.endswith(".pt2"):
    module = torch.export.load(path).module()
else:
    module = torch.jit.load(path)
p = pos.clone().requires_grad_(True)
energy, energies, charges = module(p)
(grad,) = torch.autograd.grad(energy.sum(), p)
torch.save({"energy": energy.detach(), "energies": energies.detach(), "charges": charges.detach(),
            "forces": -grad}, out)
"""


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_saved_potential_loads_without_tlgp_torch(models, tmp_path, suffix):
    pot = FFLUXPotential(models)
    path = save_potential(pot, tmp_path / f"TEST{suffix}")
    pos = geometries(7, 4)  # not the tracing batch size: the frame dimension is dynamic
    torch.save(pos, tmp_path / "pos.pt")
    script = tmp_path / "bare.py"
    script.write_text(BARE)
    subprocess.run([sys.executable, str(script), str(path), str(tmp_path / "pos.pt"), str(tmp_path / "out.pt")],
                   check=True, cwd=tmp_path)
    got = torch.load(tmp_path / "out.pt")
    energy, energies, charges = pot(pos)
    _, forces = energy_and_forces(pot, pos)
    for key, ref in (("energy", energy), ("energies", energies), ("charges", charges), ("forces", forces)):
        assert torch.allclose(got[key], ref, rtol=1e-10, atol=1e-12), key
    module, meta = load_potential(path)
    assert meta["length_unit"] == "angstrom" and meta["energy_unit"] == "eV" and meta["numbers"] == [6, 8, 1, 1, 1, 1]
    assert torch.allclose(module(pos)[0], energy, rtol=1e-10)


def test_missing_charges_are_nan_and_partial_needs_opt_in(models):
    energy_only = [m for m in models if m.property == "iqa"]
    _, _, charges = FFLUXPotential(energy_only)(geometries(1, 5))
    assert torch.isnan(charges).all()
    with pytest.raises(ValueError, match="energy model .* of each of the 6 atoms"):
        FFLUXPotential(energy_only[:3])
    with pytest.raises(ValueError, match="missing H6 q00"):
        FFLUXPotential(models[:-1])
    partial = FFLUXPotential(energy_only[:3], allow_partial=True)
    with pytest.raises(RuntimeError, match="predict_features"):
        partial(geometries(1, 5))


def _direct_formula(model, x):
    """y = mean + prefactor * sum_i w_i exp(-sum_d theta_d delta_d^2), FEREBUS's wrapping, in plain Python."""
    out = []
    cyclic = [k % 3 == 2 for k in range(model.n_features)] if model.kernel_type == "rbf-cyclic" else None
    xs, ws, th = model.x.tolist(), model.weights.tolist(), model.theta.tolist()
    for row in x.tolist():
        terms = []
        for xi, wi in zip(xs, ws):
            s = 0.0
            for k, (a, b, t) in enumerate(zip(row, xi, th)):
                d = a - b
                if cyclic and cyclic[k]:
                    d = math.copysign(math.fmod(abs(d) + math.pi, 2 * math.pi) - math.pi, d) if d else 0.0
                s += t * d * d
            terms.append(wi * math.exp(-s))
        out.append(model.mean + model.prefactor * math.fsum(terms))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("name", ["WATER_iqa_O1.marginal", "METHANOL_iqa_C1.concentrated", "AMMONIA_iqa_N1.marginal"])
def test_ferebus_reference_model_imports_exactly(fflux_dir, name):
    path = fflux_dir / "reference" / f"{name}.model"
    model = read_ferebus_model(path)
    system, _, atom = name.split(".")[0].split("_")
    val = read_ichor_csv(fflux_dir / f"{system}_{atom}_VALIDATION_SET.csv", ["iqa"])
    pot = FFLUXPotential.from_files([path], allow_partial=True)
    x = val.x[:40]
    pred = pot.predict_features(x.unsqueeze(1))[:, 0, 0]
    # FEREBUS weights reach 1e5: summing w_i k_i in another order moves the result by ~eps * sum |w_i|
    rounding = 4 * torch.finfo(torch.float64).eps * float(model.weights.abs().sum())
    assert float((pred - _direct_formula(model, x)).abs().max()) < rounding
    mae_kj = float((pot.predict_features(val.x.unsqueeze(1))[:, 0, 0] - val.property("iqa")).abs().mean()) * HARTREE_TO_KJMOL
    assert mae_kj < 5.0  # the FEREBUS model is a good model of its own validation set


def test_export_molecule_checks_fflux_rules(models, tmp_path):
    report = export_molecule(models, tmp_path, formats=("ferebus", "pt"))
    assert len(report.model_files) == 12 and report.folder == tmp_path / "TEST"
    assert (tmp_path / "TEST" / "TEST_iqa_H6.model").is_file() and (tmp_path / "TEST" / "TEST.pt").is_file()
    text = (tmp_path / "TEST" / "TEST_q00_O2.model").read_text()
    assert "prefactor 1.0" in text and text.rstrip().endswith("# end")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_molecule(models, tmp_path, formats=("ferebus",))
    with pytest.raises(ValueError, match="missing: H6 q00"):
        export_molecule(models[:-1], tmp_path / "b")
    short = FerebusModel(**{**models[0].__dict__, "x": models[0].x[:50], "y": models[0].y[:50],
                            "weights": models[0].weights[:50]})
    with pytest.raises(ValueError, match="one training-set size per molecule"):
        export_molecule([short] + models[1:], tmp_path / "c")


def test_ase_calculator(models):
    ase = pytest.importorskip("ase")
    from tlgp_torch.export import FFLUXCalculator
    pot = FFLUXPotential(models, length_unit="bohr", energy_unit="hartree")  # the calculator converts to eV, A
    atoms = ase.Atoms("COHHHH", positions=geometries(1, 6)[0].numpy())
    atoms.calc = FFLUXCalculator(pot)
    e = atoms.get_potential_energy()
    ref = float(pot(geometries(1, 6) * ANGSTROM_TO_BOHR)[0][0]) * HARTREE_TO_EV
    assert e == pytest.approx(ref, rel=1e-12)
    assert atoms.get_potential_energies().sum() == pytest.approx(e, rel=1e-12)
    forces = atoms.get_forces()
    h = 1e-5
    moved = atoms.copy()
    moved.calc = atoms.calc
    pos0 = atoms.positions.copy()
    moved.positions[3, 2] = pos0[3, 2] + h
    ep = moved.get_potential_energy()
    moved.positions[3, 2] = pos0[3, 2] - h
    em = moved.get_potential_energy()
    assert forces[3, 2] == pytest.approx(-(ep - em) / (2 * h), rel=1e-6)
    with pytest.raises(ValueError, match="atomic numbers"):
        ase.Atoms("CCHHHH", positions=pos0, calculator=FFLUXCalculator(pot)).get_potential_energy()


def test_real_water_potential(fflux_dir):
    """A water potential from FEREBUS's own O1 model plus two copies with H ALFs is complete and differentiable."""
    o1 = read_ferebus_model(fflux_dir / "reference" / "WATER_iqa_O1.marginal.model")
    hs = [FerebusModel(**{**o1.__dict__, "atom": a, "alf": alf}) for a, alf in (("H2", (2, 1, 3)), ("H3", (3, 1, 2)))]
    pot = FFLUXPotential([o1] + hs, energy_unit="hartree")
    pos = torch.tensor([[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]], dtype=torch.float64)
    energy, energies, _ = pot(pos)
    x = alf_features(pos[0] * ANGSTROM_TO_BOHR, torch.tensor([[0, 1, 2]]))
    assert float(energies[0, 0]) == pytest.approx(float(o1.predict(x)[0]), rel=1e-12)
    _, forces = energy_and_forces(pot, pos)
    assert torch.isfinite(forces).all()
    assert pathlib.Path(fflux_dir).is_dir()
