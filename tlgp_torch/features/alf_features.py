r"""Differentiable ALF features (FFLUX convention), batched over frames, in torch.

For central atom C with frame atoms X (x-axis) and P (xy-plane), 3N - 6 features:

.. math::

    f1 = |X - C|,   f2 = |P - C|,   f3 = angle(X - C, P - C),
    e_x = unit(X - C),   e_y = unit((P - C) - ((P - C) . e_x) e_x),   e_z = e_x x e_y,

then for every other atom j in index order (skipping C, X, P), with (x, y, z) the components of j - C in the
frame: r = |j - C|, theta = arccos(z / r) in [0, pi], phi = atan2(y, x) in (-pi, pi]. So every third feature
(1-based 3, 6, 9, ...) is an angle that FFLUX's rbf-cyclic kernel treats as periodic (phi from index 6 on).
The features are invariant to rotation and translation.

Example:
    >>> import torch
    >>> from tlgp_torch.features import alf_features
    >>> from tlgp_torch.units import ANGSTROM_TO_BOHR
    >>> positions = torch.tensor([[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]],
    ...                          dtype=torch.float64) * ANGSTROM_TO_BOHR     # water in bohr
    >>> f = alf_features(positions, torch.tensor([[0, 1, 2]]))             # O1 with X = H2, P = H3
    >>> [round(v, 4) for v in f[0].tolist()]                               # bohr, bohr, rad (104.5 deg)
    [1.8091, 1.8091, 1.8241]
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["FrameGeometry", "alf_features", "frame_features", "frame_features_vjp", "frame_geometry",
           "geometry_features", "geometry_vjp", "non_frame_atoms"]


def non_frame_atoms(alf: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """LongTensor [A, N-3]: for each ALF row, the other atoms in index order (skipping C, X, P).

    Args:
        alf: [A, 3] 0-based (C, X, P) rows.
        n_atoms: N.

    Raises:
        ValueError: unless alf is [A, 3] of three different indices in [0, N).

    Example:
        >>> import torch
        >>> from tlgp_torch.features import non_frame_atoms
        >>> non_frame_atoms(torch.tensor([[0, 1, 3], [1, 0, 2]]), 6)
        tensor([[2, 4, 5],
                [3, 4, 5]])
    """
    alf = torch.as_tensor(alf, dtype=torch.long)
    if alf.dim() != 2 or alf.shape[1] != 3:
        raise ValueError(f"alf must be [A, 3] (C, X, P), got {tuple(alf.shape)}")
    if alf.numel() and (alf.min() < 0 or alf.max() >= n_atoms):
        raise ValueError(f"alf indices must be 0-based in [0, {n_atoms - 1}], got {alf.tolist()}")
    if any(len(set(row)) != 3 for row in alf.tolist()):
        raise ValueError(f"C, X and P must be three different atoms, got {alf.tolist()}")
    idx = torch.arange(n_atoms, device=alf.device).expand(alf.shape[0], n_atoms)
    keep = (idx[:, :, None] != alf[:, None, :]).all(-1)
    return idx[keep].view(alf.shape[0], n_atoms - 3)


def alf_features(positions: torch.Tensor, alf: torch.Tensor, others: torch.Tensor | None = None) -> torch.Tensor:
    """Features [F, A, 3N-6] of the atoms in `alf` ([A, 3] 0-based C, X, P) from positions [F, N, 3] (or [N, 3]).

    f1 = |X-C|, f2 = |P-C|, f3 = angle XCP, then (r, theta, phi) of every other atom in index order in the
    frame e_x = X-C, e_y = P-C orthogonalised to e_x, e_z = e_x x e_y; theta = arccos(z/r) in [0, pi],
    phi = atan2(y, x) in (-pi, pi]. Lengths in the units of `positions` (use bohr for FFLUX). Differentiable:
    angles are computed as atan2 forms, whose gradients stay finite where arccos's would not. `others`
    (non_frame_atoms(alf, N), precomputed) keeps the function free of data-dependent shapes for torch.export.

    Args:
        positions: [F, N, 3] frames, or one frame [N, 3] (bohr for FFLUX models).
        alf: [A, 3] 0-based (C, X, P) of the atoms to describe (e.g. rows of choose_alf).
        others: non_frame_atoms(alf, N), or None to compute it.

    Returns:
        [F, A, 3N-6], or [A, 3N-6] for one frame.

    Raises:
        ValueError: for positions that are not [F, N, 3] / [N, 3], or a bad alf.

    Example:
        >>> import torch
        >>> from tlgp_torch.features import alf_features, choose_alf
        >>> numbers = ["C", "O", "H", "H", "H", "H"]                         # methanol, angstrom
        >>> positions = torch.tensor([[-0.047, 0.664, 0.0], [-0.047, -0.757, 0.0], [-0.987, -1.060, 0.0],
        ...                           [-1.083, 0.970, 0.0], [0.435, 1.094, 0.888], [0.435, 1.094, -0.888]],
        ...                          dtype=torch.float64)
        >>> alf = choose_alf(numbers, positions)
        >>> gen = torch.Generator().manual_seed(0)
        >>> frames = positions + 0.01 * torch.randn(4, 6, 3, dtype=torch.float64, generator=gen)  # 4 frames
        >>> alf_features(frames, alf).shape                     # 4 frames, 6 atoms, 3 * 6 - 6 features
        torch.Size([4, 6, 12])
        >>> rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=gen))[0]
        >>> bool(torch.allclose(alf_features(positions @ rotation.T, alf), alf_features(positions, alf)))
        True
    """
    single = positions.dim() == 2
    pos = positions.unsqueeze(0) if single else positions
    if pos.dim() != 3 or pos.shape[-1] != 3:
        raise ValueError(f"positions must be [F, N, 3] or [N, 3], got {tuple(positions.shape)}")
    alf = torch.as_tensor(alf, dtype=torch.long, device=pos.device)
    if others is None:
        others = non_frame_atoms(alf, pos.shape[1])
    out = frame_features(pos, alf, others)
    return out.squeeze(0) if single else out


class FrameGeometry(NamedTuple):
    """The frame of each ALF row and the other atoms in it, shared by frame_features and frame_features_vjp.

    Shapes for F frames, A ALF rows and K = N - 3 other atoms: ex, ey, ez [F, A, 3] the frame axes; vp = P - C
    [F, A, 3]; r1 = |X - C|, r2 = |P - C|, s = vp . ex and ny = |vp - s ex| [F, A, 1]; d = pos_j - C [F, A, K, 3];
    fx, fy, fz (the components of d in the frame), rho = sqrt(fx^2 + fy^2) and rho2 = rho^2 [F, A, K].

    Example:
        >>> import torch
        >>> pos = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]]],
        ...                    dtype=torch.float64)
        >>> geo = frame_geometry(pos, torch.tensor([[0, 1, 2]]), torch.tensor([[3]]))
        >>> geo.ex.tolist(), geo.r2.tolist(), (geo.fx.item(), geo.fy.item(), geo.fz.item())
        ([[[1.0, 0.0, 0.0]]], [[[2.0]]], (1.0, 1.0, 1.0))
    """

    ex: torch.Tensor
    ey: torch.Tensor
    ez: torch.Tensor
    vp: torch.Tensor
    r1: torch.Tensor
    r2: torch.Tensor
    s: torch.Tensor
    ny: torch.Tensor
    d: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    fz: torch.Tensor
    rho: torch.Tensor
    rho2: torch.Tensor


def frame_geometry(pos: torch.Tensor, alf: torch.Tensor, others: torch.Tensor) -> FrameGeometry:
    """The FrameGeometry of positions pos [F, N, 3] for ALF rows alf [A, 3] and others [A, N-3] (scriptable).

    Example:
        >>> import torch
        >>> pos = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]],
        ...                    dtype=torch.float64)
        >>> geo = frame_geometry(pos, torch.tensor([[0, 1, 2]]), torch.tensor([[3]]))
        >>> geo.ez.tolist(), geo.fz.tolist()        # z axis of the frame; atom 4 lies on it
        ([[[0.0, 0.0, 1.0]]], [[[3.0]]])
    """
    c, x, p = pos.index_select(1, alf[:, 0]), pos.index_select(1, alf[:, 1]), pos.index_select(1, alf[:, 2])
    vx, vp = x - c, p - c
    r1, r2 = vx.norm(p=2, dim=-1, keepdim=True), vp.norm(p=2, dim=-1, keepdim=True)
    ex = vx / r1
    s = (vp * ex).sum(-1, keepdim=True)
    vy = vp - s * ex
    ny = vy.norm(p=2, dim=-1, keepdim=True)
    ey = vy / ny
    ez = torch.linalg.cross(ex, ey)
    d = pos.index_select(1, others.flatten()).view(pos.shape[0], others.shape[0], others.shape[1], 3) - c.unsqueeze(2)
    fx = (d * ex.unsqueeze(2)).sum(-1)
    fy = (d * ey.unsqueeze(2)).sum(-1)
    fz = (d * ez.unsqueeze(2)).sum(-1)
    rho2 = fx * fx + fy * fy
    return FrameGeometry(ex, ey, ez, vp, r1, r2, s, ny, d, fx, fy, fz, rho2.sqrt(), rho2)


def geometry_features(geo: FrameGeometry) -> torch.Tensor:
    """ALF features [F, A, 3N-6] of a FrameGeometry: (r1, r2, angle XCP = atan2(ny, s)), then (r, theta, phi) of
    each other atom (scriptable).

    Example:
        >>> import torch
        >>> pos = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]], dtype=torch.float64)
        >>> geometry_features(frame_geometry(pos, torch.tensor([[0, 1, 2]]), torch.zeros(1, 0, dtype=torch.long)))
        tensor([[[1.0000, 2.0000, 1.5708]]], dtype=torch.float64)
    """
    angle = torch.atan2(geo.ny, geo.s)  # sin and cos of XCP times |vp|
    r = torch.sqrt(geo.rho2 + geo.fz * geo.fz)
    theta = torch.atan2(geo.rho, geo.fz)  # = arccos(z / r), finite gradient at the poles
    phi = torch.atan2(geo.fy, geo.fx)
    phi = torch.where(phi <= -math.pi, phi + 2 * math.pi, phi)  # atan2(-0.0, x<0) = -pi -> +pi
    rest = torch.stack([r, theta, phi], dim=-1).flatten(-2)  # [F, A, 3(N-3)]
    return torch.cat([geo.r1, geo.r2, angle, rest], dim=-1)


def frame_features(pos: torch.Tensor, alf: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """The computation of alf_features on checked inputs: pos [F, N, 3], alf [A, 3], others [A, N-3] (scriptable).

    Returns [F, A, 3N-6]; no input checks, no data-dependent shapes (for TorchScript and torch.export).

    Example:
        >>> import torch
        >>> pos = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]], dtype=torch.float64)
        >>> frame_features(pos, torch.tensor([[0, 1, 2]]), torch.zeros(1, 0, dtype=torch.long))
        tensor([[[1.0000, 2.0000, 1.5708]]], dtype=torch.float64)
    """
    return geometry_features(frame_geometry(pos, alf, others))


def frame_features_vjp(pos: torch.Tensor, alf: torch.Tensor, others: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """sum_{a,d} grad[f, a, d] d(features[f, a, d]) / d(pos[f, i, k]) [F, N, 3]: the chain rule through
    frame_features written out (no autograd graph), for pos [F, N, 3], alf [A, 3], others [A, N-3], grad [F, A, 3N-6].

    With vx = X - C, vp = P - C, alpha the angle XCP, d_j = pos_j - C and (fx, fy, fz) = (d.ex, d.ey, d.ez):
    d|vx| = ex, d|vp| = vp / |vp|, dalpha/dvx = -ey / |vx|, dalpha/dvp = (cos(alpha) vp/|vp| - ex) / (|vp| sin alpha);
    d r_j = d_j / r_j; theta_j = atan2(rho, fz) with rho^2 = fx^2 + fy^2: dtheta = (fx fz, fy fz, -rho^2) / (rho r^2);
    phi_j = atan2(fy, fx): dphi = (-fy, fx, 0) / rho^2; then back through ez = ex x ey, ey = unit(vp - (vp.ex) ex),
    ex = unit(vx). Used for analytic forces: forces = -frame_features_vjp(pos, alf, others, dE/dfeatures).

    Example:
        >>> pos = torch.randn(2, 5, 3, dtype=torch.float64)
        >>> alf = torch.tensor([[0, 1, 2], [1, 0, 2]]); others = non_frame_atoms(alf, 5)
        >>> frame_features_vjp(pos, alf, others, torch.ones(2, 2, 9, dtype=torch.float64)).shape
        torch.Size([2, 5, 3])
    """
    return geometry_vjp(frame_geometry(pos, alf, others), pos, alf, others, grad)


def geometry_vjp(geo: FrameGeometry, pos: torch.Tensor, alf: torch.Tensor, others: torch.Tensor,
                 grad: torch.Tensor) -> torch.Tensor:
    """frame_features_vjp from the FrameGeometry of pos (computed once for the features and their forces).

    Example:
        >>> pos = torch.randn(2, 5, 3, dtype=torch.float64)
        >>> alf = torch.tensor([[0, 1, 2], [1, 0, 2]]); others = non_frame_atoms(alf, 5)
        >>> g = torch.ones(2, 2, 9, dtype=torch.float64)
        >>> torch.equal(geometry_vjp(frame_geometry(pos, alf, others), pos, alf, others, g),
        ...             frame_features_vjp(pos, alf, others, g))
        True
    """
    ex, ey, ez, vp, r1, r2, s, ny = geo.ex, geo.ey, geo.ez, geo.vp, geo.r1, geo.r2, geo.s, geo.ny
    d, fx, fy, fz, rho, rho2 = geo.d, geo.fx, geo.fy, geo.fz, geo.rho, geo.rho2
    up = vp / r2
    cos_a = s / r2
    sin_a = ny / r2
    g1, g2, ga = grad[:, :, 0:1], grad[:, :, 1:2], grad[:, :, 2:3]
    g_vx = g1 * ex - ga * ey / r1
    g_vp = g2 * up + ga * (cos_a * up - ex) / (r2 * sin_a)
    r_sq = rho2 + fz * fz
    rest = grad[:, :, 3:].unflatten(-1, (-1, 3))  # [F, A, K, 3]: (r, theta, phi) of each other atom
    gr, gt, gp = rest[..., 0], rest[..., 1], rest[..., 2]
    t = gt / (rho * r_sq)
    g_fx = t * fx * fz - gp * fy / rho2
    g_fy = t * fy * fz + gp * fx / rho2
    g_fz = -gt * rho / r_sq
    g_d = (gr / r_sq.sqrt()).unsqueeze(-1) * d + g_fx.unsqueeze(-1) * ex.unsqueeze(2) \
        + g_fy.unsqueeze(-1) * ey.unsqueeze(2) + g_fz.unsqueeze(-1) * ez.unsqueeze(2)
    g_ex = (g_fx.unsqueeze(-1) * d).sum(2)
    g_ey = (g_fy.unsqueeze(-1) * d).sum(2)
    g_ez = (g_fz.unsqueeze(-1) * d).sum(2)
    g_ex = g_ex + torch.linalg.cross(ey, g_ez)  # ez = ex x ey
    g_ey = g_ey + torch.linalg.cross(g_ez, ex)
    g_vy = (g_ey - (g_ey * ey).sum(-1, keepdim=True) * ey) / ny  # ey = vy / |vy|
    g_vp = g_vp + g_vy - (g_vy * ex).sum(-1, keepdim=True) * ex  # vy = vp - (vp.ex) ex
    g_ex = g_ex - (g_vy * ex).sum(-1, keepdim=True) * vp - s * g_vy
    g_vx = g_vx + (g_ex - (g_ex * ex).sum(-1, keepdim=True) * ex) / r1  # ex = vx / |vx|
    g_c = -(g_vx + g_vp + g_d.sum(2))
    out = torch.zeros_like(pos)
    out = out.index_add(1, alf[:, 0], g_c).index_add(1, alf[:, 1], g_vx).index_add(1, alf[:, 2], g_vp)
    return out.index_add(1, others.flatten(), g_d.flatten(1, 2))
