"""The FFLUX objectives: the exact likelihood (Cholesky, analytic ARD gradient), its iterative estimate
(CG + Lanczos) for large N, the GLS mean and weights, and one memory model for both (likelihoods.memory)."""
from tlgp_torch.likelihoods.exact import Evaluation, FFLUXLikelihood, NumericalWarning, fflux_log_likelihood
from tlgp_torch.likelihoods.iterative import IterativeEstimate, IterativeLikelihood

__all__ = ["Evaluation", "FFLUXLikelihood", "IterativeEstimate", "IterativeLikelihood", "NumericalWarning",
           "fflux_log_likelihood"]
