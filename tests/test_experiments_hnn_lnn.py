"""The HNN and LNN reproductions: registered with both tiers, and (slow) each quick tier passes its
checks, writes figures and a report."""

from __future__ import annotations

import pytest

from torchnde.experiments._framework import get, names, run_experiment

EXPERIMENTS = ["hnn-spring", "hnn-pendulum", "hnn-two-body", "lnn-double-pendulum", "lnn-relativistic"]


def test_every_hnn_and_lnn_experiment_is_registered_with_a_paper_and_claim():
    registered = names()
    for name in EXPERIMENTS:
        assert name in registered
        exp = get(name)
        assert "arXiv" in exp.paper and exp.claim and exp.title


def _failed(doc: dict) -> list[str]:
    return [
        f"{c['name']}: {c['measured']} {c['op']} {c['threshold']}" for c in doc["checks"] if not c["passed"]
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_tier_passes(name, tmp_path):
    doc = run_experiment(name, quick=True, out=tmp_path, progress=False)
    assert doc["quick"] and doc["seed"] == 0
    assert doc["checks"] and all(c["claim"] for c in doc["checks"])
    assert len(list(tmp_path.glob("*.png"))) >= 2, "the experiment wrote too few figures"
    assert (tmp_path / "report.md").exists() and (tmp_path / "metrics.json").exists()
    assert doc["figure_problems"] == {}, doc["figure_problems"]  # labelled, nothing overlaps
    assert doc["passed"], _failed(doc)
