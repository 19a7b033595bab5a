"""SDE terms in per-sample mode (``per_sample=True``): each sample has its own output times and
step grid, reads its own row of a Brownian motion in the batch layout, and gets what solving it
alone on that row gives, with the same gradients."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde

from .sde_helpers import SmallSDE

DTYPE = torch.float64
B = 3
# each sample its own span and output times; dt = 0.07 lands on none of them
T_EVAL = torch.tensor([[0.0, 0.3, 0.6, 1.0], [0.1, 0.2, 0.5, 0.7], [0.2, 0.45, 0.9, 0.95]], dtype=DTYPE)
CHANNELS = {"diagonal": 2, "scalar": 1, "additive": 3, "general": 3}


class RowOf(nde.AbstractBrownian):
    """Row ``b`` of a Brownian motion in the batch layout: the path sample ``b`` reads, with a
    batch axis of one (``keep=True``: for a tensor state ``y0[b : b + 1]``) or without (a tuple
    state's shared Brownian motion)."""

    def __init__(self, bm: nde.AbstractBrownian, b: int, keep: bool = True):
        self.bm, self.rows = bm, slice(b, b + 1) if keep else b
        self.t0, self.t1 = bm.t0, bm.t1
        self._init(bm.shape[1:] if not keep else (1, *bm.shape[1:]), bm.dtype, bm.device, bm.levy_area)

    def _point(self, t: float):
        w, a = self.bm._point(t)
        return w[self.rows], None if a is None else a[self.rows]


class Small(SmallSDE):
    """``SmallSDE`` with an additive diffusion that takes the per-sample time ``[B, 1]`` (a
    solve alone passes a 0-d time)."""

    def g(self, t, y):
        if self.noise_type == "additive":
            return self.b * (1 + t.unsqueeze(-1)) * torch.ones_like(y).unsqueeze(-1)
        return super().g(t, y)


def _y0() -> torch.Tensor:
    return torch.linspace(-0.5, 0.8, 2 * B, dtype=DTYPE).reshape(B, 2)


def _brownian(noise: str, seed: int) -> nde.BrownianInterval:
    return nde.BrownianInterval(0.0, 1.0, (B, CHANNELS[noise]), dtype=DTYPE, seed=seed, levy_area=True)


CASES = [
    ("euler", "general", "ito"),
    ("euler", "diagonal", "ito"),
    ("milstein", "scalar", "ito"),
    ("milstein", "diagonal", "stratonovich"),
    ("srk", "diagonal", "ito"),
    ("srk", "scalar", "ito"),
    ("srk", "additive", "ito"),
    ("heun", "diagonal", "stratonovich"),
    ("midpoint", "general", "stratonovich"),
    ("euler_heun", "scalar", "stratonovich"),
]


@pytest.mark.parametrize(("solver", "noise", "calculus"), CASES)
def test_a_per_sample_solve_equals_each_sample_solved_alone_on_its_row_of_the_path(solver, noise, calculus):
    sde = Small(noise, calculus)
    bm = _brownian(noise, seed=2)
    with torch.no_grad():
        sol = nde.solve(sde.term(bm), _y0(), T_EVAL, solver=solver, dt=0.07, per_sample=True)
        for b in range(B):
            alone = nde.solve(sde.term(RowOf(bm, b)), _y0()[b : b + 1], T_EVAL[b], solver=solver, dt=0.07)
            assert float((sol.ys[:, b] - alone.ys[:, 0]).abs().max()) <= 1e-12
            assert int(sol.stats.steps[b]) == alone.stats.steps
            assert float((alone.ys[-1] - alone.ys[0]).abs().max()) > 1e-2  # it moved
    assert sol.stats.steps.tolist() == [15, 9, 11]  # each sample its own grid


@pytest.mark.parametrize(
    ("solver", "noise", "calculus", "gradient"),
    [
        ("euler", "general", "ito", "backprop"),
        ("srk", "diagonal", "ito", "backprop"),
        ("milstein", "scalar", "ito", "backprop"),
        ("heun", "diagonal", "stratonovich", "backprop"),
        ("srk", "additive", "ito", "checkpoint"),
    ],
)
def test_per_sample_gradients_equal_those_of_the_samples_solved_alone(solver, noise, calculus, gradient):
    sde = Small(noise, calculus)
    bm = _brownian(noise, seed=3)
    y0 = _y0().requires_grad_(True)
    sol = nde.solve(sde.term(bm), y0, T_EVAL, solver=solver, dt=0.07, per_sample=True, gradient=gradient)
    got = torch.autograd.grad((sol.ys**2).sum() + sol.ys[-1].sin().sum(), [y0, sde.a, sde.b])
    want = [torch.zeros_like(y0), torch.zeros_like(sde.a), torch.zeros_like(sde.b)]
    for b in range(B):
        yb = _y0()[b : b + 1].requires_grad_(True)
        alone = nde.solve(sde.term(RowOf(bm, b)), yb, T_EVAL[b], solver=solver, dt=0.07)
        grads = torch.autograd.grad((alone.ys**2).sum() + alone.ys[-1].sin().sum(), [yb, sde.a, sde.b])
        want[0][b] = grads[0][0]
        want[1] += grads[1]
        want[2] += grads[2]
    for g, w in zip(got, want):
        assert torch.isfinite(g).all() and float(w.abs().max()) > 0
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12)


def test_a_per_sample_tuple_solve_equals_each_sample_alone():
    sde = Small("general", "stratonovich")
    bm = _brownian("general", seed=4)

    def f(t, y):
        out = sde.f(t, torch.cat([y[0], y[1]], -1))
        return out[..., :1], out[..., 1:]

    def g(t, y):
        out = sde.g(t, torch.cat([y[0], y[1]], -1))
        return out[..., :1, :], out[..., 1:, :]

    y0 = (_y0()[:, :1], _y0()[:, 1:])
    with torch.no_grad():
        sol = nde.solve(nde.SDETerm(f, g, "general", "stratonovich", bm), y0, T_EVAL, solver="midpoint",
                        dt=0.07, per_sample=True)  # fmt: skip
        for b in range(B):
            row = nde.SDETerm(f, g, "general", "stratonovich", RowOf(bm, b, keep=False))
            alone = nde.solve(
                row, (y0[0][b : b + 1], y0[1][b : b + 1]), T_EVAL[b], solver="midpoint", dt=0.07
            )
            for part, part_alone in zip(sol.ys, alone.ys):
                assert float((part[:, b] - part_alone[:, 0]).abs().max()) <= 1e-12


def test_on_one_time_grid_a_per_sample_solve_is_the_batch_solve_on_the_same_fresh_path():
    sde = Small("diagonal", "ito")
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=DTYPE)
    with torch.no_grad():
        torch.manual_seed(5)
        batch = nde.solve(sde.term(None), _y0(), ts, solver="srk", dt=0.1)
        torch.manual_seed(5)
        per_sample = nde.solve(sde.term(None), _y0(), ts, solver="srk", dt=0.1, per_sample=True)
    assert float((per_sample.ys - batch.ys).abs().max()) <= 1e-12
    assert per_sample.stats.steps.tolist() == [batch.stats.steps] * B


def test_per_sample_mode_refuses_what_it_cannot_do_with_the_fix():
    sde = Small("diagonal", "stratonovich")
    scalar_state = nde.SDETerm(lambda t, y: -y, lambda t, y: torch.ones(*y.shape, 2, dtype=DTYPE), "general")
    with pytest.raises(
        ValueError, match=r"general noise needs y0 of shape \(batch, ..., d\).*reshape y0 to \(3, 1\)"
    ):
        nde.solve(scalar_state, torch.ones(B, dtype=DTYPE), T_EVAL, solver="euler", dt=0.1, per_sample=True)
    with pytest.raises(ValueError, match="adaptive SDE steps are for the global layout"):
        nde.solve(sde.term(None), _y0(), T_EVAL, solver="heun", rtol=1e-3, atol=1e-3, per_sample=True)
    with pytest.raises(ValueError, match="stochastic adjoint is for the global layout"):
        nde.solve(sde.term(None), _y0(), T_EVAL, solver="heun", dt=0.1, per_sample=True, gradient="adjoint")
    wrong = nde.BrownianInterval(0.0, 1.0, (2,), dtype=DTYPE)
    with pytest.raises(ValueError, match=r"has shape \(2,\) but this SDE needs \(3, 2\)"):
        nde.solve(sde.term(wrong), _y0(), T_EVAL, solver="heun", dt=0.1, per_sample=True)
