"""ALF features: connectivity, ALF choice (mass priority), 3N-6 features, invariance, phi wrap, gradients."""
import math
import os
import pathlib

import pytest
import torch

from tlgp_torch.data.dataset import cyclic_feature_mask
from tlgp_torch.features import alf_features, connectivity
from tlgp_torch.features.alf import choose_alf
from tlgp_torch.features.alf_features import non_frame_atoms
from tlgp_torch.features.connectivity import fragments
from tlgp_torch.features.elements import COVALENT_RADII, MASSES, SYMBOLS, atomic_numbers
from tlgp_torch.io.ichor_csv import read_ichor_csv
from tlgp_torch.units import ANGSTROM_TO_BOHR

DATA = pathlib.Path(os.environ.get("TLGP_DATA_DIR", pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
                                   / "fflux"))


def methanol_reference_order() -> tuple[list[str], torch.Tensor]:
    """Staggered methanol (angstrom) in the atom order of the FFLUX METHANOL set: C1 H2 O3 H4 H5 H6.

    H2 is the methyl H anti to the hydroxyl H6; H4 lies below (z < 0) and H5 above the C1-O3-H2 plane.
    """
    t = math.radians(109.47)
    h = [1.09 * torch.tensor([math.cos(t), math.sin(t) * math.cos(math.radians(a)),
                              math.sin(t) * math.sin(math.radians(a))], dtype=torch.float64) for a in (0, 240, 120)]
    c, o = torch.zeros(3, dtype=torch.float64), torch.tensor([1.43, 0.0, 0.0], dtype=torch.float64)
    a = math.radians(180 - 108.5)
    ho = o + 0.96 * torch.tensor([math.cos(a), -math.sin(a), 0.0], dtype=torch.float64)
    return ["C", "H", "O", "H", "H", "H"], torch.stack([c, h[0], o, h[1], h[2], ho])


def random_rotation(gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def test_element_table_matches_ase():
    data = pytest.importorskip("ase.data", reason="the radii/mass cross-check needs ase (pip install tlgp_torch[qm])")
    for z, sym in SYMBOLS.items():
        assert data.chemical_symbols[z] == sym
        assert COVALENT_RADII[z] == pytest.approx(data.covalent_radii[z])
        assert MASSES[z] == pytest.approx(data.atomic_masses[z], abs=2e-3)


def test_unknown_element_is_named():
    with pytest.raises(ValueError, match=r"atom 2: unknown element 'Xx'"):
        atomic_numbers(["C", "Xx", "H"])


def test_water_features_by_hand():
    r1, r2, ang = 0.9572, 1.01, math.radians(104.52)
    pos = torch.tensor([[0.1, 0.2, 0.3], [0.1 + r1, 0.2, 0.3],
                        [0.1 + r2 * math.cos(ang), 0.2 + r2 * math.sin(ang), 0.3]], dtype=torch.float64)
    alf = choose_alf(["O", "H", "H"], pos)
    assert alf.tolist() == [[0, 1, 2], [1, 0, 2], [2, 0, 1]]
    f = alf_features(pos * ANGSTROM_TO_BOHR, alf[:1])
    assert f.shape == (1, 3)
    assert f[0].tolist() == pytest.approx([r1 * ANGSTROM_TO_BOHR, r2 * ANGSTROM_TO_BOHR, ang], abs=1e-12)
    fh = alf_features(pos, alf)  # H2: X = O1, P = H3; f3 = angle H3-H2... at H2 between O and H3
    d_hh = (pos[1] - pos[2]).norm()
    assert fh[1].tolist() == pytest.approx([r1, d_hh.item(), fh[1, 2].item()], abs=1e-12)
    assert fh[1, 2] + fh[2, 2] + ang == pytest.approx(math.pi, abs=1e-12)  # angles of the triangle


def test_methanol_alf_matches_reference_model():
    symbols, pos = methanol_reference_order()
    alf = choose_alf(symbols, pos)
    assert (alf[0] + 1).tolist() == [1, 3, 2]  # `ALF 1 3 2` of reference/METHANOL_iqa_C1.*.model
    assert alf[1].tolist() == [1, 0, 2]          # methyl H: one neighbour, P = C's top neighbour O
    assert alf[5].tolist() == [5, 2, 0]          # hydroxyl H: X = O3, P = O3's other neighbour C1
    bonds = {tuple(b) for b in torch.nonzero(torch.triu(connectivity(symbols, pos))).tolist()}
    assert bonds == {(0, 1), (0, 2), (0, 3), (0, 4), (2, 5)}


def test_methanol_features_match_fflux_set():
    """A staggered methanol in the set's atom order gives features inside the ranges of the FFLUX set."""
    path = DATA / "METHANOL_C1_TRAINING_SET.csv"
    if not path.is_file():
        pytest.skip(f"FFLUX data not found at {DATA} (set TLGP_DATA_DIR)")
    data = read_ichor_csv(path, ["iqa"])
    symbols, pos = methanol_reference_order()
    f = alf_features(pos * ANGSTROM_TO_BOHR, choose_alf(symbols, pos)[:1])[0]
    assert f.shape == (data.n_features,)
    lo, hi = data.x.min(0).values, data.x.max(0).values
    assert ((f >= lo) & (f <= hi)).all(), (f, lo, hi)
    assert 2.5 < data.x[:, 0].mean() < 2.9 and 1.9 < data.x[:, 1].mean() < 2.3  # f1 = C-O, f2 = C-H (bohr)


def test_priority_breaks_ties_in_deeper_shells():
    # C0 bonded to C1 (methyl), C2 (CH2-O) and H3: level 0 ties C1/C2 (12.011); level 1 C2 wins (O).
    adj = torch.zeros(10, 10, dtype=torch.bool)
    for i, j in [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (1, 6), (2, 7), (2, 8), (2, 9)]:
        adj[i, j] = adj[j, i] = True
    symbols = ["C", "C", "C", "H", "H", "H", "H", "O", "H", "H"]
    pos = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    alf = choose_alf(symbols, pos, adjacency=adj)
    assert alf[0].tolist() == [0, 2, 1]
    assert alf[3].tolist() == [3, 0, 2]  # H3: X = C0, P = C0's best other neighbour C2
    assert alf[7].tolist() == [7, 2, 0]  # O7: one neighbour C2; P among C0, H8, H9 -> C0


def test_fallback_for_isolated_and_diatomic_fragments():
    symbols = ["H", "H", "O", "H", "H"]  # H2 molecule next to a water molecule
    pos = torch.tensor([[5.0, 0, 0], [5.74, 0, 0], [0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], dtype=torch.float64)
    assert fragments(connectivity(symbols, pos)) == [[0, 1], [2, 3, 4]]
    alf = choose_alf(symbols, pos)
    assert alf[0, :2].tolist() == [0, 1] and alf[0, 2].item() in (2, 3, 4)


def test_feature_order_skips_frame_atoms():
    gen = torch.Generator().manual_seed(1)
    pos = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    alf = torch.tensor([[2, 4, 0]])
    assert non_frame_atoms(alf, 6).tolist() == [[1, 3, 5]]
    f = alf_features(pos, alf)[0]
    assert f.shape == (12,)
    assert f[[3, 6, 9]].tolist() == pytest.approx([(pos[j] - pos[2]).norm().item() for j in (1, 3, 5)], abs=1e-12)
    assert f[0] == pytest.approx((pos[4] - pos[2]).norm().item())
    assert f[1] == pytest.approx((pos[0] - pos[2]).norm().item())
    assert cyclic_feature_mask(12).nonzero().flatten().tolist() == [2, 5, 8, 11]  # f3 angle, then the phis


def test_batched_rotation_translation_invariance():
    gen = torch.Generator().manual_seed(2)
    pos = torch.randn(4, 7, 3, generator=gen, dtype=torch.float64) * 1.5
    alf = torch.tensor([[0, 1, 2], [3, 0, 6], [6, 5, 4]])
    f = alf_features(pos, alf)
    assert f.shape == (4, 3, 15)
    for frame in range(4):
        assert torch.allclose(alf_features(pos[frame], alf), f[frame], atol=1e-13)
    for _ in range(5):
        rot, shift = random_rotation(gen), torch.randn(3, generator=gen, dtype=torch.float64) * 10
        g = alf_features(pos @ rot.T + shift, alf)
        diff = g - f
        diff[..., 5::3] = torch.remainder(diff[..., 5::3] + math.pi, 2 * math.pi) - math.pi  # phi near +-pi
        assert diff.abs().max() < 1e-10
    assert (f[..., 4::3] >= 0).all() and (f[..., 4::3] <= math.pi).all()          # theta in [0, pi]
    assert (f[..., 5::3] > -math.pi).all() and (f[..., 5::3] <= math.pi).all()    # phi in (-pi, pi]


def test_phi_wraps_across_minus_x_axis():
    base = [[0.0, 0, 0], [1.0, 0, 0], [0.3, 1.0, 0]]
    ys = [1e-3, 1e-9, 0.0, -0.0, -1e-9, -1e-3]
    pos = torch.tensor([base + [[-1.0, y, 0.4]] for y in ys], dtype=torch.float64)
    phi = alf_features(pos, torch.tensor([[0, 1, 2]]))[:, 0, 5]
    assert phi[:4].tolist() == pytest.approx([math.pi - 1e-3, math.pi, math.pi, math.pi], abs=1e-6)
    assert phi[2] == math.pi and phi[3] == math.pi  # exactly on the -x axis: +pi, never -pi
    assert phi[4:].tolist() == pytest.approx([-math.pi, -math.pi + 1e-3], abs=1e-6)
    assert (phi > -math.pi).all()


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(3)
    pos = (torch.randn(2, 5, 3, generator=gen, dtype=torch.float64) * 1.5).requires_grad_()
    alf = torch.tensor([[0, 1, 2], [4, 3, 0]])
    assert torch.autograd.gradcheck(lambda p: alf_features(p, alf), (pos,))


def test_bad_alf_rows_are_rejected():
    pos = torch.zeros(1, 4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="three different atoms"):
        alf_features(pos, torch.tensor([[0, 1, 1]]))
    with pytest.raises(ValueError, match="0-based"):
        alf_features(pos, torch.tensor([[0, 1, 4]]))
