"""AnisotropicGP (gpytorch ExactGP) predicts exactly as the FEREBUS reference weights say."""
import pytest
import torch

from tlgp_torch.io.ferebus_model import read_ferebus_model
from tlgp_torch.io.ichor_csv import read_validation_set
from tlgp_torch.models.anisotropic_gp import AnisotropicGP
from tlgp_torch.models.posterior import fflux_predict, fflux_weights


@pytest.mark.parametrize("name", ["METHANOL_iqa_C1.marginal.model", "METHANOL_iqa_C1.concentrated.model",
                                  "WATER_iqa_O1.concentrated.model"])
def test_reference_model_through_gpytorch(fflux_dir, name):
    m = read_ferebus_model(fflux_dir / "reference" / name)
    system, _, atom = name.split(".")[0].split("_")
    val = read_validation_set(fflux_dir / f"{system}_{atom}_VALIDATION_SET.csv", properties=["iqa"])
    expect = m.predict(val.x)  # the file's own weights
    ours = fflux_predict(val.x, m.x, fflux_weights(m.x, m.y, m.theta, m.mean, m.nugget), m.theta, m.mean)
    torch.testing.assert_close(ours, expect, rtol=0, atol=2e-7)  # weights printed to 16 digits, |w| up to 1e5
    for convention in ("fflux", "gpytorch"):
        gp = AnisotropicGP.from_fflux(m.x, m.y, m.theta, m.mean, m.nugget, convention=convention, sigma2=3.7e-3)
        torch.testing.assert_close(gp.predict(val.x), ours, rtol=0, atol=1e-8)
        back = gp.fflux_parameters()
        torch.testing.assert_close(back["theta"], m.theta, rtol=1e-12, atol=0)
        assert back["mean"] == pytest.approx(m.mean, rel=1e-14)
        assert back["nugget"] == pytest.approx(m.nugget, rel=1e-6)


def test_bad_model_arguments():
    x = torch.rand(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="convention"):
        AnisotropicGP(x, x[:, 0], convention="sk")
    with pytest.raises(ValueError, match="train_x"):
        AnisotropicGP(x, x, convention="fflux")
