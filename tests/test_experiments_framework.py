"""The experiment harness: checks, metrics.json, report.md, figures, resumable training, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from torchnde.experiments import _framework as fw
from torchnde.experiments import cli


@pytest.fixture
def toy_experiment():
    """Register a small experiment (a linear fit) for the duration of a test."""
    calls = {"steps": 0}

    def run_toy(run: fw.Run) -> None:
        import matplotlib.pyplot as plt

        x = torch.linspace(-1, 1, 32).unsqueeze(1)
        y = 3 * x + 1
        model = torch.nn.Linear(1, 1)
        opt = torch.optim.Adam(model.parameters(), lr=0.1)

        def step(i: int) -> dict:
            calls["steps"] += 1
            if run.metrics.get("crash_at") == i:
                raise KeyboardInterrupt
            opt.zero_grad()
            loss = (model(x) - y).pow(2).mean()
            loss.backward()
            opt.step()
            return {"loss": loss.detach()}

        history = run.train("fit", step, run.pick(60, 120), {"model": model, "opt": opt}, every=10)
        run.metric("final_loss", history[-1]["loss"])
        run.metric("steps_run", len(history))
        run.check("slope", model.weight.item(), ">=", 2.5, claim="3")
        run.check("impossible", 1.0, "<=", 0.0)
        fig, ax = plt.subplots()
        ax.plot([h["loss"] for h in history])
        run.figure("loss", fig, "training loss")
        run.note("a toy")

    fw._load_all()
    fw._REGISTRY["toy-linear"] = fw.Experiment("toy-linear", "Toy", "nobody 2026", "a line", run_toy)
    yield calls
    del fw._REGISTRY["toy-linear"]


def test_run_writes_metrics_report_and_figures(toy_experiment, tmp_path):
    doc = fw.run_experiment("toy-linear", quick=True, out=tmp_path, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["experiment"] == "toy-linear" and saved["quick"] is True
    assert [c["passed"] for c in saved["checks"]] == [True, False]
    assert saved["passed"] is False and doc["passed"] is False
    assert saved["published_claim"] == "a line" and saved["checks"][0]["claim"] == "3"
    report = (tmp_path / "report.md").read_text()
    assert "![training loss](loss.png)" in report and "| impossible |" in report and "FAILED" in report
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert saved["metrics"]["steps_run"] == 60


def test_training_resumes_from_the_last_checkpoint_after_an_interruption(toy_experiment, tmp_path):
    run = fw.Run(tmp_path, quick=True, progress=False)
    run.metrics["crash_at"] = 35
    with pytest.raises(KeyboardInterrupt):
        fw.get("toy-linear").fn(run)
    assert toy_experiment["steps"] == 36
    saved = torch.load(tmp_path / "checkpoints" / "fit.pt", weights_only=False)
    assert saved["step"] == 30 and len(saved["history"]) == 30
    doc = fw.run_experiment("toy-linear", quick=True, out=tmp_path, progress=False)
    assert toy_experiment["steps"] == 36 + 30  # resumed at step 30, not from scratch
    assert doc["metrics"]["steps_run"] == 60
    fw.run_experiment("toy-linear", quick=True, out=tmp_path, progress=False)
    assert toy_experiment["steps"] == 66  # a finished stage is skipped


def test_resumed_training_equals_uninterrupted_training(toy_experiment, tmp_path):
    straight = fw.run_experiment("toy-linear", quick=True, out=tmp_path / "a", progress=False)
    run = fw.Run(tmp_path / "b", quick=True, progress=False)
    (tmp_path / "b").mkdir()
    fw.seed_everything(0)  # as run_experiment does
    run.metrics["crash_at"] = 41
    with pytest.raises(KeyboardInterrupt):
        fw.get("toy-linear").fn(run)
    resumed = fw.run_experiment("toy-linear", quick=True, out=tmp_path / "b", progress=False)
    assert resumed["metrics"]["final_loss"] == straight["metrics"]["final_loss"]


def test_unknown_experiment_lists_the_valid_ones():
    with pytest.raises(KeyError, match="valid:"):
        fw.get("no-such-thing")


def test_unknown_comparison_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown comparison"):
        fw.Run(tmp_path).check("x", 1.0, "==", 1.0)


def test_a_non_finite_measurement_fails_its_check(tmp_path):
    run = fw.Run(tmp_path)
    assert not run.check("nan", float("nan"), "<=", 1.0)


def test_cli_list_and_run(toy_experiment, tmp_path, capsys):
    assert cli.main(["list"]) == 0
    assert "toy-linear" in capsys.readouterr().out
    status = cli.main(["run", "toy-linear", "--quick", "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert status == 1 and "[PASS] slope" in out and "[FAIL] impossible" in out
    assert cli.main(["run", "nope"]) == 2


def test_experiments_run_single_threaded_and_restore_the_setting(tmp_path):
    seen = []
    fw._load_all()
    fw._REGISTRY["toy-threads"] = fw.Experiment(
        "toy-threads", "T", "p", "c", lambda run: seen.append(torch.get_num_threads())
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fw.run_experiment("toy-threads", out=tmp_path, progress=False)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        del fw._REGISTRY["toy-threads"]
