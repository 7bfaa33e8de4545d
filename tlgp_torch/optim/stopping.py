"""Per-member stopping rule shared by every optimiser (so DL and TL are compared under one rule)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StoppingRule:
    """Stop a member when its objective changes by <= atol + rtol*|f| for `patience` iterations in a row, when it
    gains <= window_rtol*|f| over the last `window` iterations (slow progress: a creep along a ridge whose remaining
    gain is below what the caller cares about), or at max_iter.

    Tolerances apply to the log-likelihood (not per point): rtol=1e-6 is ~0.016 on GLYCINE C1 (ll ~ 15,900).

    Attributes:
        rtol: relative tolerance on the change of f (in log-likelihood units).
        atol: absolute tolerance, likewise.
        max_iter: iteration cap per member.
        patience: consecutive small changes needed to stop.
        gtol: stop (L-BFGS) when max |grad| <= gtol; 0 disables the test.
        window: iterations over which slow progress is judged; 0 disables the test.
        window_rtol: slow progress: the objective gained <= window_rtol |f| over the last `window` iterations;
            None: 100 rtol (an average gain per iteration of at most 10 rtol |f|, so a tight rtol keeps it tight;
            rtol = 0 turns the test off).

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
    window: int = 10     # also stop when the log-likelihood gained <= window_rtol |ll| over this many iterations ...
    window_rtol: float | None = None  # ... (slow progress; window 0: off; None: 100 rtol)

    def __post_init__(self):
        if self.rtol < 0 or self.atol < 0 or self.gtol < 0 or self.window_tol < 0 or self.window < 0:
            raise ValueError("stopping tolerances and window must be >= 0")
        if self.max_iter < 1 or self.patience < 1:
            raise ValueError(f"max_iter and patience must be >= 1, got {self.max_iter}, {self.patience}")

    def small_change(self, f_old: torch.Tensor, f_new: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Mask [b] of members whose change |f_old - f_new| scale <= atol + rtol |f_new| scale; `scale` converts f
        back to log-likelihood units."""
        return (f_old - f_new).abs() * scale <= self.atol + self.rtol * f_new.abs() * scale

    @property
    def window_tol(self) -> float:
        """The slow-progress tolerance in force: window_rtol, or 100 rtol when it is None."""
        return 100 * self.rtol if self.window_rtol is None else self.window_rtol

    def slow_progress(self, f_then: torch.Tensor, f_now: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Mask [b]: the decrease f_then - f_now over the last `window` iterations is <= window_tol |f_now| (both
        times `scale`, to log-likelihood units); all False when window or window_tol is 0. f_then is +inf for
        members with fewer than `window` iterations (never slow).

        Example:
            >>> import torch
            >>> from tlgp_torch.optim import StoppingRule
            >>> rule = StoppingRule(window=10, window_rtol=1e-4)
            >>> rule.slow_progress(torch.tensor([-1000.05, -999.5, float("inf")]), torch.tensor([-1000.1] * 3))
            tensor([ True, False, False])
        """
        if self.window == 0 or self.window_tol == 0:
            return torch.zeros_like(f_now, dtype=torch.bool)
        return (f_then - f_now) * scale <= self.window_tol * f_now.abs() * scale
