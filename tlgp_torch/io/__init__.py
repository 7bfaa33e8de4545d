"""Files in and out: ICHOR training-set CSVs, FEREBUS .model files, checkpoints, atomic writes.

Every reader names the file, line and column of a bad value (`DataFormatError`); every writer writes to a
temporary file and renames it, so an interrupted run never leaves a half-written file.
"""
from tlgp_torch.io.atomic import atomic_write, atomic_write_text
from tlgp_torch.io.checkpoint import load_checkpoint, save_checkpoint
from tlgp_torch.io.errors import DataFormatError
from tlgp_torch.io.ferebus_model import FerebusModel, ferebus_model_filename, read_ferebus_model, write_ferebus_model
from tlgp_torch.io.ichor_csv import parse_set_filename, read_ichor_csv, read_validation_set, write_ichor_csv

__all__ = ["DataFormatError", "FerebusModel", "atomic_write", "atomic_write_text", "ferebus_model_filename",
           "load_checkpoint", "parse_set_filename", "read_ferebus_model", "read_ichor_csv", "read_validation_set",
           "save_checkpoint", "write_ferebus_model", "write_ichor_csv"]
