"""Per-member stopping rule shared by every optimiser (so DL and TL are compared under one rule)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StoppingRule:
    """Stop a member when its objective changes by <= atol + rtol*|f| for `patience` iterations in a row, or at
    max_iter.

    Tolerances apply to the log-likelihood (not per point): rtol=1e-6 is ~0.016 on GLYCINE C1 (ll ~ 15,900).

    Attributes:
        rtol: relative tolerance on the change of f (in log-likelihood units).
        atol: absolute tolerance, likewise.
        max_iter: iteration cap per member.
        patience: consecutive small changes needed to stop.
        gtol: stop (L-BFGS) when max |grad| <= gtol; 0 disables the test.

    Raises:
        ValueError: for negative tolerances, or max_iter or patience below 1.

    Example:
        >>> import torch
        >>> from tlgp_torch.optim import StoppingRule
        >>> rule = StoppingRule(rtol=1e-6, patience=2)
        >>> rule.small_change(torch.tensor([100.0, 100.0]), torch.tensor([99.99995, 99.0]))
        tensor([ True, False])
    """

    rtol: float = 1e-6   # converged: the log-likelihood changes by <= atol + rtol |ll| ...
    atol: float = 0.0    # (absolute part of that tolerance)
    max_iter: int = 200  # optimiser iterations at most
    patience: int = 2    # ... for this many iterations in a row
    gtol: float = 0.0    # also stop when max |gradient| of the optimiser's objective <= gtol (0: off)

    def __post_init__(self):
        if self.rtol < 0 or self.atol < 0 or self.gtol < 0:
            raise ValueError("stopping tolerances must be >= 0")
        if self.max_iter < 1 or self.patience < 1:
            raise ValueError(f"max_iter and patience must be >= 1, got {self.max_iter}, {self.patience}")

    def small_change(self, f_old: torch.Tensor, f_new: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Mask [b] of members whose change |f_old - f_new| scale <= atol + rtol |f_new| scale; `scale` converts f
        back to log-likelihood units."""
        return (f_old - f_new).abs() * scale <= self.atol + self.rtol * f_new.abs() * scale
