"""DL vs TL side by side: repeated fits with consecutive seeds, medians, speed-up and the printed table."""
from __future__ import annotations

import math
import statistics
from typing import Any, Callable

import torch

from tlgp_torch.data.dataset import AtomDataset
from tlgp_torch.evaluation.metrics import errors, property_unit
from tlgp_torch.training.result import TrainResult

SUMMARY_KEYS = ("wall_s", "n_full_evals", "full_eval_equiv", "ll_concentrated", "ll_marginal", "val_mae")


def validation_metrics(result: TrainResult, val: AtomDataset | None, prop: str) -> dict[str, Any]:
    """Validation MAE / RMSE / max in display units (kJ/mol, e, au), NaN when the set lacks the property."""
    unit = property_unit(prop)[1]
    if val is None or prop not in val.property_names:
        return {"val_mae": math.nan, "val_rmse": math.nan, "val_max": math.nan, "unit": unit}
    e = errors(result.predict(val.x), val.property(prop), prop)
    return {"val_mae": e["mae"], "val_rmse": e["rmse"], "val_max": e["max"], "unit": unit}


def run_record(result: TrainResult, val: AtomDataset | None, prop: str, **extra: Any) -> dict[str, Any]:
    """One fit as a flat row: timings, evaluation counts, likelihoods and validation errors."""
    return {"method": result.method, "property": prop, "wall_s": result.wall_time,
            "n_full_evals": result.n_full_evals, "n_source_evals": result.n_source_evals,
            "full_eval_equiv": result.full_eval_equivalents, "ll_concentrated": result.ll_concentrated,
            "ll_marginal": result.ll_marginal, **{f"t_{k}": v for k, v in result.stage_times.items()},
            **validation_metrics(result, val, prop), **extra}


def median(rows: list[dict], key: str) -> float:
    """Median of rows[key], NaNs ignored."""
    values = [r[key] for r in rows if key in r and not (isinstance(r[key], float) and math.isnan(r[key]))]
    return float(statistics.median(values)) if values else math.nan


def compare_methods(trainers: dict[str, Callable[[int], Any]], train: AtomDataset, val: AtomDataset | None,
                    prop: str, repeats: int = 3, seed: int = 0, label: str = "",
                    on_run: Callable[[dict, TrainResult], None] | None = None) -> tuple[list[dict], list[dict]]:
    """Fit each method `repeats` times (seeds seed, seed+1, ...), interleaved; returns (summary rows, all runs).

    trainers maps a method name ("DL", "TL") to a factory seed -> trainer. Speed-up = median DL / median TL time.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    runs = []
    for rep in range(repeats):
        for name, make in trainers.items():
            res = make(seed + rep).fit(train, prop)
            runs.append(run_record(res, val, prop, set=label, repeat=rep, seed=seed + rep))
            if on_run is not None:
                on_run(runs[-1], res)
    summary = []
    for name in trainers:
        rows = [r for r in runs if r["method"] == name]
        summary.append({"set": label, "method": name, "repeats": len(rows),
                        **{k: median(rows, k) for k in SUMMARY_KEYS}, "unit": rows[0]["unit"]})
    base = summary[0]
    for s in summary:
        s["speedup"] = base["wall_s"] / s["wall_s"] if s["wall_s"] > 0 else math.nan
        s["dll_pct"] = 100 * (s["ll_concentrated"] - base["ll_concentrated"]) / abs(base["ll_concentrated"])
        s["mae_ratio"] = s["val_mae"] / base["val_mae"] if base["val_mae"] else math.nan
    return summary, runs


def format_metric(value: Any, spec: str = ".4g") -> str:
    """value formatted with the format spec, or "-" when it is missing (None or NaN), for tables and logs.

    Example:
        >>> format_metric(0.123456), format_metric(float("nan")), format_metric(2.5, "+.3f")
        ('0.1235', '-', '+2.500')
    """
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_table(summary: list[dict]) -> str:
    """Fixed-width table of compare_methods summaries."""
    head = (f"{'set':<20} {'method':<6} {'wall s':>8} {'full evals':>10} {'equiv':>7} {'ll_conc':>12} "
            f"{'val MAE':>9} {'unit':<7} {'speed-up':>8} {'Δll %':>8} {'MAE ratio':>9}")
    lines = [head, "-" * len(head)]
    for s in summary:
        lines.append(f"{s['set']:<20} {s['method']:<6} {s['wall_s']:>8.2f} {s['n_full_evals']:>10.0f} "
                     f"{s['full_eval_equiv']:>7.0f} {s['ll_concentrated']:>12.3f} "
                     f"{format_metric(s['val_mae'], '.4f'):>9} {s['unit']:<7} {format_metric(s['speedup'], '.2f'):>8} "
                     f"{format_metric(s['dll_pct'], '+.3f'):>8} {format_metric(s['mae_ratio'], '.3f'):>9}")
    return "\n".join(lines)


def warm_up(trainers: dict[str, Callable[[int], Any]], train: AtomDataset, prop: str) -> None:
    """Short untimed fits so one-off start-up costs (lazy imports, allocator) don't land on the first method."""
    import dataclasses

    from tlgp_torch.optim.stopping import StoppingRule
    short = StoppingRule(max_iter=2)
    small = train.subset(torch.arange(min(train.n_points, 200)))
    for make in trainers.values():
        t = make(0)
        kw = {"stop": short}
        if hasattr(t, "source_stop"):
            kw["source_stop"] = short
        dataclasses.replace(t, **kw).fit(small, prop)
