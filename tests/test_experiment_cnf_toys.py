"""``cnf-toys``: the CNF on FFJORD's 2-D toy densities: registration, the shared samplers
(checkerboard's support and density, the reuse by ``rnode-regularisation``) and the quick tier."""

from __future__ import annotations

import math

import pytest
import torch

from torchnde.experiments import get, rnode, run_experiment
from torchnde.experiments._toy_densities import (
    DENSITIES,
    checkerboard,
    checkerboard_log_density,
    eight_gaussians,
    gaussian_nll,
    two_spirals,
)


def test_the_experiment_is_registered_with_the_ffjord_paper():
    exp = get("cnf-toys")
    assert "1810.01367" in exp.paper and "1806.07366" in exp.paper
    assert "Hutchinson" in exp.title


def test_the_checkerboard_fills_the_eight_black_squares_equally():
    x = checkerboard(64_000, torch.Generator().manual_seed(0), torch.float64)
    assert x.shape == (64_000, 2) and x.dtype == torch.float64
    assert float(x.abs().max()) < 4.0
    cells = (torch.floor(x / 2) + 2).long()  # column, row in 0..3
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16).reshape(4, 4)
    black = (torch.arange(4)[:, None] + torch.arange(4)[None]) % 2 == 0
    assert int(counts[~black].sum()) == 0
    assert counts[black].min() > 7_600 and counts[black].max() < 8_400  # 8,000 each expected
    assert torch.equal(x, checkerboard(64_000, torch.Generator().manual_seed(0), torch.float64))


def test_the_checkerboard_density_is_one_over_32_on_the_support_and_zero_off_it():
    x = checkerboard(1000, torch.Generator().manual_seed(1), torch.float64)
    assert torch.allclose(
        checkerboard_log_density(x), torch.full((1000,), -math.log(32.0), dtype=torch.float64)
    )
    off = torch.tensor([[-3.0, -1.0], [1.0, -1.0], [4.5, 0.5], [0.5, -4.2]], dtype=torch.float64)
    assert torch.isneginf(checkerboard_log_density(off)).all()
    g = torch.linspace(-4.99, 4.99, 500, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    mass = float(checkerboard_log_density(grid).exp().sum() * (g[1] - g[0]) ** 2)
    assert mass == pytest.approx(1.0, abs=0.02)


def test_the_fitted_gaussian_of_the_checkerboard_scores_above_its_entropy():
    x = checkerboard(40_000, torch.Generator().manual_seed(2), torch.float64)
    # variances 16/3 (uniform on [-4, 4]) and covariance 1 (each column's two squares have
    # mean x2 = -1, 1, -1, 1 at x1-centres -3, -1, 1, 3): NLL = log(2 pi e) + log det(cov) / 2
    # = 4.49 nats, against the true density's log 32 = 3.47
    det = (16 / 3) ** 2 - 1
    expected = math.log(2 * math.pi * math.e) + 0.5 * math.log(det)
    assert gaussian_nll(x[:20_000], x[20_000:]) == pytest.approx(expected, abs=0.02)
    assert -float(checkerboard_log_density(x).mean()) == pytest.approx(math.log(32.0), abs=1e-12)


def test_rnode_uses_the_shared_samplers():
    assert rnode._DENSITIES["8gaussians"][0] is eight_gaussians
    assert rnode._DENSITIES["2spirals"] == (two_spirals, None)
    assert set(DENSITIES) == {"8gaussians", "2spirals", "checkerboard"}


@pytest.mark.slow
def test_quick_tier_meets_every_criterion(tmp_path):
    doc = run_experiment("cnf-toys", quick=True, out=tmp_path, progress=False)
    assert doc["passed"], [c for c in doc["checks"] if not c["passed"]]
    result = doc["metrics"]["8gaussians"]
    assert result["test_nll"] < result["fitted_gaussian_test_nll"] - 0.5
    assert result["true_density_test_nll"] < result["test_nll"]  # nothing beats the true density
    assert abs(result["hutchinson"]["difference"]) < 4 * result["hutchinson"]["standard_error"] + 1e-3
    assert (tmp_path / "cnf_toys_8gaussians.png").exists()
