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
from tlgp_torch.export.precision import float32_errors
from tlgp_torch.export.saving import load_potential, save_potential
from tlgp_torch.features import alf_features, non_frame_atoms
from tlgp_torch.features.alf_features import frame_features, frame_features_vjp
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
result = {}
if path.endswith(".forces.pt2"):  # the analytic program: (energy, forces, energies, charges = NaN)
    energy, result["fast_forces"], energies, charges = module(pos)
else:
    p = pos.clone().requires_grad_(True)
    energy, energies, charges = module(p)
    (grad,) = torch.autograd.grad(energy.sum(), p)
    result["forces"] = -grad
    result["charges"] = charges.detach()
if path.endswith(".pt"):
    result["fast_energy"], result["fast_forces"] = module.energy_and_forces(pos)
result.update(energy=energy.detach(), energies=energies.detach())
torch.save(result, out)
"""


@pytest.mark.parametrize("suffix", [".pt", ".pt2", ".forces.pt2"])
def test_saved_potential_loads_without_tlgp_torch(models, tmp_path, suffix):
    pot = FFLUXPotential(models)
    program = "forces" if suffix == ".forces.pt2" else "forward"
    path = save_potential(pot, tmp_path / f"TEST{suffix}", program=program)
    pos = geometries(7, 4)  # not the tracing batch size: the frame dimension is dynamic
    torch.save(pos, tmp_path / "pos.pt")
    script = tmp_path / "bare.py"
    script.write_text(BARE)
    subprocess.run([sys.executable, str(script), str(path), str(tmp_path / "pos.pt"), str(tmp_path / "out.pt")],
                   check=True, cwd=tmp_path)
    got = torch.load(tmp_path / "out.pt")
    energy, energies, charges = pot(pos)
    _, forces = energy_and_forces(pot, pos)
    refs = {"energy": energy, "energies": energies, "charges": charges, "forces": forces, "fast_forces": forces,
            "fast_energy": energy}
    assert len(got) >= 3
    for key, value in got.items():
        assert torch.allclose(value, refs[key], rtol=1e-10, atol=1e-12), key
    module, meta = load_potential(path)
    assert meta["length_unit"] == "angstrom" and meta["energy_unit"] == "eV" and meta["numbers"] == [6, 8, 1, 1, 1, 1]
    assert meta["program"] == program and meta["dtype"] == "float64"
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
    error = pot.predict_features(val.x.unsqueeze(1))[:, 0, 0] - val.property("iqa")
    mae_kj = float(error.abs().mean()) * HARTREE_TO_KJMOL
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


def _wrapping_pairs(pot, pos):
    """How many (frame, atom, training point, periodic feature) differences of the energy models exceed pi."""
    x = pot.features(pos)  # [F, A, D]
    cyc = pot.cyc
    delta = x[:, :, None, cyc] - pot.x_train[0][None, :, :, cyc]
    return int((delta.abs() > math.pi).sum())


def _outside_windows(pot, pos):
    """How many (frame, atom, periodic feature) queries of the energy models lie outside their re-cut window
    (only those can wrap against a training point; then the [B, C, F, M] wrap term is computed)."""
    t = pot.features(pos)[:, :, pot.cyc] - pot.fast_shift[0]
    t = t - pot.fast_period[0] * torch.floor((t + math.pi) / (2 * math.pi))
    return int(((t < pot.fast_win_lo[0]) | (t > pot.fast_win_hi[0])).sum())


def test_fast_path_equals_the_reference_formula(models):
    """forward and evaluate (matmul distances, stacked models) give predict_features' broadcast formula, for
    frames near the training set (no wrap term needed) and far from it (wrap term computed)."""
    plain = [FerebusModel(**{**m.__dict__, "kernel_type": "rbf"}) if m.atom == "H4" else m for m in models]
    pot = FFLUXPotential(plain, energy_unit="hartree")
    near = geometries(6, 11)
    far = BASE + 0.35 * torch.randn(6, 6, 3, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    assert _outside_windows(pot, near) == 0 and _outside_windows(pot, far) > 0
    assert _wrapping_pairs(pot, far) > 100  # the FEREBUS wrap is exercised, not just the plain distance
    for pos in (near, far):
        ref = pot.predict_features(pot.features(pos))  # [F, P, A]
        energy, energies, charges = pot(pos)
        # 1e-10 relative (the bar): matmul distances round at eps |xs|^2 (centred, ~1e-14) instead of eps
        assert torch.allclose(energies, ref[:, 0], rtol=1e-10, atol=0)
        assert torch.allclose(charges, ref[:, 1], rtol=1e-10, atol=1e-12)
        e2, _, energies2, q = pot.evaluate(pos)
        assert torch.allclose(energies2, ref[:, 0], rtol=1e-10, atol=0)
        assert torch.allclose(e2, ref[:, 0].sum(-1), rtol=1e-10, atol=0)
        assert torch.isnan(q).all()  # charges only when asked
        assert torch.allclose(pot.evaluate(pos, True)[3], ref[:, 1], rtol=1e-10, atol=1e-12)
        pot.exporting = True  # the branch-free form torch.export saves: the wrap term always
        assert torch.allclose(pot.evaluate(pos)[2], ref[:, 0], rtol=1e-10, atol=0)
        pot.exporting = False


def test_analytic_forces_match_autograd_and_finite_differences(models):
    pot = FFLUXPotential(models, energy_unit="hartree")
    pos = BASE + 0.3 * torch.randn(3, 6, 3, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    assert _wrapping_pairs(pot, pos) > 10
    energy, forces = pot.energy_and_forces(pos)
    p = pos.clone().requires_grad_(True)
    ref_energy = pot.predict_features(pot.features(p))[:, 0].sum(-1)  # today's formula, autograd
    (grad,) = torch.autograd.grad(ref_energy.sum(), p)
    assert torch.allclose(energy, ref_energy.detach(), rtol=1e-10, atol=0)
    # both are exact derivatives of one function in float64: they differ by rounding (~1e-13 of the largest force)
    assert float((forces + grad).abs().max() / grad.abs().max()) < 1e-10
    h, fd = 1e-5, torch.zeros_like(pos)
    for i in range(6):
        for k in range(3):
            step = torch.zeros_like(pos)
            step[:, i, k] = h
            fd[:, i, k] = -(pot(pos + step)[0] - pot(pos - step)[0]) / (2 * h)
    # central differences: truncation h^2 |third derivative| / 6 ~ 1e-10 plus rounding eps |E| / h ~ 1e-11
    assert float((forces - fd).abs().max() / forces.abs().max()) < 1e-6


def test_frame_features_vjp_is_the_autograd_chain_rule():
    gen = torch.Generator().manual_seed(14)
    pos = torch.randn(4, 7, 3, generator=gen, dtype=torch.float64)
    alf = torch.tensor([[0, 1, 2], [1, 0, 2], [3, 4, 0], [6, 5, 1]])
    others = non_frame_atoms(alf, 7)
    g = torch.randn(4, 4, 15, generator=gen, dtype=torch.float64)
    p = pos.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(frame_features(p, alf, others), p, g)
    # the same chain rule in another order: rounding of O(1) terms only
    assert torch.allclose(frame_features_vjp(pos, alf, others, g), ref, rtol=1e-11, atol=1e-12)


def test_float32_errors_are_reported(models):
    pot = FFLUXPotential(models)
    pos = geometries(8, 15)
    report = float32_errors(pot, pos)
    assert report.frames == 8 and "float32 vs float64 at 8 frames" in str(report) and "eV/angstrom" in str(report)
    # float32 rounds at 6e-8 relative; the kernel sums of these small models lose at most a few digits more
    assert 0 < report.energy_max_rel < 1e-5 and 0 < report.forces_max_rel < 1e-3
    low = FFLUXPotential(models, dtype=torch.float32)
    assert low.x_train.dtype == torch.float32 and low.energy_and_forces(pos)[1].dtype == torch.float32
    assert torch.allclose(low(pos)[0].double(), pot(pos)[0], rtol=1e-5)


def test_single_frame_and_wrong_atom_count_give_clear_errors(models, tmp_path):
    pot = FFLUXPotential(models)
    one = geometries(1, 16)
    scripted = torch.jit.script(pot)
    for module in (pot, scripted):
        for call in (module.forward, module.energy_and_forces):
            with pytest.raises((ValueError, torch.jit.Error), match=r"\[F, N, 3\] with N = 6 atoms.*unsqueeze\(0\)"):
                call(one[0])
            with pytest.raises((ValueError, torch.jit.Error), match=r"6 atoms \(C1, O2, H3, H4, H5, H6\).*\[1, 5, 3\]"):
                call(one[:, :5])
    exported = load_potential(save_potential(pot, tmp_path / "T.pt2"))[0]
    with pytest.raises(Exception, match="positions|shape|dimension|rank"):  # torch.export's own input guard
        exported(one[:, :5])
    with pytest.raises(Exception, match="positions|shape|dimension|rank"):
        exported(one[0])


@pytest.mark.parametrize("program", ["forward", "forces"])
def test_ase_calculator_on_saved_programs(models, tmp_path, program):
    """The calculator takes analytic forces from a .pt2 forces program, autograd ones from a forward program."""
    ase = pytest.importorskip("ase")
    from tlgp_torch.export import FFLUXCalculator
    pot = FFLUXPotential(models)
    path = save_potential(pot, tmp_path / "TEST.pt2", program=program)
    atoms = ase.Atoms("COHHHH", positions=geometries(1, 17)[0].numpy(), calculator=FFLUXCalculator(path))
    energy, forces = pot.energy_and_forces(geometries(1, 17))
    assert atoms.get_potential_energy() == pytest.approx(float(energy[0]), rel=1e-12)
    assert torch.allclose(torch.as_tensor(atoms.get_forces()), forces[0], rtol=1e-10, atol=1e-12)
    charges = atoms.get_charges()  # asked for: computed by forward, NaN from the forces program (it has none)
    assert (program == "forces") == bool(torch.isnan(torch.as_tensor(charges)).all())


def test_large_weights_switch_to_exact_differences(models, tmp_path):
    """Where the weights would carry the matmul distances' rounding past 1e-10 (FEREBUS-like ill-conditioned
    models), a call is recomputed by exact differences: still the reference formula, forces by autograd."""
    big = [FerebusModel(**{**m.__dict__, "weights": m.weights * 1e9, "mean": 1.0}) if m.property == "iqa" else m
           for m in models]
    pot = FFLUXPotential(big, energy_unit="hartree")
    pos = BASE + 0.3 * torch.randn(3, 6, 3, generator=torch.Generator().manual_seed(18), dtype=torch.float64)
    default = pot.evaluate(pos, True)
    limit = pot.fast_limit.clone()
    pot.fast_limit[0].zero_()  # every energy call past the limit: exact differences
    assert all(torch.equal(a, b) for a, b in zip(default[:3], pot.evaluate(pos, True)[:3]))  # the fallback was taken
    pot.fast_limit[0].fill_(math.inf)  # never: the matmul form
    assert not torch.equal(default[0], pot.evaluate(pos, True)[0])
    pot.fast_limit.copy_(limit)
    ref = pot.predict_features(pot.features(pos))
    energy, forces, energies, charges = pot.evaluate(pos, True)
    # both sum the same terms exactly in another order: eps sum |w_m k_m| / |y| ~ 1e-13 here
    assert torch.allclose(energies, ref[:, 0], rtol=1e-10, atol=0)
    assert torch.allclose(charges, ref[:, 1], rtol=1e-10, atol=1e-12)
    assert torch.allclose(pot(pos)[1], ref[:, 0], rtol=1e-10, atol=0)
    p = pos.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(pot.predict_features(pot.features(p))[:, 0].sum(), p)
    assert float((forces + grad).abs().max() / grad.abs().max()) < 1e-10
    # the torch.export program takes the same fallback (torch.cond), for one frame and for several
    program = load_potential(save_potential(pot, tmp_path / "BIG.pt2", program="forces"))[0]
    for frames in (pos[:1], pos):
        e_pt2, f_pt2 = program(frames)[:2]
        assert torch.allclose(e_pt2, ref[: len(frames), 0].sum(-1), rtol=1e-10, atol=0)
        assert float((f_pt2 + grad[: len(frames)]).abs().max() / grad.abs().max()) < 1e-10
