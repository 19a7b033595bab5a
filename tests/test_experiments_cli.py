"""The ``torchnde`` command line: help for every flag, the header first, output paths, reuse announced."""

from __future__ import annotations

import argparse
import io

import pytest

from torchnde.experiments import cli
from torchnde.experiments._progress import Progress

from .helpers import registered_toy


@pytest.fixture
def toy_experiment():
    with registered_toy() as calls:
        yield calls


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_flag_of_every_subcommand_has_help():
    seen = []
    for parser in _parsers(cli._parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            seen.append((parser.prog, action.dest))
            assert action.help and action.help.strip(), f"{parser.prog}: {action.dest} has no help"
    assert ("torchnde demo", "fresh") in seen and ("torchnde run", "no_progress") in seen
    assert ("torchnde demo", "seed") in seen and ("torchnde run", "name") in seen


def test_demo_help_describes_its_flags(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for flag in ("--quick", "--seed", "--out", "--no-progress", "--fresh"):
        assert flag in text
    assert "runs/demo" in text and "train from the start" in text


def test_run_prints_the_header_first_and_every_output_path(toy_experiment, tmp_path, capsys):
    status = cli.main(["run", "toy-linear", "--quick", "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert status == 1 and "[PASS] slope" in out and "[FAIL] impossible" in out
    lines = out.splitlines()
    assert lines[0] == "toy-linear: Toy" and f"outputs in {tmp_path}" in lines[2]
    assert lines.index("training fit: 60 steps") > 2
    outputs = out[out.index("Outputs:") :]
    for kind, path in (
        ("report", tmp_path / "report.md"),
        ("metrics", tmp_path / "metrics.json"),
        ("figure", tmp_path / "loss.png"),
        ("checkpoint", tmp_path / "checkpoints" / "fit.pt"),
    ):
        assert f"{kind:12s} {path}" in outputs and path.exists()
    assert f"figure: {tmp_path / 'loss.png'}" in out  # also as it is saved


def test_a_second_run_announces_the_reused_checkpoint_and_fresh_retrains(toy_experiment, tmp_path, capsys):
    args = ["run", "toy-linear", "--quick", "--out", str(tmp_path), "--no-progress"]
    cli.main(args)
    capsys.readouterr()
    cli.main(args)
    out = capsys.readouterr().out
    ckpt = tmp_path / "checkpoints" / "fit.pt"
    assert f"reusing checkpoint {ckpt} (trained 60 steps); --fresh to retrain" in out
    assert toy_experiment["steps"] == 60
    cli.main([*args, "--fresh"])
    out = capsys.readouterr().out
    assert "reusing" not in out and "training fit: 60 steps" in out and toy_experiment["steps"] == 120


def test_an_unknown_experiment_exits_2_and_lists_the_valid_ones(capsys):
    assert cli.main(["run", "nope"]) == 2
    assert "valid:" in capsys.readouterr().err


def test_list_names_the_experiments(toy_experiment, capsys):
    assert cli.main(["list"]) == 0
    assert "toy-linear" in capsys.readouterr().out


def test_progress_off_a_terminal_prints_plain_lines_with_the_time_left():
    stream = io.StringIO()
    bar = Progress("training fit", 4, initial=1, interval=0.0, stream=stream)
    for _ in range(2):
        bar.update(info={"loss": 0.25, "note": "x"})
    bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("training fit: 2/4 steps, ") and "left (loss=0.25)" in lines[0]
    assert lines[1].startswith("training fit: 3/4 steps, ")
    assert lines[-1].startswith("training fit: 4/4 steps in ") and len(lines) == 3
    quiet = io.StringIO()
    bar = Progress("x", 2, enabled=False, stream=quiet)
    bar.update()
    bar.close()
    assert quiet.getvalue() == ""
