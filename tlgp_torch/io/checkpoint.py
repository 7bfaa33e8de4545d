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
    """Write result (hyperparameters, training data, weights, timings) and meta to path atomically.

    The file is a torch.save of a plain dict (tensors, numbers, strings), readable with weights_only=True; it
    carries FORMAT and the package version. Parent folders are created.

    Args:
        result: the trained model (its weights are computed now if they were not yet).
        path: destination file (`tlgp train` uses models/{SYSTEM}_{property}_{ATOM}.pt).
        **meta: extra plain values stored beside it, e.g. alf=(1, 3, 2) and n_atoms=6 for the export.

    Returns:
        path as a pathlib.Path.

    Example:
        >>> import pathlib, tempfile, torch
        >>> from tlgp_torch import DirectTrainer
        >>> from tlgp_torch.io import load_checkpoint, save_checkpoint
        >>> x = torch.rand(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> result = DirectTrainer(restarts=1, seed=0, device="cpu").fit((x, torch.sin(3 * x).sum(-1)))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = save_checkpoint(result, pathlib.Path(tmp) / "models" / "WATER_iqa_O1.pt", alf=(1, 2, 3))
        ...     back, meta = load_checkpoint(path)
        >>> torch.equal(back.theta, result.theta), torch.equal(back.weights, result.weights), meta
        (True, True, {'alf': (1, 2, 3)})
    """
    path = pathlib.Path(path)
    state = {f.name: _cpu(getattr(result, f.name)) for f in dataclasses.fields(TrainResult)}
    state.update(format=FORMAT, version=__version__, weights=_cpu(result.weights), meta=dict(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: torch.save(state, fh))
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[TrainResult, dict]:
    """Read a checkpoint written by save_checkpoint: (TrainResult with its weights, meta dict).

    Args:
        path: the checkpoint file.
        map_location: device for its tensors.

    Returns:
        (TrainResult, meta): the weights come from the file (no refactorisation).

    Raises:
        FileNotFoundError: when path does not exist.
        ValueError: naming path when it is not a tlgp_torch checkpoint (unreadable or another format).

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.io import load_checkpoint
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "x.pt"
        ...     _ = path.write_text("not a checkpoint")
        ...     try:
        ...         load_checkpoint(path)
        ...     except ValueError as err:
        ...         print("not a readable tlgp_torch checkpoint" in str(err))
        True
    """
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
