"""Prediction errors in chemists' units (kJ/mol for energies, e / au for multipoles) and S-curves."""
from __future__ import annotations

import os
import pathlib

import numpy as np
import torch

from tlgp_torch.units import HARTREE_TO_KJMOL

__all__ = ["errors", "plot_s_curves", "property_unit", "s_curve"]



def property_unit(name: str) -> tuple[float, str]:
    """(scale from file units, unit label) for a property: energies -> kJ/mol, q00 -> e, other multipoles -> au."""
    key = name.lower()
    if key in ("iqa", "energy") or key.startswith("e_"):
        return HARTREE_TO_KJMOL, "kJ/mol"
    if key == "q00":
        return 1.0, "e"
    if key.startswith("q"):
        return 1.0, "au"
    return 1.0, ""


def _abs_errors(pred, true, prop: str) -> np.ndarray:
    """|pred - true| in the display units of `prop`, as a float64 numpy vector."""
    p = pred.detach().cpu().double().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred, float)
    t = true.detach().cpu().double().numpy() if isinstance(true, torch.Tensor) else np.asarray(true, float)
    p, t = p.reshape(-1), t.reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"pred has {p.size} values but true has {t.size}")
    return np.abs(p - t) * property_unit(prop)[0]


def errors(pred, true, prop: str) -> dict:
    """MAE, RMSE and max absolute error of pred vs true in the units of `prop`, with unit and n."""
    err = _abs_errors(pred, true, prop)
    if err.size == 0:
        raise ValueError("no points to compare")
    return {"mae": float(err.mean()), "rmse": float(np.sqrt((err ** 2).mean())), "max": float(err.max()),
            "unit": property_unit(prop)[1], "n": int(err.size)}


def s_curve(pred, true, prop: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted absolute errors and the percentage of points with an error up to each (ends at 100)."""
    err = np.sort(_abs_errors(pred, true, prop))
    return err, 100.0 * np.arange(1, err.size + 1) / err.size


def plot_s_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, unit: str,
                  title: str = "") -> pathlib.Path:
    """Write a PNG of S-curves (log-x absolute error vs cumulative %) and return its path."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install tlgp_torch[plot]") from err
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)  # Agg rendering without switching pyplot's global backend
    ax = fig.add_subplot()
    for label, (err, pct) in curves.items():
        err, pct = np.asarray(err, float), np.asarray(pct, float)
        keep = err > 0  # exact zeros cannot sit on a log axis
        ax.plot(err[keep], pct[keep], label=label)
    ax.set_xscale("log")
    ax.set_xlabel(f"absolute error ({unit})" if unit else "absolute error")
    ax.set_ylabel("% of points")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title)
    if curves:
        ax.legend()
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
