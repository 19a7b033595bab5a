"""The main job, ``ude-lotka-volterra``, and the ``torchnde demo`` printout."""

from __future__ import annotations

import json

import pytest
import torch

from torchnde.experiments import demo
from torchnde.experiments._framework import get, run_experiment
from torchnde.experiments.ude import known_part, rbf_network


def test_the_experiment_is_registered_with_its_paper():
    exp = get("ude-lotka-volterra")
    assert "2001.04385" in exp.paper


def test_the_network_is_the_papers_2_5_5_5_2_rbf_network():
    net = rbf_network()
    assert sum(p.numel() for p in net.parameters()) == 87
    z = torch.linspace(-2, 2, 5, dtype=torch.float64)
    assert torch.allclose(net[1](z), torch.exp(-(z**2)))


def test_the_known_part_is_alpha_x_and_minus_delta_y():
    u = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    out = known_part(torch.tensor(0.0), u, torch.tensor(1.3), torch.tensor(1.8))
    assert out[0].tolist() == pytest.approx([2.6, -5.4])


def _doc(passed: bool) -> dict:
    return {
        "quick": True,
        "seed": 0,
        "seconds": 42.0,
        "passed": passed,
        "checks": [
            {
                "name": "relative error of β",
                "measured": 0.047,
                "op": "<=",
                "threshold": 0.1,
                "passed": True,
                "claim": "10%",
            },
            {
                "name": "hybrid L2",
                "measured": 0.13,
                "op": "<",
                "threshold": 0.1,
                "passed": passed,
                "claim": None,
            },
        ],
        "metrics": {
            "known_parameters": {"alpha": 1.3, "delta": 1.8},
            "true_parameters": {"alpha": 1.3, "beta": 0.9, "gamma": 0.8, "delta": 1.8},
            "discovered_terms": {"U_x": {"x*y": -0.8578}, "U_y": {"x*y": 0.8483}},
            "hybrid_l2_0_20": 0.1296,
            "hybrid_at_20": 0.0849,
            "oracle_l2_0_20": 0.1296,
            "node_l2_3_20": 10.2,
            "hybrid_l2_3_20": 0.1316,
        },
    }


def test_summary_prints_the_equations_next_to_the_truth_and_every_criterion():
    text = demo.summary(_doc(False), "runs/demo")
    assert "dx/dt = 1.3 x - 0.8578 x·y   (true: 1.3 x - 0.9 x·y)" in text
    assert "dy/dt = -1.8 y + 0.8483 x·y   (true: -1.8 y + 0.8 x·y)" in text
    assert "[PASS] relative error of β" in text and "[FAIL] hybrid L2" in text
    assert "13.0%" in text and "8.5%" in text
    assert "runs/demo/report.md" in text
    assert "noise level" not in text  # a document from before restarts has no training line


def test_summary_says_how_close_the_fit_came_to_the_noise_and_how_many_restarts_it_took():
    doc = _doc(True)
    doc["metrics"].update(ude_sse_over_floor=1.2345, ude_restarts=1)
    text = demo.summary(doc)
    assert "sum of squared errors 1.23x the noise level N σ², after 1 restart from a fresh" in text
    doc["metrics"]["ude_restarts"] = 2
    assert "after 2 restarts" in demo.summary(doc)


def test_main_returns_zero_only_when_every_criterion_passed(monkeypatch, capsys, tmp_path):
    for passed, code in ((True, 0), (False, 1)):
        monkeypatch.setattr(demo, "run_experiment", lambda name, passed=passed, **kw: _doc(passed))
        assert demo.main(quick=True, out=str(tmp_path)) == code
        assert "Recovered equations" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_tier_passes_its_criteria(tmp_path):
    doc = run_experiment("ude-lotka-volterra", quick=True, out=tmp_path, progress=False)
    assert doc["passed"], [c for c in doc["checks"] if not c["passed"]]
    for name in ("fit", "extrapolation", "interaction", "sweep"):
        assert (tmp_path / f"{name}.png").exists()
    assert doc["figure_problems"] == {}, doc["figure_problems"]  # labelled, nothing overlaps
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"]["discovered_terms"]["U_x"].keys() == {"x*y"}
    assert saved["metrics"]["ude_sse_over_floor"] <= 2.0
    assert saved["metrics"]["node_l2_3_20"] > 1.0
    text = demo.summary(saved, tmp_path)
    assert "dx/dt = 1.3 x - " in text and "x·y" in text
