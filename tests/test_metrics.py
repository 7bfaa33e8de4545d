"""Tests for error metrics in kJ/mol / e / au and S-curves."""

import math

import numpy as np
import pytest
import torch

from tlgp_torch.evaluation.metrics import errors, plot_s_curves, property_unit, s_curve
from tlgp_torch.units import HARTREE_TO_KJMOL


@pytest.mark.parametrize("name,scale,unit", [
    ("iqa", HARTREE_TO_KJMOL, "kJ/mol"), ("energy", HARTREE_TO_KJMOL, "kJ/mol"),
    ("e_total", HARTREE_TO_KJMOL, "kJ/mol"),
    ("q00", 1.0, "e"), ("q10", 1.0, "au"), ("q44s", 1.0, "au"),
])
def test_property_unit(name, scale, unit):
    assert property_unit(name) == (scale, unit)


def test_errors_by_hand():
    pred, true = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.5, 2.0, 1.0])  # |errors| 0.5, 0, 3
    e = errors(pred, true, "q00")
    assert e == {"mae": pytest.approx(3.5 / 3), "rmse": pytest.approx(math.sqrt(9.25 / 3)), "max": 3.0,
                 "unit": "e", "n": 3}
    k = errors(pred.numpy(), true.numpy(), "iqa")  # numpy in, Hartree -> kJ/mol
    assert k["mae"] == pytest.approx(3.5 / 3 * HARTREE_TO_KJMOL) and k["max"] == pytest.approx(3 * HARTREE_TO_KJMOL)
    assert k["unit"] == "kJ/mol"


def test_errors_shape_mismatch():
    with pytest.raises(ValueError, match="2 values but true has 3"):
        errors([1.0, 2.0], [1.0, 2.0, 3.0], "iqa")


def test_s_curve_monotone_to_100():
    gen = torch.Generator().manual_seed(0)
    pred, true = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    err, pct = s_curve(pred, true, "iqa")
    assert err.shape == pct.shape == (50,)
    assert np.all(np.diff(err) >= 0) and np.all(np.diff(pct) > 0)
    assert pct[-1] == 100.0 and pct[0] == pytest.approx(2.0)
    assert err[-1] == pytest.approx(errors(pred, true, "iqa")["max"])


def test_plot_s_curves_png(tmp_path):
    pytest.importorskip("matplotlib")
    gen = torch.Generator().manual_seed(1)
    true = torch.randn(40, generator=gen)
    curves = {"DL": s_curve(true + 1e-3 * torch.randn(40, generator=gen), true, "iqa"),
              "TL": s_curve(true, true, "iqa")}  # all-zero errors must not break the log axis
    path = plot_s_curves(curves, tmp_path / "sub" / "s.png", "kJ/mol", title="WATER O1 iqa")
    data = path.read_bytes()
    assert path == tmp_path / "sub" / "s.png" and len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
