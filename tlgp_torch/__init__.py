"""tlgp_torch: anisotropic GP models for FFLUX trained fast by transfer learning of hyperparameters."""
__version__ = "0.1.0"
