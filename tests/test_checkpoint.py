"""Tests for model checkpoints (save / load round trip)."""

import dataclasses

import pytest
import torch

from tlgp_torch.io.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.training.direct import DirectTrainer
from tlgp_torch.training.result import TrainResult


@pytest.fixture(scope="module")
def result():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(24, 3, generator=gen, dtype=torch.float64) * 3
    y = torch.sin(x).sum(1)
    trainer = DirectTrainer(restarts=2, stop=StoppingRule(max_iter=20), device="cpu", seed=0)
    return trainer.fit((x, y, torch.tensor([False, False, True])), "iqa")


def test_round_trip(result, tmp_path):
    path = save_checkpoint(result, tmp_path / "m" / "X_iqa_C1.pt", system="X", atom="C1", alf=[1, 2, 3])
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["X_iqa_C1.pt"]  # no temp files left
    back, meta = load_checkpoint(path)
    assert meta == {"system": "X", "atom": "C1", "alf": [1, 2, 3]}
    for f in dataclasses.fields(TrainResult):
        a, b = getattr(result, f.name), getattr(back, f.name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, f.name
    assert torch.equal(back.weights, result.weights)
    x_new = torch.rand(10, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    assert torch.equal(back.predict(x_new), result.predict(x_new))
    assert torch.load(path, weights_only=True)["format"] == FORMAT


def test_load_rejects_other_files(tmp_path):
    torch.save({"format": "something/9"}, tmp_path / "a.pt")
    (tmp_path / "b.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a tlgp_torch checkpoint"):
        load_checkpoint(tmp_path / "a.pt")
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(tmp_path / "b.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
