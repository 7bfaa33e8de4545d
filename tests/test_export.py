"""Tests for FEREBUS .model export: FFLUX's prediction formula reproduces the trained model."""

import pytest
import torch

from tlgp_torch.export.ferebus import to_ferebus_model
from tlgp_torch.io.ferebus_model import read_ferebus_model, write_ferebus_model
from tlgp_torch.io.ichor_csv import read_ichor_csv
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.training.direct import DirectTrainer


def _relative(a, b):
    return float(((a - b).abs() / b.abs()).max())


def test_water_export_predicts_like_result(fflux_dir, tmp_path):
    train = read_ichor_csv(fflux_dir / "WATER_O1_TRAINING_SET.csv", ["iqa"])
    val = read_ichor_csv(fflux_dir / "WATER_O1_VALIDATION_SET.csv", ["iqa"])
    result = DirectTrainer(restarts=2, stop=StoppingRule(max_iter=30), device="cpu").fit(train, "iqa")
    model = to_ferebus_model(result, "WATER", "O1", "iqa", (1, 2, 3), 3)
    assert model.kernel_type == "rbf-cyclic" and model.nugget == result.nugget and model.mean == result.mean
    assert model.likelihood == result.ll_concentrated and torch.equal(model.weights, result.weights)
    assert _relative(model.predict(val.x), result.predict(val.x)) < 1e-10
    back = read_ferebus_model(write_ferebus_model(model, tmp_path / "WATER_iqa_O1.model"))
    assert back.prefactor == 1.0 and back.alf == (1, 2, 3) and back.n_atoms == 3
    assert _relative(back.predict(val.x), result.predict(val.x)) < 1e-10


def test_plain_rbf_without_cyclic_mask():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(20, 3, generator=gen, dtype=torch.float64)
    result = DirectTrainer(restarts=1, likelihood="marginal", stop=StoppingRule(max_iter=10),
                           device="cpu").fit((x, x.sum(1) ** 2), "q00")
    model = to_ferebus_model(result, "X", "C1", "q00", (1, 2, 3), 3)
    assert model.kernel_type == "rbf" and model.likelihood == result.ll_marginal and model.units_y == "e"
    assert _relative(model.predict(x + 0.01), result.predict(x + 0.01)) < 1e-10


def test_nonstandard_cyclic_mask_rejected():
    x = torch.rand(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = DirectTrainer(restarts=1, stop=StoppingRule(max_iter=5), device="cpu").fit(
        (x, x.sum(1), torch.tensor([True, False, False])))
    with pytest.raises(ValueError, match="rbf-cyclic"):
        to_ferebus_model(result, "X", "C1", "iqa", (1, 2, 3), 3)
