"""Autograd flows through a solve (discretise-then-optimise): gradients to y0 and to the
parameters of f match finite differences. The step-size decisions are not differentiated."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde


def _inputs():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3, dtype=torch.float64, generator=gen).requires_grad_()
    y0 = torch.randn(2, 3, dtype=torch.float64, generator=gen).requires_grad_()
    return y0, w


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize(
    ("solver", "options"),
    [
        ("rk4", {"dt": 0.1}),
        ("dopri5", {"rtol": 1e-8, "atol": 1e-10}),
        ("dopri8", {"rtol": 1e-8, "atol": 1e-10}),
    ],
)
def test_backprop_through_the_solve_matches_finite_differences(per_sample, solver, options):
    ts = torch.linspace(0, 1, 4, dtype=torch.float64)

    def outputs(y0, w):
        def f(t, y):
            return torch.tanh(y @ w) * torch.cos(t)

        return nde.solve(f, y0, ts, solver, per_sample=per_sample, **options).ys

    assert torch.autograd.gradcheck(outputs, _inputs(), eps=1e-6, atol=1e-5, rtol=1e-4)
