"""runtime.allocator: glibc malloc thresholds raised once per process while trainers run on the CPU."""
import pytest
import torch

from tlgp_torch import DirectTrainer, TransferTrainer
from tlgp_torch.runtime import allocator
from tlgp_torch.training import FitSettings


class FakeLibc:
    """Records mallopt / malloc_trim calls instead of changing the test process's allocator."""

    def __init__(self, accept: bool = True):
        self.calls = []
        self.accept = accept

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1 if self.accept else 0

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def libc(monkeypatch):
    fake = FakeLibc()
    monkeypatch.setattr(allocator, "_libc", fake)
    monkeypatch.setattr(allocator, "_state", {"tuned": None, "depth": 0})
    for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(key, raising=False)
    return fake


TUNE = [("mallopt", -3, 1 << 30), ("mallopt", -1, 1 << 30)]


def test_tuned_block_raises_thresholds_once_and_trims_at_the_outermost_exit(libc):
    with allocator.cpu_allocator("tuned", "cpu") as outer:
        with allocator.cpu_allocator("tuned", torch.device("cpu")) as inner:
            assert libc.calls == TUNE            # raised once, not again by the nested block
        assert libc.calls == TUNE                # the inner exit does not trim
    assert outer and inner
    assert libc.calls == TUNE + [("malloc_trim", 0)]
    with allocator.cpu_allocator("tuned", "cpu"):
        pass
    assert libc.calls == TUNE + [("malloc_trim", 0)] * 2   # a later fit trims again, tunes no more


@pytest.mark.parametrize("mode, device", [("system", "cpu"), ("tuned", "cuda"), ("tuned", "cuda:1")])
def test_system_mode_and_gpu_devices_leave_malloc_alone(libc, mode, device):
    with allocator.cpu_allocator(mode, device) as tuned:
        pass
    assert tuned is False and libc.calls == []


def test_user_environment_settings_are_kept(libc, monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    with allocator.cpu_allocator("tuned", "cpu") as tuned:
        pass
    assert tuned is False and libc.calls == []


def test_refused_mallopt_reports_not_tuned(monkeypatch):
    fake = FakeLibc(accept=False)
    monkeypatch.setattr(allocator, "_libc", fake)
    monkeypatch.setattr(allocator, "_state", {"tuned": None, "depth": 0})
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with allocator.cpu_allocator("tuned", "cpu") as tuned:
        pass
    assert tuned is False and ("malloc_trim", 0) not in fake.calls


def test_bad_mode_names_the_field():
    with pytest.raises(ValueError, match="cpu_allocator must be one of"):
        FitSettings(cpu_allocator="jemalloc")
    with pytest.raises(ValueError, match="cpu_allocator must be one of"):
        with allocator.cpu_allocator("fast", "cpu"):
            pass


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(120, 3, dtype=torch.float64, generator=g)
    return x, torch.sin(3 * x).sum(-1)


@pytest.mark.parametrize("trainer", [TransferTrainer(seed=0, device="cpu"), DirectTrainer(restarts=2, device="cpu")])
def test_trainers_tune_on_the_cpu_and_trim_once_per_fit(libc, trainer):
    trainer.fit(_data())
    assert libc.calls == TUNE + [("malloc_trim", 0)]


def test_trainers_with_system_mode_do_not_touch_malloc(libc):
    TransferTrainer(seed=0, device="cpu", cpu_allocator="system").fit(_data())
    assert libc.calls == []


def test_user_model_fit_trims_once(libc):
    import gpytorch

    x, y = _data()

    class GP(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=3))

        def forward(self, z):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))

    TransferTrainer(seed=0, device="cpu").fit(GP().double())
    assert libc.calls == TUNE + [("malloc_trim", 0)]
