"""The experiment harness: checks, metrics.json, report.md, figures, resumable training."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from torchnde.experiments import _checkpoint
from torchnde.experiments import _framework as fw

from .helpers import registered_toy


@pytest.fixture
def toy_experiment():
    """The toy experiment ``toy-linear`` registered for the duration of a test; counts its steps."""
    with registered_toy() as calls:
        yield calls


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
    assert saved["figures"] == ["loss.png"] and saved["figure_problems"] == {}
    assert saved["checkpoints"] == ["checkpoints/fit.pt"]


def test_training_resumes_from_the_last_checkpoint_after_an_interruption(toy_experiment, tmp_path):
    run = fw.Run(tmp_path, quick=True, progress=False, experiment="toy-linear")
    run.metrics["crash_at"] = 35
    with pytest.raises(KeyboardInterrupt):
        fw.get("toy-linear").fn(run)
    assert toy_experiment["steps"] == 36
    saved = torch.load(tmp_path / "checkpoints" / "fit.pt", weights_only=True)
    assert saved["step"] == 30 and len(saved["history"]) == 30
    doc = fw.run_experiment("toy-linear", quick=True, out=tmp_path, progress=False)
    assert toy_experiment["steps"] == 36 + 30  # resumed at step 30, not from scratch
    assert doc["metrics"]["steps_run"] == 60
    fw.run_experiment("toy-linear", quick=True, out=tmp_path, progress=False)
    assert toy_experiment["steps"] == 66  # a finished stage is skipped


def test_resumed_training_equals_uninterrupted_training(toy_experiment, tmp_path):
    straight = fw.run_experiment("toy-linear", quick=True, out=tmp_path / "a", progress=False)
    run = fw.Run(tmp_path / "b", quick=True, progress=False, experiment="toy-linear")
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


def _interrupted(tmp_path, crash_at: int = 35) -> None:
    """Run toy-linear's quick tier until it is interrupted at step ``crash_at``."""
    run = fw.Run(tmp_path, quick=True, progress=False, experiment="toy-linear")
    run.metrics["crash_at"] = crash_at
    with pytest.raises(KeyboardInterrupt):
        fw.get("toy-linear").fn(run)


def test_resuming_and_reusing_checkpoints_is_announced(toy_experiment, tmp_path, capsys):
    _interrupted(tmp_path)
    capsys.readouterr()
    fw.run_experiment("toy-linear", quick=True, out=tmp_path, progress=False)
    out = capsys.readouterr().out
    ckpt = tmp_path / "checkpoints" / "fit.pt"
    assert f"resuming 'fit' from checkpoint {ckpt} at step 30 of 60; --fresh to start over" in out
    fw.run_experiment("toy-linear", quick=True, out=tmp_path, progress=False)
    out = capsys.readouterr().out
    assert f"reusing checkpoint {ckpt} (trained 60 steps); --fresh to retrain" in out
    assert "training fit" not in out


def test_fresh_deletes_the_checkpoints_and_retrains(toy_experiment, tmp_path, capsys):
    fw.run_experiment("toy-linear", quick=True, out=tmp_path, progress=False)
    capsys.readouterr()
    doc = fw.run_experiment("toy-linear", quick=True, out=tmp_path, progress=False, fresh=True)
    out = capsys.readouterr().out
    assert toy_experiment["steps"] == 120 and doc["metrics"]["steps_run"] == 60
    assert "--fresh: deleted 1 checkpoint(s)" in out and "reusing" not in out


def test_a_corrupt_checkpoint_is_reported_and_ignored(toy_experiment, tmp_path, capsys):
    straight = fw.run_experiment("toy-linear", quick=True, out=tmp_path / "a", progress=False)
    ckpt = tmp_path / "b" / "checkpoints" / "fit.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"PK\x03\x04 not a checkpoint at all")
    capsys.readouterr()
    doc = fw.run_experiment("toy-linear", quick=True, out=tmp_path / "b", progress=False)
    err = capsys.readouterr().err
    assert f"ignoring checkpoint {ckpt}: it cannot be read" in err and "from step 0" in err
    assert doc["metrics"]["final_loss"] == straight["metrics"]["final_loss"]
    assert torch.load(ckpt, weights_only=True)["step"] == 60  # replaced by a good one


def test_a_checkpoint_for_another_seed_is_reported_and_ignored(toy_experiment, tmp_path, capsys):
    fw.run_experiment("toy-linear", quick=True, seed=1, out=tmp_path, progress=False)
    capsys.readouterr()
    doc = fw.run_experiment("toy-linear", quick=True, seed=0, out=tmp_path, progress=False)
    assert "it was written for seed 1, this run has 0" in capsys.readouterr().err
    assert toy_experiment["steps"] == 120 and doc["metrics"]["steps_run"] == 60


def test_a_checkpoint_of_another_format_version_is_reported_and_ignored(toy_experiment, tmp_path, capsys):
    fw.run_experiment("toy-linear", quick=True, out=tmp_path, progress=False)
    ckpt = tmp_path / "checkpoints" / "fit.pt"
    blob = torch.load(ckpt, weights_only=True)
    blob["format"] = 1
    torch.save(blob, ckpt)
    capsys.readouterr()
    fw.run_experiment("toy-linear", quick=True, out=tmp_path, progress=False)
    assert "it has format version 1, this version reads 2" in capsys.readouterr().err
    assert toy_experiment["steps"] == 120


def test_a_checkpoint_of_other_shapes_is_refused_and_changes_nothing(tmp_path):
    model, other = torch.nn.Linear(2, 3), torch.nn.Linear(2, 4)
    config = {"experiment": "x", "tier": "quick", "seed": 0, "tag": "t", "steps": 5}
    _checkpoint.write_checkpoint(tmp_path / "t.pt", config, 5, [], {"model": other})
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(_checkpoint.CheckpointError, match=r"model.weight is \(\(4, 2\)"):
        _checkpoint.read_checkpoint(tmp_path / "t.pt", config, {"model": model})
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(_checkpoint.CheckpointError, match="holds \\['model'\\], the stage trains"):
        _checkpoint.read_checkpoint(
            tmp_path / "t.pt", config, {"model": other, "opt": torch.optim.SGD(other.parameters())}
        )


def test_a_checkpoint_restores_every_generator_so_training_continues_identically(tmp_path):
    gen = torch.Generator().manual_seed(3)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    config = {"experiment": "x", "tier": "full", "seed": 0, "tag": "t", "steps": 1}
    fw.seed_everything(5)
    _checkpoint.write_checkpoint(
        tmp_path / "t.pt", config, 1, [{"loss": 1.0}], {"model": model, "opt": opt, "gen": gen}
    )
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    fw.seed_everything(9)
    torch.rand(5, generator=gen)
    blob = _checkpoint.read_checkpoint(tmp_path / "t.pt", config, {"model": model, "opt": opt, "gen": gen})
    again = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    assert again == expected and blob["history"] == [{"loss": 1.0}]
    torch.load(tmp_path / "t.pt", weights_only=True)  # tensors and plain containers only


def test_a_step_returning_an_object_is_refused_with_the_fix(tmp_path):
    run = fw.Run(tmp_path, progress=False)
    model = torch.nn.Linear(1, 1)
    with pytest.raises(TypeError, match="return numbers, strings or lists of them"):
        run.train("t", lambda i: {"model": model}, 3, {"model": model})


# -- claims known not to reproduce ----------------------------------------------------------------


def test_a_known_failure_is_reported_with_its_reason_but_not_counted(tmp_path):
    with registered_toy(known_failure="the toy cannot fit a line below zero"):
        doc = fw.run_experiment("toy-linear", quick=True, out=tmp_path, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    impossible = saved["checks"][1]
    assert impossible["name"] == "impossible" and impossible["passed"] is False
    assert impossible["measured"] == 1.0 and impossible["threshold"] == 0.0
    assert impossible["known_failure"] == "the toy cannot fit a line below zero"
    assert saved["checks"][0]["known_failure"] is None
    assert saved["passed"] is True and doc["passed"] is True  # the slope, the only counted check, passed
    report = (tmp_path / "report.md").read_text()
    assert "**PASSED**" in report and "| impossible | 1 | <= 0 | no (known) |" in report
    assert "- NOT REPRODUCED (known): impossible: 1 <= 0; the toy cannot fit a line below zero" in report
    lines = list(fw.format_checks(saved))
    assert lines[0].startswith("  [PASS] slope: ")
    assert lines[1] == "  NOT REPRODUCED (known): impossible: 1 <= 0; the toy cannot fit a line below zero"


def test_a_known_failure_that_passes_is_flagged_as_reproduced_unexpectedly(tmp_path, capsys):
    run = fw.Run(tmp_path)
    assert run.check("ratio", 0.5, "<=", 1.0, known_failure="Adam's memory") is True
    err = capsys.readouterr().err
    assert "'ratio' is recorded as a known failure (Adam's memory) but passed (0.5 <= 1)" in err
    assert "update the documents" in err
    doc = {"checks": [vars(c) for c in run.checks]}
    assert list(fw.format_checks(doc)) == [
        "  REPRODUCED (unexpectedly): ratio: 0.5 <= 1; recorded as not reproducing (Adam's memory): "
        "update the documents"
    ]


def test_known_failures_alone_do_not_make_a_run_pass(tmp_path):
    run = fw.Run(tmp_path)
    run.check("ratio", 0.5, "<=", 1.0, known_failure="why")
    assert run.passed is False  # nothing counted was checked
    run.check("error", 0.2, "<=", 0.1)
    assert run.passed is False
    run.checks.pop()
    run.check("error", 0.05, "<=", 0.1)
    assert run.passed is True


def test_a_known_failure_must_say_why(tmp_path):
    with pytest.raises(ValueError, match="known_failure must say why the claim does not reproduce"):
        fw.Run(tmp_path).check("ratio", 2.0, "<=", 1.0, known_failure="  ")


def test_a_report_section_comes_after_the_notes_and_before_the_measurements(tmp_path):
    run = fw.Run(tmp_path, quick=True, progress=False)
    run.check("fits", 1.0, "<=", 2.0)
    run.note("a note")
    run.metric("x", 3)
    run.section("Beside the paper", "| model | error |\n|---|---|\n| ours | 1% |\n")
    run.write(fw.Experiment("toy", "a toy", "a paper", "a claim", lambda r: None), 0.5)
    report = (tmp_path / "report.md").read_text()
    assert "\n## Beside the paper\n\n| model | error |\n|---|---|\n| ours | 1% |\n" in report
    assert report.index("- a note") < report.index("## Beside the paper") < report.index("## Measurements")


def test_a_resumed_or_reused_stage_reports_the_time_all_its_steps_took(tmp_path):
    """``run.train_seconds[tag]`` sums the runs that trained the stage (kept in the checkpoint):
    a stage resumed at step 30 of 60 reports the time of 60 steps, not this run's 30."""
    import math
    import time

    model = torch.nn.Linear(1, 1)

    def train(crash_at: int | None = None) -> fw.Run:
        run = fw.Run(tmp_path, quick=True, progress=False, experiment="toy-linear")

        def step(i: int) -> dict:
            if i == crash_at:
                raise KeyboardInterrupt
            time.sleep(0.004)
            return {"loss": float(i)}

        run.train("timed", step, 60, {"model": model}, every=10)
        return run

    with pytest.raises(KeyboardInterrupt):
        train(crash_at=35)
    saved = torch.load(tmp_path / "checkpoints" / "timed.pt", weights_only=True)
    assert saved["step"] == 30 and saved["seconds"] >= 30 * 0.004
    resumed = train()
    assert resumed.train_seconds["timed"] >= 60 * 0.004  # this run alone slept 30 x 0.004
    assert resumed.train_seconds["timed"] - saved["seconds"] < 30 * 0.004 + 1.0
    reused = train()  # the finished stage is not trained again; its time is the checkpoint's
    final = torch.load(tmp_path / "checkpoints" / "timed.pt", weights_only=True)["seconds"]
    assert reused.train_seconds["timed"] == final == resumed.train_seconds["timed"]
    blob = torch.load(tmp_path / "checkpoints" / "timed.pt", weights_only=True)
    del blob["seconds"]  # a checkpoint written before the time was kept
    torch.save(blob, tmp_path / "checkpoints" / "timed.pt")
    assert math.isnan(train().train_seconds["timed"])
