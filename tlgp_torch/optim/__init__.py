"""Optimisers gpytorch lacks: batched L-BFGS and Adam with per-member stopping."""
from .adam import batched_adam
from .lbfgs import OptimResult, batched_lbfgs
from .stopping import StoppingRule

__all__ = ["OptimResult", "StoppingRule", "batched_adam", "batched_lbfgs"]
