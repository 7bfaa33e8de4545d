"""Known cases where a single TL relaxation followed its seed into the worse basin (issue 17): TL with the
defaults must now reach DL's (R=8) basin. Basins are told apart by the final log-likelihood: the two WATER O1 q00
basins are 2.6 % apart (373.50 and 383.49), ETHANOL H4's 0.35 %, so a 0.1 % tolerance separates them while leaving
room for where the stopping rule (rtol 1e-6 per iteration) ends inside one basin (ETHANOL H4's DL optimum is
17666.63 with the float64 CPU path; issue 17 quoted 17666.73)."""
from __future__ import annotations

import importlib.util
import pathlib

import pytest
import torch

from tlgp_torch.io.ichor_csv import read_ichor_csv
from tlgp_torch.training.direct import DirectTrainer
from tlgp_torch.training.relaxation import pick_distinct
from tlgp_torch.training.transfer import TransferTrainer

LL_TOL = 1e-3  # relative: same basin (see the module docstring)
GFN2 = pathlib.Path(__file__).resolve().parents[1] / "data" / "gfn2"


@pytest.fixture(scope="module")
def water_q00(fflux_dir):
    train = read_ichor_csv(fflux_dir / "WATER_O1_TRAINING_SET.csv", ["q00"])
    return train, DirectTrainer(restarts=8, seed=0).fit(train, "q00")


@pytest.mark.parametrize("source_size", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_water_o1_q00_reaches_dl_basin(water_q00, source_size, seed):
    """Every source of WATER O1 q00 (m = 18..41 points) lands in the longer-lengthscale basin (ll 373.50);
    a single relaxation stayed there for m = 0.3, 0.5 and 0.7 N."""
    train, dl = water_q00
    assert dl.ll > 383.0  # DL's better basin (383.49); 373.50 is the other one
    # fallback_below_n=0: the relaxation's own result (N=59 would otherwise also be fitted by DL)
    tl = TransferTrainer(source_size=source_size, seed=seed, fallback_below_n=0).fit(train, "q00")
    assert tl.ll >= dl.ll - LL_TOL * abs(dl.ll)


def test_water_o1_q00_single_relaxation_is_the_known_failure(water_q00):
    """The same case with one relaxation from the transferred seed only (the old default) ends in the worse
    basin: the test above is not vacuous."""
    train, dl = water_q00
    old = TransferTrainer(relax_seeds=1, seed_shifts=(), n_sources=1, fallback_ratio=None, fallback_below_n=0,
                          seed=0).fit(train, "q00")
    assert old.ll < dl.ll - 0.01 * abs(dl.ll)


def test_water_o1_q44s_small_set_is_also_fitted_by_dl(fflux_dir):
    """WATER O1 q44s (N=59): the sources beat their mean (no ratio fallback), yet the relaxation ends 2.3 % below
    DL's ll. Below fallback_below_n (100) points the task is fitted by DL as well and the better fit kept."""
    train = read_ichor_csv(fflux_dir / "WATER_O1_TRAINING_SET.csv", ["q44s"])
    dl = DirectTrainer(restarts=8, seed=0).fit(train, "q44s")
    tl = TransferTrainer(seed=0).fit(train, "q44s")
    relax_only = TransferTrainer(seed=0, fallback_below_n=0).fit(train, "q44s")
    assert relax_only.ll < dl.ll - 0.01 * abs(dl.ll)               # the known miss, so this test is not vacuous
    assert "fallback_below_n" in tl.info["fallback"]
    assert tl.ll >= dl.ll - LL_TOL * abs(dl.ll)


def _benchmark_module():
    """experiments/tl_robustness.py, imported by path."""
    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "tl_robustness.py"
    spec = importlib.util.spec_from_file_location("tl_robustness_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _synthetic_problem(d, decades, noise, draw):
    """The robustness benchmark's synthetic GP draw (experiments/tl_robustness.py), N=400."""
    return _benchmark_module().synthetic(d, decades, noise, draw)[0]


def test_benchmark_summary_counts_and_splits_the_speed_up_by_regime():
    """The summary (also printed by --summarise models.csv) counts models within 0.1 % of DL's ll and 5 % of its
    MAE, names the worst, and gives the speed-up over all models, slow DL batches, fallback models and the rest."""
    def row(name, dll, mae_tl, t_dl, t_tl, fallback=""):
        return {"model": name, "dll_pct": dll, "mae_dl": 1.0, "mae_tl": mae_tl, "t_dl": t_dl, "t_tl": t_tl,
                "speedup": t_dl / t_tl, "fallback": fallback}
    rows = [row("A", 0.0, 1.0, 80.0, 10.0), row("B", -0.2, 1.1, 40.0, 10.0), row("C", +1.0, 0.9, 0.8, 1.0, "fallback"),
            row("D", -0.05, 1.04, 0.6, 1.5, "relaxation"), row("E", 0.0, 1.0, 2.0, 0.5)]
    text = _benchmark_module().summarise(rows, " [tag]")
    first, second = text.split("\n")
    assert "on 4/5 models" in first and "within 5 % on 4/5" in first and "worst dll -0.200 % (B)" in first
    assert first.endswith("speed-up median 4.0x, minimum 0.4x [tag]")
    assert "fallback (sources no better than the mean, or N < fallback_below_n) on 2/5 models, its fit kept on 1" \
        in second
    assert "DL takes >= 10 s: median 6.0x, minimum 4.0x over 2" in second
    assert "ran the fallback: median 0.6x, minimum 0.4x over 2" in second
    assert "on the others: median 4.0x, minimum 4.0x over 3" in second


def test_uninformative_sources_fall_back_to_dl():
    """D=32, 400 points: the best source (120 points) predicts its hold-out points exactly as well as their mean
    does (holdout MAE ratio 1.000), every seed relaxes to the ll-2.3 plateau, and DL finds 130.9 from 1 of its 8
    starts. TL now fits such a task by DL too and keeps the better; without the fallback it stays on the plateau."""
    x, y = _synthetic_problem(32, 2.0, 0.01, 0)
    dl = DirectTrainer(restarts=8, seed=0).fit((x, y))
    tl = TransferTrainer(seed=0).fit((x, y))
    plain = TransferTrainer(seed=0, fallback_ratio=None).fit((x, y))
    assert dl.ll > 100.0 and plain.ll < 0.5 * dl.ll          # the known failure: TL alone stays on the plateau
    assert tl.info["source_mae_ratio"] >= 0.9 and "fallback" in tl.info and tl.info["kept"] == "fallback"
    assert tl.ll >= dl.ll - LL_TOL * abs(dl.ll) and tl.method == "TL"
    assert tl.n_full_evals > plain.n_full_evals


def test_informative_sources_do_not_fall_back(fflux_dir):
    """On a real FFLUX set the sources predict far better than the mean: no fallback, no extra cost."""
    train = read_ichor_csv(fflux_dir / "METHANOL_C1_TRAINING_SET.csv", ["iqa"])
    tl = TransferTrainer(seed=0).fit(train, "iqa")
    assert tl.info["source_mae_ratio"] < 0.5 and "fallback" not in tl.info and "fallback" not in tl.stage_times


def test_pick_distinct():
    """Best ll first, near-duplicates (within tol in every log parameter) and infeasible seeds skipped."""
    ll = torch.tensor([1.0, 3.0, 2.9, -torch.inf, 2.0], dtype=torch.float64)
    u = torch.tensor([[0.0], [1.0], [1.1], [5.0], [3.0]], dtype=torch.float64)
    assert pick_distinct(ll, u, 2) == [1, 4]
    assert pick_distinct(ll, u, 5) == [1, 4, 0]
    assert pick_distinct(torch.full((2,), -torch.inf, dtype=torch.float64), u[:2], 2) == [0]


@pytest.mark.slow
def test_ethanol_h4_energy_reaches_dl_basin():
    """ETHANOL H4 energy (GFN2, N=2000): DL R=8 reaches 17666.63 (2 of its 8 starts); the other basin, at 17605.49,
    has every lengthscale about 7x shorter. Both sources and every seed screened from them lie in that worse basin;
    the candidate with every log theta - 4 (seed_shifts) screens best and relaxes to DL's. Without it (the previous
    default seed_shifts=(1.0,)) TL ends at 17605.49, so the test is not vacuous."""
    path = GFN2 / "ethanol" / "ETHANOL_H4_TRAINING_SET.csv"
    if not path.is_file():
        pytest.skip(f"GFN2 ethanol data not found at {path} (generate it, or link data/ to a folder holding it)")
    train = read_ichor_csv(path, ["energy"])
    dl = DirectTrainer(restarts=8, seed=0).fit(train, "energy")
    assert dl.ll > 17650.0  # DL's better basin (17666.63); 17605.49 is the other one
    tl = TransferTrainer(seed=0).fit(train, "energy")
    assert tl.ll >= dl.ll - LL_TOL * abs(dl.ll)
    old = TransferTrainer(seed=0, seed_shifts=(1.0,)).fit(train, "energy")
    assert old.ll < dl.ll - LL_TOL * abs(dl.ll)
