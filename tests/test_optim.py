"""Batched L-BFGS / Adam: same optimum as torch.optim.LBFGS; members of very different curvature converge alone."""
import pytest
import torch

from tlgp_torch.optim.adam import batched_adam
from tlgp_torch.optim.lbfgs import batched_lbfgs
from tlgp_torch.optim.stopping import StoppingRule

TIGHT = StoppingRule(rtol=0.0, atol=1e-13, max_iter=1000, patience=3)


def rosenbrock(scales):
    def fun(x, members):
        s = scales[members]
        a, b = x[:, 0], x[:, 1]
        f = s * ((1 - a) ** 2 + 100 * (b - a * a) ** 2)
        g = torch.stack([s * (-2 * (1 - a) - 400 * a * (b - a * a)), s * 200 * (b - a * a)], 1)
        return f, g
    return fun


def quadratic(curv, centre):
    """Members: f = 1/2 sum_i c_i (x_i - z_i)^2 with curvatures spanning many decades."""
    def fun(x, members):
        c, z = curv[members], centre[members]
        return 0.5 * (c * (x - z) ** 2).sum(-1), c * (x - z)
    return fun


def test_single_problem_same_optimum_as_torch_lbfgs():
    x0 = torch.tensor([[-1.2, 1.0]], dtype=torch.float64)
    res = batched_lbfgs(rosenbrock(torch.tensor([1.0], dtype=torch.float64)), x0, TIGHT)
    p = x0[0].clone().requires_grad_(True)
    opt = torch.optim.LBFGS([p], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2
        loss.backward()
        return loss
    opt.step(closure)
    torch.testing.assert_close(res.x[0], p.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(res.x[0], torch.ones(2, dtype=torch.float64), atol=1e-6, rtol=0)
    assert res.converged.all()


def test_batch_members_converge_as_if_alone():
    """Each member of a batch with curvatures from 1e-3 to 1e5 takes exactly the path it takes alone."""
    gen = torch.Generator().manual_seed(0)
    curv = 10 ** (torch.rand(6, 5, generator=gen, dtype=torch.float64) * 8 - 3)
    centre = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    x0 = torch.zeros(6, 5, dtype=torch.float64)
    fun = quadratic(curv, centre)
    batch = batched_lbfgs(fun, x0, TIGHT)
    for i in range(6):
        alone = batched_lbfgs(quadratic(curv[i:i + 1], centre[i:i + 1]), x0[i:i + 1], TIGHT)
        torch.testing.assert_close(batch.x[i], alone.x[0], rtol=0, atol=1e-12)
        assert int(batch.n_evals[i]) == int(alone.n_evals[0])
        torch.testing.assert_close(batch.x[i], centre[i], atol=1e-5, rtol=0)


def test_rosenbrock_batch_of_scales():
    scales = torch.tensor([1.0, 10.0, 100.0, 1000.0], dtype=torch.float64)
    res = batched_lbfgs(rosenbrock(scales), torch.tensor([[-1.2, 1.0]] * 4, dtype=torch.float64), TIGHT)
    torch.testing.assert_close(res.x, torch.ones(4, 2, dtype=torch.float64), atol=1e-5, rtol=0)
    assert res.reason == ["converged"] * 4


def test_converged_members_stop_costing_work():
    """An easy member stops early; only the hard one keeps being evaluated."""
    calls = []

    def fun(x, members):
        calls.append(members.tolist())
        return rosenbrock(torch.tensor([1.0, 1.0], dtype=torch.float64))(x, members)
    x0 = torch.tensor([[1.0, 1.0 + 1e-9], [-1.2, 1.0]], dtype=torch.float64)
    res = batched_lbfgs(fun, x0, TIGHT)
    assert int(res.n_iter[0]) < 5 < int(res.n_iter[1])
    assert all(c == [1] for c in calls[-10:])


def test_bounds_are_respected():
    fun = quadratic(torch.ones(1, 2, dtype=torch.float64), torch.tensor([[3.0, -3.0]], dtype=torch.float64))
    res = batched_lbfgs(fun, torch.zeros(1, 2, dtype=torch.float64), TIGHT, lower=-1.0, upper=1.0)
    torch.testing.assert_close(res.x[0], torch.tensor([1.0, -1.0], dtype=torch.float64))


def test_coupled_parameter_held_at_a_bound_does_not_stall():
    """The optimum of a coupled quadratic lies past x0's upper bound: L-BFGS must move only the free parameters.

    A direction that the bound then cuts fails Armijo's test; before the free-parameter mask the member alternated
    failed searches and steepest-descent steps and stopped short (167 evaluations; a TL source on WATER H3 q10
    ran to max_iter this way)."""
    a = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.5], [0.0, 0.5, 2.0]], dtype=torch.float64)
    c = torch.tensor([5.0, -3.0, 1.0], dtype=torch.float64)

    def fun(x, members):
        delta = x - c
        return 0.5 * (delta @ a * delta).sum(-1), delta @ a
    upper = torch.tensor([1.0, 10.0, 10.0], dtype=torch.float64)
    res = batched_lbfgs(fun, torch.zeros(1, 3, dtype=torch.float64), StoppingRule(rtol=1e-12, max_iter=100),
                        upper=upper)
    # KKT point: x0 = 1 on its bound, (x1, x2) minimise the rest: u = x1 + 3 = 3.6 / (7/8), x2 - 1 = -u / 4
    u = 3.6 / 0.875
    torch.testing.assert_close(res.x[0], torch.tensor([1.0, u - 3.0, 1.0 - u / 4], dtype=torch.float64),
                               rtol=0, atol=1e-6)
    assert res.reason == ["converged"] and int(res.n_evals[0]) < 40


def test_infeasible_points_are_backtracked():
    """f = +inf outside x < 2 (like a failed Cholesky): the line search steps back, never returns inf."""
    def fun(x, members):
        f = (x[:, 0] - 3.0) ** 2
        return torch.where(x[:, 0] < 2.0, f, torch.full_like(f, float("inf"))), 2 * (x - 3.0)
    res = batched_lbfgs(fun, torch.zeros(1, 1, dtype=torch.float64), StoppingRule(rtol=0, atol=1e-10, max_iter=50))
    assert torch.isfinite(res.f).all() and float(res.x[0, 0]) < 2.0


def test_adam_batched_reaches_quadratic_minimum():
    curv = torch.tensor([[1.0, 4.0], [0.5, 2.0]], dtype=torch.float64)
    centre = torch.tensor([[0.3, -0.2], [-0.4, 0.1]], dtype=torch.float64)
    res = batched_adam(quadratic(curv, centre), torch.zeros(2, 2, dtype=torch.float64),
                       StoppingRule(rtol=0, atol=1e-12, max_iter=3000, patience=20), lr=0.01)
    torch.testing.assert_close(res.x, centre, atol=1e-3, rtol=0)


def test_stopping_rule_validation():
    with pytest.raises(ValueError):
        StoppingRule(max_iter=0)
    with pytest.raises(ValueError):
        StoppingRule(rtol=-1)


def test_slow_progress_stops_a_steady_creep_that_the_per_iteration_rule_misses():
    """f = 1000 - 0.005 log x creeps without end (L-BFGS doubles x, gaining ~3.5e-3 > rtol |f| = 1e-3 per
    iteration); with the window rule it stops after 10 iterations having gained < 100 rtol |f| = 0.1, without it
    it runs to max_iter. Adam on a gentle slope (gain lr * 0.05 = 5e-3 per step) likewise."""
    def creep(x, members):
        return 1000 - 0.005 * torch.log(x[:, 0]), -0.005 / x

    def slope(x, members):
        return 1000 - 0.05 * x[:, 0], torch.full_like(x, -0.05)
    x0 = torch.ones(1, 1, dtype=torch.float64)
    on, off = StoppingRule(max_iter=200), StoppingRule(max_iter=200, window=0)
    assert on.window == 10 and on.window_tol == pytest.approx(1e-4)
    res = batched_lbfgs(creep, x0, on, lower=1e-3)
    assert res.reason == ["slow progress"] and int(res.n_iter[0]) == 11 and bool(res.converged[0])
    assert batched_lbfgs(creep, x0, off, lower=1e-3).reason == ["max_iter"]
    res = batched_adam(slope, x0, on, lr=0.1)
    assert res.reason == ["slow progress"] and int(res.n_iter[0]) == 11 and bool(res.converged[0])
    assert batched_adam(slope, x0, off, lr=0.1).reason == ["max_iter"]


def test_window_tolerance_follows_rtol_unless_given():
    assert StoppingRule(rtol=1e-8).window_tol == pytest.approx(1e-6)
    assert StoppingRule(rtol=1e-8, window_rtol=1e-3).window_tol == 1e-3
    rule = StoppingRule(rtol=0, atol=1e-12)               # no relative tolerance: no slow-progress test either
    assert not bool(rule.slow_progress(torch.tensor([5.0]), torch.tensor([5.0])).any())
    with pytest.raises(ValueError, match="window"):
        StoppingRule(window=-1)
