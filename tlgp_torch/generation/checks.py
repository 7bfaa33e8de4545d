"""Frame checks: overlapping atoms, changed bonding (fragmentation), separated complexes, near-duplicates."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tlgp_torch.features import connectivity
from tlgp_torch.features.connectivity import BOND_TOLERANCE, fragments
from tlgp_torch.features.elements import COVALENT_RADII, SYMBOLS

__all__ = ["Topology", "near_duplicates"]

BREAK_FACTOR = 1.5      # a reference bond is broken beyond 1.5 x (R_i + R_j)
FORM_FACTOR = 1.0       # a new bond has formed below 1.0 x (R_i + R_j)
SEPARATION = 2.0        # fragments of a complex have separated when their closest contact grows by 2 angstrom


@dataclass
class Topology:
    """Bonding of the reference geometry, against which every sampled frame is checked."""

    numbers: list[int]
    adjacency: torch.Tensor
    contacts: dict[tuple[int, int], float]  # closest distance between each pair of fragments (angstrom)
    min_distance: float = 0.5

    @classmethod
    def of(cls, numbers: list[int], positions) -> Topology:
        """Reference topology: covalent-radius bonds and the closest contacts between fragments."""
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
        adj = connectivity(numbers, pos, BOND_TOLERANCE)
        frags = fragments(adj)
        d = torch.cdist(pos, pos)
        contacts = {(a, b): float(d[frags[a]][:, frags[b]].min()) for a in range(len(frags))
                    for b in range(a + 1, len(frags))}
        return cls(list(numbers), adj, contacts)

    def _name(self, i: int) -> str:
        return f"{SYMBOLS[self.numbers[i]]}{i + 1}"

    def problem(self, positions) -> str | None:
        """Why this frame is unusable (overlap, broken or new bond, separated fragments), or None when it is fine."""
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
        if not torch.isfinite(pos).all():
            return "non-finite coordinates"
        d = torch.cdist(pos, pos)
        n = len(self.numbers)
        rsum = torch.tensor([COVALENT_RADII[z] for z in self.numbers], dtype=torch.float64)
        rsum = rsum[:, None] + rsum[None, :]
        off = ~torch.eye(n, dtype=torch.bool)
        masked = torch.where(off, d, torch.full_like(d, float("inf")))
        i, j = divmod(int(torch.argmin(masked)), n)
        if masked[i, j] < self.min_distance:
            return f"overlapping atoms {self._name(i)}-{self._name(j)} ({float(masked[i, j]):.3f} angstrom)"
        broken = self.adjacency & (d > BREAK_FACTOR * rsum)
        if broken.any():
            i, j = torch.nonzero(torch.triu(broken))[0].tolist()
            return f"bond {self._name(i)}-{self._name(j)} broken ({float(d[i, j]):.2f} angstrom)"
        formed = ~self.adjacency & off & (d < FORM_FACTOR * rsum)
        if formed.any():
            i, j = torch.nonzero(torch.triu(formed))[0].tolist()
            return f"new bond {self._name(i)}-{self._name(j)} ({float(d[i, j]):.2f} angstrom)"
        if self.contacts:
            frags = fragments(self.adjacency)
            for (a, b), ref in self.contacts.items():
                now = float(d[frags[a]][:, frags[b]].min())
                if now > ref + SEPARATION:
                    return (f"fragments {a + 1} and {b + 1} separated (closest contact {now:.2f} angstrom, "
                            f"{ref:.2f} at the start)")
        return None


def near_duplicates(positions: np.ndarray, tolerance: float = 1e-3) -> np.ndarray:
    """Bool mask [F] of frames to drop: all distances within `tolerance` (angstrom) of an earlier kept frame."""
    pos = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
    f, n = pos.shape[:2]
    iu = torch.triu_indices(n, n, 1)
    desc = torch.cdist(pos, pos)[:, iu[0], iu[1]]  # [F, n(n-1)/2], rotation/translation invariant
    drop = np.zeros(f, dtype=bool)
    for start in range(0, f, 1024):
        block = torch.cdist(desc[start:start + 1024], desc, p=float("inf")) < tolerance  # [B, F]
        for r, i in enumerate(range(start, min(start + 1024, f))):
            earlier = torch.nonzero(block[r, :i]).flatten().numpy()
            if earlier.size and (~drop[earlier]).any():
                drop[i] = True
    return drop
