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
    """Validation MAE / RMSE / max in display units (kJ/mol, e, au), NaN when the set lacks the property.

    Args:
        result: the fit (predicts with result.predict).
        val: the validation set, or None.
        prop: the property name.

    Returns:
        {"val_mae", "val_rmse", "val_max": floats, "unit": the display unit}.

    Example:
        >>> validation_metrics(None, None, "iqa")     # no validation set: NaN errors, the unit still known
        {'val_mae': nan, 'val_rmse': nan, 'val_max': nan, 'unit': 'kJ/mol'}
    """
    unit = property_unit(prop)[1]
    if val is None or prop not in val.property_names:
        return {"val_mae": math.nan, "val_rmse": math.nan, "val_max": math.nan, "unit": unit}
    e = errors(result.predict(val.x), val.property(prop), prop)
    return {"val_mae": e["mae"], "val_rmse": e["rmse"], "val_max": e["max"], "unit": unit}


def run_record(result: TrainResult, val: AtomDataset | None, prop: str, **extra: Any) -> dict[str, Any]:
    """One fit as a flat row: timings, evaluation counts, likelihoods and validation errors.

    Keys: method, property, wall_s, n_full_evals, n_source_evals, full_eval_equiv, ll_concentrated, ll_marginal,
    t_<stage> per stage time (seconds), val_mae, val_rmse, val_max, unit, and the `extra` keywords.

    Example:
        >>> import torch
        >>> from tlgp_torch import DirectTrainer
        >>> from tlgp_torch.data import AtomDataset
        >>> x = torch.rand(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> data = AtomDataset(x=x, y=0.01 * x.sum(-1, keepdim=True), property_names=["iqa"])
        >>> result = DirectTrainer(restarts=1, seed=0, device="cpu").fit(data, "iqa")
        >>> row = run_record(result, None, "iqa", repeat=0)
        >>> row["method"], row["property"], row["repeat"], row["unit"]
        ('DL', 'iqa', 0, 'kJ/mol')
    """
    return {"method": result.method, "property": prop, "wall_s": result.wall_time,
            "n_full_evals": result.n_full_evals, "n_source_evals": result.n_source_evals,
            "full_eval_equiv": result.full_eval_equivalents, "ll_concentrated": result.ll_concentrated,
            "ll_marginal": result.ll_marginal, **{f"t_{k}": v for k, v in result.stage_times.items()},
            **validation_metrics(result, val, prop), **extra}


def median(rows: list[dict], key: str) -> float:
    """Median of rows[key], NaNs ignored (NaN when no row has a value).

    Example:
        >>> median([{"a": 1.0}, {"a": 3.0}, {"a": float("nan")}, {"b": 0.0}], "a")
        2.0
    """
    values = [r[key] for r in rows if key in r and not (isinstance(r[key], float) and math.isnan(r[key]))]
    return float(statistics.median(values)) if values else math.nan


def compare_methods(trainers: dict[str, Callable[[int], Any]], train: AtomDataset, val: AtomDataset | None,
                    prop: str, repeats: int = 3, seed: int = 0, label: str = "",
                    on_run: Callable[[dict, TrainResult], None] | None = None) -> tuple[list[dict], list[dict]]:
    """Fit each method `repeats` times (seeds seed, seed+1, ...), interleaved; returns (summary rows, all runs).

    trainers maps a method name ("DL", "TL") to a factory seed -> trainer. Speed-up = median DL / median TL time.
    The first method is the baseline of the summary's ratios: speedup = its median wall time / the method's,
    dll_pct = 100 (ll - ll_base) / |ll_base| of the median concentrated ll, mae_ratio = val MAE / base val MAE.

    Args:
        trainers: method name -> factory seed -> trainer (anything with .fit(dataset, prop) -> TrainResult).
        train: the training set.
        val: the validation set, or None (errors are then NaN).
        prop: the property to fit.
        repeats: fits per method (>= 1), run interleaved so machine noise hits every method alike.
        seed: seed of the first repeat.
        label: the "set" column.
        on_run: called as on_run(row, result) after every fit (e.g. to save checkpoints).

    Returns:
        (summary: one row per method with medians over repeats and the ratios, runs: one run_record per fit).

    Raises:
        ValueError: when repeats < 1.

    Example:
        >>> import torch
        >>> from tlgp_torch import DirectTrainer, TransferTrainer
        >>> from tlgp_torch.data import AtomDataset
        >>> from tlgp_torch.evaluation.compare import compare_methods, format_table
        >>> x = torch.rand(80, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> data = AtomDataset(x=x, y=0.01 * torch.sin(3 * x).sum(-1, keepdim=True), property_names=["iqa"],
        ...                    cyclic=torch.zeros(2, dtype=torch.bool))
        >>> train, val = data.subset(torch.arange(60)), data.subset(torch.arange(60, 80))
        >>> trainers = {"DL": lambda seed: DirectTrainer(restarts=1, seed=seed, device="cpu"),
        ...             "TL": lambda seed: TransferTrainer(seed=seed, device="cpu")}
        >>> summary, runs = compare_methods(trainers, train, val, "iqa", repeats=1, label="toy")
        >>> [row["method"] for row in summary], len(runs), summary[0]["unit"]
        (['DL', 'TL'], 2, 'kJ/mol')
        >>> print(format_table(summary).splitlines()[0])
        set   method  wall s full evals   equiv   ll_conc   val MAE unit   speed-up  Δll %  MAE ratio
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
    """Fixed-width table of compare_methods summaries (NaN shown as "-").

    Example:
        >>> row = {"set": "WATER O1", "method": "TL", "wall_s": 1.5, "n_full_evals": 12, "full_eval_equiv": 13.2,
        ...        "ll_concentrated": 453.361, "val_mae": float("nan"), "unit": "kJ/mol", "speedup": 4.0,
        ...        "dll_pct": 0.0, "mae_ratio": float("nan")}
        >>> print(format_table([row]).splitlines()[2])
        WATER O1             TL   1.50   12   13   453.361   -   kJ/mol   4.00   +0.000   -
    """
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
    """Short untimed fits so one-off start-up costs (lazy imports, allocator) don't land on the first method.

    Each trainer is fitted once on at most 200 points with max_iter=2 (for TL also the sources').

    Args:
        trainers: method name -> factory seed -> trainer dataclass, as for compare_methods.
        train: the training set (its first 200 points are used).
        prop: the property to fit.

    Example:
        >>> import torch
        >>> from tlgp_torch import DirectTrainer
        >>> from tlgp_torch.data import AtomDataset
        >>> x = torch.rand(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> data = AtomDataset(x=x, y=0.01 * x.sum(-1, keepdim=True), property_names=["iqa"])
        >>> warm_up({"DL": lambda seed: DirectTrainer(restarts=1, seed=seed, device="cpu")}, data, "iqa")
    """
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
