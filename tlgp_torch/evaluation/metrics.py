"""Prediction errors in chemists' units (kJ/mol for energies, e / au for multipoles) and S-curves."""
from __future__ import annotations

import os
import pathlib

import numpy as np
import torch

from tlgp_torch.units import HARTREE_TO_KJMOL

__all__ = ["errors", "plot_s_curves", "property_unit", "s_curve"]



def property_unit(name: str) -> tuple[float, str]:
    """(scale from file units, unit label) for a property: energies -> kJ/mol, q00 -> e, other multipoles -> au.

    Energies (iqa, energy, e_*) are stored in Hartree and reported in kJ/mol (scale HARTREE_TO_KJMOL); unknown
    names get (1.0, "").

    Example:
        >>> from tlgp_torch.evaluation import property_unit
        >>> property_unit("iqa")[1], property_unit("q00"), property_unit("q21c")
        ('kJ/mol', (1.0, 'e'), (1.0, 'au'))
    """
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
    """MAE, RMSE and max absolute error of pred vs true in the units of `prop`, with unit and n.

    Args:
        pred: predictions [M] (tensor, array or list) in file units (Hartree for energies).
        true: reference values [M], likewise.
        prop: property name, which sets the display unit (property_unit).

    Returns:
        {"mae", "rmse", "max": floats in the display unit, "unit": its label, "n": M}.

    Raises:
        ValueError: when pred and true differ in size, or are empty.

    Example:
        >>> from tlgp_torch.evaluation import errors
        >>> e = errors([0.0, 0.001, -0.002], [0.0, 0.0, 0.0], "iqa")      # Hartree in, kJ/mol out
        >>> round(e["mae"], 4), round(e["max"], 4), e["unit"], e["n"]
        (2.6255, 5.251, 'kJ/mol', 3)
    """
    err = _abs_errors(pred, true, prop)
    if err.size == 0:
        raise ValueError("no points to compare")
    return {"mae": float(err.mean()), "rmse": float(np.sqrt((err ** 2).mean())), "max": float(err.max()),
            "unit": property_unit(prop)[1], "n": int(err.size)}


def s_curve(pred, true, prop: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted absolute errors and the percentage of points with an error up to each (ends at 100).

    The S-curve of FFLUX papers: plot percentage against error on a log x axis (plot_s_curves).

    Args:
        pred: predictions [M] in file units.
        true: reference values [M].
        prop: property name (sets the display unit).

    Returns:
        (errors [M] ascending in the display unit, percentages [M]) as numpy arrays.

    Example:
        >>> from tlgp_torch.evaluation import s_curve
        >>> err, pct = s_curve([0.1, -0.4, 0.2, 0.3], [0.0, 0.0, 0.0, 0.0], "q00")
        >>> [round(v, 6) for v in err.tolist()], pct.tolist()
        ([0.1, 0.2, 0.3, 0.4], [25.0, 50.0, 75.0, 100.0])
    """
    err = np.sort(_abs_errors(pred, true, prop))
    return err, 100.0 * np.arange(1, err.size + 1) / err.size


def plot_s_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, unit: str,
                  title: str = "") -> pathlib.Path:
    """Write a PNG of S-curves (log-x absolute error vs cumulative %) and return its path.

    Args:
        curves: label -> (errors, percentages) from s_curve; exact zero errors are left out (log axis).
        path: the PNG file (folders are created).
        unit: unit label of the x axis.
        title: plot title.

    Raises:
        ImportError: without matplotlib (extra `plot`).

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.evaluation.metrics import plot_s_curves, s_curve
        >>> curve = s_curve([0.1, -0.4, 0.2], [0.0, 0.0, 0.0], "q00")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = plot_s_curves({"TL": curve}, pathlib.Path(tmp) / "s.png", unit="e")
        ...     path.read_bytes()[1:4]                   # the PNG signature
        b'PNG'
    """
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
