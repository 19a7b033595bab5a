"""The PINN reproductions: registered with the paper and claim, and (slow) each quick tier passes."""

from __future__ import annotations

import json

import pytest

from torchnde.experiments import _framework as fw


@pytest.mark.parametrize(
    ("name", "claim"), [("pinn-burgers", "6.7e-4"), ("pinn-burgers-inverse", "0.0031794")]
)
def test_pinn_experiments_are_registered_with_the_paper_and_its_claim(name, claim):
    exp = fw.get(name)
    assert "1711.10561" in exp.paper
    assert claim in exp.claim


@pytest.mark.slow
def test_forward_quick_tier_passes_and_writes_its_report(tmp_path):
    doc = fw.run_experiment("pinn-burgers", quick=True, out=tmp_path, progress=False)
    assert doc["passed"], doc["checks"]
    error = next(c for c in doc["checks"] if "relative L2" in c["name"])
    assert error["threshold"] == 1e-1 and error["measured"] <= 1e-1
    assert doc["metrics"]["n_parameters"] == 3021
    for figure in ("burgers_fields", "burgers_slices", "burgers_training"):
        assert (tmp_path / f"{figure}.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "metrics.json").read_text())["passed"]
    assert doc["figure_problems"] == {}, doc["figure_problems"]  # labelled, nothing overlaps


@pytest.mark.slow
def test_inverse_quick_tier_identifies_both_coefficients(tmp_path):
    doc = fw.run_experiment("pinn-burgers-inverse", quick=True, out=tmp_path, progress=False)
    assert doc["passed"], doc["checks"]
    assert len(doc["checks"]) == 2
    assert abs(doc["metrics"]["clean_lambda1"] - 1) <= 0.05
    assert (tmp_path / "burgers_inverse_coefficients.png").stat().st_size > 10_000
    assert doc["figure_problems"] == {}, doc["figure_problems"]
