"""``latent-sde-lorenz``: registration and its quick tier end to end (training improves the
held-out ELBO; the full tier's criteria are reported as metrics)."""

from __future__ import annotations

import pytest

from torchnde.experiments._framework import get, run_experiment


def test_the_experiment_is_registered_with_its_paper():
    assert "2001.01328" in get("latent-sde-lorenz").paper


@pytest.mark.slow
def test_quick_tier_passes_its_criteria(tmp_path):
    doc = run_experiment("latent-sde-lorenz", quick=True, out=tmp_path, progress=False)
    assert doc["passed"], [c for c in doc["checks"] if not c["passed"]]
    for name in ("training", "posterior", "prior_marginals"):
        assert (tmp_path / f"{name}.png").exists()
    assert doc["figure_problems"] == {}, doc["figure_problems"]  # labelled, nothing overlaps
    metrics = doc["metrics"]
    assert metrics["heldout_elbo"]["after"] > metrics["heldout_elbo"]["before"]
    assert 0.0 <= metrics["coverage_90"] <= 1.0 and metrics["posterior_mse"] > 0
    spread = metrics["posterior_final_std"]
    assert len(spread["posterior"]) == len(spread["heldout"]) == 3
    assert all(v > 0 for v in spread["posterior"] + spread["heldout"])
