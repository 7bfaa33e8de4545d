"""Tests for the `tlgp` command line, run in-process on WATER O1 with tiny settings."""

import contextlib
import io
import json
import math

import pandas as pd
import pytest

from tlgp_torch.cli.main import main
from tlgp_torch.io.checkpoint import load_checkpoint
from tlgp_torch.io.ferebus_model import read_ferebus_model
from tlgp_torch.io.ichor_csv import read_ichor_csv
from tlgp_torch.training.transfer import TransferTrainer
from tlgp_torch.units import HARTREE_TO_KJMOL

TINY = """
[train]
method = "tl"
seed = 0
device = "cpu"
[train.stop]
max_iter = 30
[train.dl]
restarts = 2
[train.tl]
n_sources = 2
source_restarts = 1
source_size = 0.5
"""


def water_config(folder, data_dir, properties=("iqa",), alf=True):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "water.toml"
    props = ", ".join(f'"{p}"' for p in properties)
    path.write_text(f'[data]\ndir = "{data_dir}"\nsystem = "WATER"\natoms = ["O1"]\nproperties = [{props}]\n'
                    + ('alf = { O1 = [1, 2, 3] }\n' if alf else "") + TINY)
    return path


@pytest.fixture(scope="module")
def trained(fflux_dir, tmp_path_factory):
    """One `tlgp train` run: (config, output folder, stdout of the run)."""
    root = tmp_path_factory.mktemp("cli")
    config = water_config(root, fflux_dir)
    out = root / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["train", str(config), "--out", str(out)])
    assert rc == 0, buf.getvalue()
    return config, out, buf.getvalue()


def test_train_writes_checkpoint_results_and_model(trained, fflux_dir):
    _, out, stdout = trained
    assert "WATER_iqa_O1 TL" in stdout and "kJ/mol" in stdout
    result, meta = load_checkpoint(out / "models" / "WATER_iqa_O1.pt")
    assert meta["system"] == "WATER" and meta["atom"] == "O1" and meta["property"] == "iqa" and meta["alf"] == [1, 2, 3]
    assert result.method == "TL" and result.n_points == 59
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns) == ["system", "atom", "property", "method", "wall_s", "n_full_evals",
                                   "ll_concentrated", "ll_marginal", "val_mae", "val_rmse", "val_max", "unit"]
    row = table.iloc[0]
    assert len(table) == 1 and (row.system, row.atom, row.property, row.method, row.unit) == (
        "WATER", "O1", "iqa", "TL", "kJ/mol")
    assert row.ll_concentrated == pytest.approx(result.ll_concentrated) and 0 < row.val_mae < row.val_max
    val = read_ichor_csv(fflux_dir / "WATER_O1_VALIDATION_SET.csv", ["iqa"])
    mae = float((result.predict(val.x) - val.property("iqa")).abs().mean()) * HARTREE_TO_KJMOL
    assert row.val_mae == pytest.approx(mae, rel=1e-9)


def test_ferebus_model_predicts_like_checkpoint(trained, fflux_dir):
    _, out, _ = trained
    model = read_ferebus_model(out / "ferebus" / "WATER_iqa_O1.model")
    result, _ = load_checkpoint(out / "models" / "WATER_iqa_O1.pt")
    assert (model.system, model.atom, model.property, model.alf, model.n_atoms) == ("WATER", "O1", "iqa", (1, 2, 3), 3)
    x = read_ichor_csv(fflux_dir / "WATER_O1_VALIDATION_SET.csv").x
    ref = result.predict(x)
    assert float(((model.predict(x) - ref).abs() / ref.abs()).max()) < 1e-10


def test_resume_skips_finished_models(trained, capsys):
    config, out, _ = trained
    ckpt = out / "models" / "WATER_iqa_O1.pt"
    before = ckpt.stat().st_mtime_ns
    assert main(["train", str(config), "--out", str(out)]) == 0
    assert "skip WATER_iqa_O1" in capsys.readouterr().out
    assert ckpt.stat().st_mtime_ns == before and len(pd.read_csv(out / "results.csv")) == 1


def test_predict_command(trained, fflux_dir, tmp_path, capsys):
    _, out, _ = trained
    preds = tmp_path / "preds.csv"
    rc = main(["predict", str(out / "models" / "WATER_iqa_O1.pt"), str(fflux_dir / "WATER_O1_VALIDATION_SET.csv"),
               "--out", str(preds)])
    stdout = capsys.readouterr().out
    assert rc == 0 and "MAE" in stdout and "kJ/mol" in stdout
    table = pd.read_csv(preds)
    assert list(table.columns) == ["index", "prediction", "truth", "error"] and len(table) == 500
    assert (table.error - (table.prediction - table.truth)).abs().max() < 1e-12
    val_mae = pd.read_csv(out / "results.csv").val_mae[0]
    assert table.error.abs().mean() * HARTREE_TO_KJMOL == pytest.approx(val_mae, rel=1e-6)


def test_predict_without_property_column(trained, tmp_path, capsys):
    _, out, _ = trained
    data = tmp_path / "points.csv"
    data.write_text("f1,f2,f3\n1.83,1.85,1.78\n1.80,1.90,1.80\n")
    assert main(["predict", str(out / "models" / "WATER_iqa_O1.pt"), str(data), "--out", str(tmp_path / "p.csv")]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table.columns) == ["index", "prediction"] and table.prediction.between(-76, -75).all()


def test_train_without_alf_skips_model_export(fflux_dir, tmp_path, capsys):
    config = water_config(tmp_path, fflux_dir, properties=("q00",), alf=False)
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--method", "dl"]) == 0
    captured = capsys.readouterr()
    assert "no ALF for O1" in captured.err and "no validation metrics" not in captured.err
    assert not (tmp_path / "run" / "ferebus").exists()
    row = pd.read_csv(tmp_path / "run" / "results.csv").iloc[0]
    assert row.method == "DL" and row.unit == "e" and math.isnan(row.val_mae)  # q00 not in the validation set


def test_interrupt_keeps_finished_models(fflux_dir, tmp_path, monkeypatch, capsys):
    config = water_config(tmp_path, fflux_dir, properties=("iqa", "q00"))
    fit_many, calls = TransferTrainer.fit_many, []

    def interrupted_fit_many(self, tasks):
        calls.append(tasks)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fit_many(self, tasks)

    monkeypatch.setattr(TransferTrainer, "fit_many", interrupted_fit_many)
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--batch-size", "1"]) == 130
    assert "again to resume" in capsys.readouterr().err
    assert (tmp_path / "run" / "models" / "WATER_iqa_O1.pt").is_file()
    assert not (tmp_path / "run" / "models" / "WATER_q00_O1.pt").exists()


def test_killed_run_resumes_without_retraining(fflux_dir, tmp_path):
    """SIGKILL a real `tlgp train` of 26 WATER O1 models mid-run; the rerun trains only what is missing."""
    import os
    import signal
    import subprocess
    import sys
    import time
    props = [c for c in read_ichor_csv(fflux_dir / "WATER_O1_TRAINING_SET.csv").property_names]
    config = water_config(tmp_path, fflux_dir, properties=props)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tlgp_torch.cli", "train", str(config), "--out", str(out), "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "models").glob("*.pt"))) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "models").glob("*.pt")}
    assert 4 <= len(before) < len(props), "kill came too late to test resuming"
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (out / "models").glob("*.pt")}
    assert len(after) == len(props)
    assert all(after[name] == t for name, t in before.items())  # finished models were not trained again
    assert done.stdout.count("skip ") + done.stderr.count("skip ") == len(before)
    table = pd.read_csv(out / "results.csv")
    assert len(table) == len(props) and table.property.is_unique
    for name in after:
        load_checkpoint(out / "models" / name)  # every checkpoint is complete


def test_compare_command(fflux_dir, tmp_path, capsys):
    config = water_config(tmp_path, fflux_dir)
    assert main(["compare", str(config), "--out", str(tmp_path / "cmp")]) == 0
    stdout = capsys.readouterr().out
    assert "speed-up" in stdout and "Δll %" in stdout
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert list(table.method) == ["DL", "TL"] and table.speedup[1] > 0 and table.speedup[0] == 1.0
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert len(doc["runs"]) == 2 and doc["summary"][0]["speedup"] == 1.0


def test_bad_config_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\nsystem = "WATER"\natoms = ["O1"]\nproperties = ["iqa"]\n[train.dl]\nrestart = 2\n')
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tlgp: error:") and "unknown key 'restart' in [train.dl]" in err and "Traceback" not in err


def test_missing_data_exits_2(fflux_dir, tmp_path, capsys):
    config = water_config(tmp_path, fflux_dir)
    assert main(["train", str(config), "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "WATER_O1_TRAINING_SET.csv" in err and "--data-dir" in err and not (tmp_path / "o").exists()


@pytest.mark.numerics
def test_export_command_writes_an_fflux_folder(fflux_dir, tmp_path, capsys):
    """Train all three water atoms, export: .model files FFLUX reads, a potential equal to the checkpoints."""
    import torch

    from tlgp_torch.export.saving import load_potential
    from tlgp_torch.features import alf_features
    from tlgp_torch.models.posterior import fflux_predict
    from tlgp_torch.units import ANGSTROM_TO_BOHR, HARTREE_TO_EV

    config = tmp_path / "water3.toml"
    config.write_text(f'[data]\ndir = "{fflux_dir}"\nsystem = "WATER"\natoms = ["O1", "H2", "H3"]\n'
                      'properties = ["iqa", "q00"]\nalf = { O1 = [1, 2, 3], H2 = [2, 1, 3], H3 = [3, 1, 2] }\n'
                      + TINY.replace("max_iter = 30", "max_iter = 10"))
    out = tmp_path / "run"
    assert main(["export", str(config), "--out", str(out)]) == 2
    assert "no trained model" in capsys.readouterr().err
    assert main(["train", str(config), "--out", str(out)]) == 0
    assert main(["export", str(config), "--out", str(out)]) == 0
    folder = out / "export" / "WATER"
    assert sorted(p.name for p in folder.glob("*.model")) == sorted(
        f"WATER_{p}_{a}.model" for a in ("O1", "H2", "H3") for p in ("iqa", "q00"))
    text = (folder / "WATER_iqa_H2.model").read_text()
    assert "ALF 2 1 3" in text and "prefactor 1.0" in text and text.rstrip().endswith("# end")
    module, meta = load_potential(folder / "WATER.pt2")
    assert meta["atoms"] == ["O1", "H2", "H3"] and meta["properties"] == ["iqa", "q00"]
    pos = torch.tensor([[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]], dtype=torch.float64)
    energy, energies, charges = module(pos)
    x = alf_features(pos[0] * ANGSTROM_TO_BOHR, torch.tensor([[0, 1, 2], [1, 0, 2], [2, 0, 1]]))
    for a, atom in enumerate(("O1", "H2", "H3")):
        iqa, _ = load_checkpoint(out / "models" / f"WATER_iqa_{atom}.pt")
        q00, _ = load_checkpoint(out / "models" / f"WATER_q00_{atom}.pt")
        # the potential computes features, kernel values and the sum of w_i k_i in its own program: they may differ
        # by N eps sum_i |w_i k_i| for the sum's order plus as much again for each k_i's own rounding (x4 covers
        # both; large weights cancel to values of ~1, so rel=1e-10 held on one CPU only)
        for res, got, unit in ((iqa, energies[0, a], HARTREE_TO_EV), (q00, charges[0, a], 1.0)):
            xa = x[a:a + 1]
            bound = res.n_points * torch.finfo(torch.float64).eps * float(
                fflux_predict(xa, res.x_train, res.weights.abs(), res.theta, 0.0, res.cyclic)[0])
            assert abs(float(got) - float(res.predict(xa)[0]) * unit) <= 4 * bound * unit
    assert main(["export", str(config), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_long_fits_log_progress(fflux_dir, tmp_path, monkeypatch, capsys):
    """A fit longer than PROGRESS_EVERY_S prints progress lines (here: every iteration)."""
    monkeypatch.setattr("tlgp_torch.training.settings.PROGRESS_EVERY_S", 0.0)
    config = water_config(tmp_path, fflux_dir)
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "sources: iteration 1, " in err and "relaxation: iteration 1, " in err
    assert "member(s) still optimising" in err
