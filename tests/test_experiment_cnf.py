"""``cnf-trace-scaling``: the discrete flow's log-determinant, the batched Jacobian, the slope fit,
and the quick tier end to end (its statistics and the ordering of the cost slopes; the times
themselves are measurements it reports, not asserted here)."""

from __future__ import annotations

import math

import pytest
import torch

from torchnde.experiments import get, run_experiment
from torchnde.experiments.cnf import batched_jacobian, discrete_flow_logdet, loglog_slope
from torchnde.models import ConcatTimeMLP


def test_the_experiment_is_registered_with_its_paper():
    assert "1810.01367" in get("cnf-trace-scaling").paper


def test_discrete_flow_logdet_of_a_linear_map_is_log_det_of_identity_plus_a():
    a = torch.tensor([[1.0, 2.0, 0.0], [0.0, 3.0, 1.0], [0.5, 0.0, -0.5]], dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)
    logdet = discrete_flow_logdet(lambda t, v: v @ a.T, torch.tensor(0.0), x)
    expected = math.log(abs(float(torch.linalg.det(torch.eye(3, dtype=torch.float64) + a))))
    torch.testing.assert_close(logdet, torch.full((4,), expected, dtype=torch.float64))


def test_batched_jacobian_equals_jacrev_per_sample():
    torch.manual_seed(0)
    f = ConcatTimeMLP(4, (8,)).double()
    t = torch.tensor(0.2, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    jac = batched_jacobian(f(t, x), x)
    expected = torch.stack([torch.func.jacrev(lambda v: f(t, v[None])[0])(xi) for xi in x.detach()])
    torch.testing.assert_close(jac, expected)


def test_loglog_slope_recovers_a_power_law():
    dims = [16.0, 64.0, 256.0]
    assert loglog_slope(dims, [3e-6 * d**2.5 for d in dims]) == pytest.approx(2.5)


@pytest.mark.slow
def test_quick_tier_hutchinson_is_unbiased_and_the_cost_slopes_are_ordered(tmp_path):
    doc = run_experiment("cnf-trace-scaling", quick=True, out=tmp_path, progress=False)
    statistical = [c for c in doc["checks"] if c["name"].startswith("d = ")]
    assert len(statistical) == 7  # 3 dimensions x 2 probes, and the variance comparison
    assert all(c["passed"] for c in statistical), [c for c in statistical if not c["passed"]]
    slopes = doc["metrics"]["loglog_slope"]
    assert slopes["logdet"] > slopes["exact"] > slopes["hutchinson"]
    assert (tmp_path / "cnf_trace_scaling.png").exists() and (tmp_path / "report.md").exists()
    assert doc["figure_problems"] == {}, doc["figure_problems"]  # labelled, nothing overlaps
