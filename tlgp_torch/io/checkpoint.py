"""Save and load trained models (TrainResult + metadata) as plain-dict torch checkpoints, written atomically."""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import torch

from tlgp_torch.io.atomic import atomic_write
from tlgp_torch.training.result import TrainResult
from tlgp_torch.version import __version__

__all__ = ["FORMAT", "load_checkpoint", "save_checkpoint"]

FORMAT = "tlgp_torch.model/1"


def _cpu(value: Any) -> Any:
    return value.detach().cpu() if isinstance(value, torch.Tensor) else value


def save_checkpoint(result: TrainResult, path: str | os.PathLike, **meta: Any) -> pathlib.Path:
    """Write result (hyperparameters, training data, weights, timings) and meta to path atomically."""
    path = pathlib.Path(path)
    state = {f.name: _cpu(getattr(result, f.name)) for f in dataclasses.fields(TrainResult)}
    state.update(format=FORMAT, version=__version__, weights=_cpu(result.weights), meta=dict(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: torch.save(state, fh))
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[TrainResult, dict]:
    """Read a checkpoint written by save_checkpoint: (TrainResult with its weights, meta dict)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"{path}: not a readable tlgp_torch checkpoint ({err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a tlgp_torch checkpoint (format {found!r}, expected {FORMAT!r})")
    names = {f.name for f in dataclasses.fields(TrainResult)}
    result = TrainResult(**{k: v for k, v in state.items() if k in names})
    if state.get("weights") is not None:
        result.__dict__["weights"] = state["weights"]  # fill the cached_property: no refactorisation
    return result, dict(state.get("meta", {}))
