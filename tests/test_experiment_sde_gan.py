"""The ``sde-gan-ou`` reproduction: registered with its paper, and (slow) its quick tier trains and improves the mean."""

from __future__ import annotations

import pytest

from torchnde.experiments import _framework as fw


def test_sde_gan_experiment_is_registered_with_the_paper():
    exp = fw.get("sde-gan-ou")
    assert "2102.03657" in exp.paper
    assert "Ornstein" in exp.title


@pytest.mark.slow
def test_quick_tier_halves_the_generated_mean_error_and_writes_its_report(tmp_path):
    doc = fw.run_experiment("sde-gan-ou", quick=True, out=tmp_path, progress=False)
    assert doc["passed"], doc["checks"]
    metrics = doc["metrics"]
    assert metrics["mean_error_final_averaged"] <= 0.5 * metrics["mean_error_initial"]
    assert metrics["config"]["iterations"] == 300
    curve = metrics["moment_error_curve_current_weights"]
    assert [c[0] for c in curve] == [0, 50, 100, 150, 200, 250, 300]
    assert metrics["eval_times"] == [1.0, 2.0, 3.0]
    assert len(metrics["generated_mean"]) == len(metrics["analytic_std"]) == 3
    for figure in ("sde_gan_paths", "sde_gan_training"):
        assert (tmp_path / f"{figure}.png").stat().st_size > 10_000
    assert doc["figure_problems"] == {}, doc["figure_problems"]
