"""Errors of predictions in the property's units, S-curves, and side-by-side comparisons of trainers."""
from tlgp_torch.evaluation.metrics import errors, property_unit, s_curve

__all__ = ["errors", "property_unit", "s_curve"]
