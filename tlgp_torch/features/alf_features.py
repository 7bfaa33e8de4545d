"""Differentiable ALF features (FFLUX convention), batched over frames, in torch."""
from __future__ import annotations

import math

import torch

__all__ = ["alf_features", "frame_features", "non_frame_atoms"]


def non_frame_atoms(alf: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """LongTensor [A, N-3]: for each ALF row, the other atoms in index order (skipping C, X, P)."""
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


def frame_features(pos: torch.Tensor, alf: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """The computation of alf_features on checked inputs: pos [F, N, 3], alf [A, 3], others [A, N-3] (scriptable)."""
    c, x, p = pos[:, alf[:, 0]], pos[:, alf[:, 1]], pos[:, alf[:, 2]]  # [F, A, 3]
    vx, vp = x - c, p - c
    r1, r2 = vx.norm(p=2, dim=-1), vp.norm(p=2, dim=-1)
    angle = torch.atan2(torch.linalg.cross(vx, vp).norm(p=2, dim=-1), (vx * vp).sum(-1))
    ex = vx / r1.unsqueeze(-1)
    vy = vp - (vp * ex).sum(-1, keepdim=True) * ex
    ey = vy / vy.norm(p=2, dim=-1, keepdim=True)
    ez = torch.linalg.cross(ex, ey)
    d = pos[:, others] - c.unsqueeze(2)  # [F, A, N-3, 3]
    fx = (d * ex.unsqueeze(2)).sum(-1)
    fy = (d * ey.unsqueeze(2)).sum(-1)
    fz = (d * ez.unsqueeze(2)).sum(-1)
    r = d.norm(p=2, dim=-1)
    theta = torch.atan2(torch.sqrt(fx * fx + fy * fy), fz)  # = arccos(z / r), finite gradient at the poles
    phi = torch.atan2(fy, fx)
    phi = torch.where(phi <= -math.pi, phi + 2 * math.pi, phi)  # atan2(-0.0, x<0) = -pi -> +pi
    rest = torch.stack([r, theta, phi], dim=-1).flatten(-2)  # [F, A, 3(N-3)]
    out = torch.cat([r1.unsqueeze(-1), r2.unsqueeze(-1), angle.unsqueeze(-1), rest], dim=-1)
    return out
