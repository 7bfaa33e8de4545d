"""Optimisers gpytorch lacks: batched L-BFGS and Adam with per-member stopping."""
from tlgp_torch.optim.adam import batched_adam
from tlgp_torch.optim.lbfgs import OptimResult, batched_lbfgs
from tlgp_torch.optim.stopping import StoppingRule

__all__ = ["OptimResult", "StoppingRule", "batched_adam", "batched_lbfgs"]
