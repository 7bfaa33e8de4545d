"""FFLUX data: ICHOR training-set CSVs, FEREBUS .model files, datasets and subset sampling."""

from .dataset import AtomDataset, cyclic_feature_mask
from .errors import DataFormatError
from .ferebus_model import FerebusModel, ferebus_model_filename, read_ferebus_model, write_ferebus_model
from .ichor_csv import parse_set_filename, read_ichor_csv, read_validation_set, write_ichor_csv
from .sampling import complement, random_subsets

__all__ = [
    "AtomDataset",
    "DataFormatError",
    "FerebusModel",
    "complement",
    "cyclic_feature_mask",
    "ferebus_model_filename",
    "parse_set_filename",
    "random_subsets",
    "read_ferebus_model",
    "read_ichor_csv",
    "read_validation_set",
    "write_ferebus_model",
    "write_ichor_csv",
]
