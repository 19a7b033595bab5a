"""``stochastic-adjoint-gbm``: the closed-form pathwise gradient it compares with, and its quick
tier end to end."""

from __future__ import annotations

import pytest
import torch

from torchnde.experiments._framework import get, run_experiment
from torchnde.experiments.gbm_adjoint import analytic_gradient


def test_the_experiment_is_registered_with_its_paper():
    assert "2001.01328" in get("stochastic-adjoint-gbm").paper


def test_the_analytic_gradient_is_the_derivative_of_the_closed_form_solution():
    y0 = torch.tensor([[0.7], [1.2], [1.0]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[0.3], [-0.8], [1.1]], dtype=torch.float64)
    mu = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    t = 1.5
    loss = (y0 * torch.exp((mu - 0.5 * sigma**2) * t + sigma * w)).mean()
    want = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, (mu, sigma, y0))])
    got = analytic_gradient(y0.detach(), w, 0.4, 0.6, t)
    assert torch.allclose(got, want, rtol=1e-13, atol=0)


@pytest.mark.slow
def test_quick_tier_passes_its_criteria(tmp_path):
    doc = run_experiment("stochastic-adjoint-gbm", quick=True, out=tmp_path, progress=False)
    assert doc["passed"], [c for c in doc["checks"] if not c["passed"]]
    assert (tmp_path / "gradient_error.png").exists()
    assert doc["figure_problems"] == {}, doc["figure_problems"]  # labelled, nothing overlaps
    errors = doc["metrics"]["relative_error"]
    assert errors["adjoint"][-1] < errors["adjoint"][0] / 10  # converging, not just small
