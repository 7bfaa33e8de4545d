"""Exports of trained models: FEREBUS .model files for FFLUX / DL_FFLUX."""
from .ferebus import to_ferebus_model

__all__ = ["to_ferebus_model"]
