"""The iterative relaxation path (gpytorch CG + Lanczos) and the memory rule that switches to it."""
import logging

import pytest
import torch

from tlgp_torch.data import read_ichor_csv
from tlgp_torch.predict import fflux_weights
from tlgp_torch.training import TransferTrainer
from tlgp_torch.training.iterative import IterativeSettings, choose_relax_path, exact_bytes


def test_path_choice_from_memory(caplog):
    cpu = torch.device("cpu")
    assert exact_bytes(1000) == 4 * 8 * 10**6
    assert exact_bytes(10000) == 1.25 * 8 * 10**8  # the lean path from LEAN_MIN_N points
    assert choose_relax_path("auto", 100, cpu, 0.5) == "exact"
    with caplog.at_level(logging.WARNING):
        assert choose_relax_path("auto", 10**7, cpu, 0.5) == "iterative"  # 3.2 PB of n x n matrices
    assert "iterative" in caplog.text and "relax_path='exact'" in caplog.text
    import tlgp_torch.keops_kernel as kk
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.MonkeyPatch.context() as mp:
        mp.setattr(kk, "keops_available", lambda: False)
        choose_relax_path("auto", 10**7, cpu, 0.5)
    assert "tlgp_torch[keops]" in caplog.text  # the dense iterative path is no memory rescue: say how to get KeOps
    assert choose_relax_path("exact", 10**7, cpu, 0.5) == "exact"        # the override wins
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert choose_relax_path("auto", 5000, cpu, 0.5) == "exact"      # 0.25 GB: the lean exact path, logged
    assert "lean" in caplog.text
    with pytest.raises(ValueError, match="relax_path"):
        choose_relax_path("cg", 10, cpu, 0.5)


@pytest.fixture(scope="module")
def water(fflux_dir):
    return (read_ichor_csv(fflux_dir / "WATER_O1_TRAINING_SET.csv", ["iqa"]),
            read_ichor_csv(fflux_dir / "WATER_O1_VALIDATION_SET.csv", ["iqa"]))


def test_iterative_relaxation_gives_a_consistent_model(water, monkeypatch):
    """Auto-switched (exact path over budget) iterative TL: reproducible, weights = the Cholesky weights of its
    own hyperparameters, validation error within 5x of the exact path's."""
    train, val = water
    monkeypatch.setattr("tlgp_torch.training.iterative.exact_bytes", lambda n, members=1, itemsize=8: 2**60)
    trainer = TransferTrainer(seed=0, source_size=0.5, iterative=IterativeSettings(steps=20))
    res = trainer.fit(train, "iqa")
    again = trainer.fit(train, "iqa")
    exact = TransferTrainer(seed=0, source_size=0.5, relax_path="exact").fit(train, "iqa")
    assert res.info["relax_path"] == "iterative" and exact.info["relax_path"] == "exact"
    assert torch.equal(res.theta, again.theta) and res.ll_concentrated == again.ll_concentrated
    chol = fflux_weights(res.x_train, res.y_train, res.theta, res.mean, res.nugget, res.cyclic)
    assert float((res.weights - chol).norm() / chol.norm()) < 1e-4
    mae = float((res.predict(val.x) - val.property("iqa")).abs().mean())
    mae_exact = float((exact.predict(val.x) - val.property("iqa")).abs().mean())
    # measured: 7.2e-5 vs 1.6e-5 Ha. gpytorch's CG/Lanczos estimates are poor on these nearly noise-free kernels
    # (noise floor 1e-6 instead of the exact path's 1e-10 nugget), so the iterative model is ~4x worse
    assert mae < 5 * mae_exact


def test_keops_setting_is_checked(monkeypatch):
    """keops must be auto/on/off; 'on' without pykeops is an ImportError naming the extra, 'auto' falls back."""
    with pytest.raises(ValueError, match="keops must be one of"):
        IterativeSettings(keops="yes")
    import tlgp_torch.keops_kernel as kk
    monkeypatch.setattr(kk, "keops_available", lambda: False)
    with pytest.raises(ImportError, match=r"tlgp_torch\[keops\]"):
        IterativeSettings(keops="on").use_keops()
    assert IterativeSettings(keops="auto").use_keops() is False
    assert IterativeSettings(keops="off").use_keops() is False
