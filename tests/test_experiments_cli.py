"""The ``torchnde`` command line: help for every flag, the header first, output paths, reuse announced."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

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
    assert ("torchnde run", "seeds") in seen


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


def test_run_lists_a_known_failure_with_its_reason_and_exits_0(tmp_path, capsys):
    with registered_toy(known_failure="a toy's claim"):
        status = cli.main(["run", "toy-linear", "--quick", "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0 and "toy-linear: passed in" in out and "[PASS] slope" in out
    assert "  NOT REPRODUCED (known): impossible: 1 <= 0; a toy's claim" in out and "[FAIL]" not in out


# -- seed sweeps -----------------------------------------------------------------------------------


def test_a_sweep_prints_the_criteria_table_and_every_output_path(tmp_path, capsys):
    def seed_below_2(run) -> None:
        run.check("seed below 2", run.seed, "<=", 1)

    with registered_toy(known_failure="x", extra=seed_below_2):
        status = cli.main(
            ["run", "toy-linear", "--quick", "--seeds", "0-2", "--out", str(tmp_path), "--no-progress"]
        )
    out = capsys.readouterr().out
    assert status == 1  # seed 2 failed a criterion
    assert out.splitlines()[0] == "toy-linear: seed sweep over 3 seeds (0, 1, 2), quick tier"
    summary = out[out.index("toy-linear (quick tier, 3 seeds): FAILED (failed for seeds 2)") :]
    row = next(line for line in summary.splitlines() if line.startswith("| seed below 2"))
    assert [cell.strip() for cell in row.strip("|").split("|")][2:] == [
        "0 PASS", "1 PASS", "2 FAIL", "0", "1", "2", "2 of 3"
    ]  # fmt: skip
    outputs = out[out.index("Outputs:") :]
    assert f"sweep        {tmp_path / 'sweep.json'}" in outputs and (tmp_path / "sweep.json").exists()
    assert f"sweep report {tmp_path / 'sweep.md'}" in outputs and (tmp_path / "sweep.md").exists()
    for seed in (0, 1, 2):
        assert f"seed {seed:<7d} {tmp_path / f'seed-{seed}'}" in outputs
        assert (tmp_path / f"seed-{seed}" / "report.md").exists()


def test_a_sweep_where_every_seed_passes_exits_0_and_defaults_to_a_seeds_folder(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    with registered_toy(known_failure="x"):
        status = cli.main(["run", "toy-linear", "--quick", "--seeds", "4,6", "--no-progress"])
    out = capsys.readouterr().out
    folder = Path("runs") / "toy-linear-quick-seeds"
    assert status == 0 and "toy-linear (quick tier, 2 seeds): passed for every seed" in out
    assert json.loads((folder / "sweep.json").read_text())["seeds"] == [4, 6]
    assert json.loads((folder / "seed-6" / "metrics.json").read_text())["seed"] == 6


def test_all_with_seeds_runs_one_sweep_per_experiment(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "names", lambda: ["toy-a", "toy-b"])
    with registered_toy("toy-a", known_failure="x"), registered_toy("toy-b"):
        status = cli.main(
            ["run", "all", "--quick", "--seeds", "0-1", "--out", str(tmp_path), "--no-progress"]
        )
    out = capsys.readouterr().out
    assert status == 1 and "1 of 2 experiments passed for every seed; failed: toy-b" in out
    for name in ("toy-a", "toy-b"):
        assert json.loads((tmp_path / name / "sweep.json").read_text())["experiment"] == name
        assert (tmp_path / name / "seed-1" / "metrics.json").exists()


def test_seed_and_seeds_together_are_rejected_with_the_fix(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "toy-linear", "--seed", "3", "--seeds", "0-4"])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_.value.code == 2
    assert "--seed and --seeds exclude each other: --seed S runs one seed, --seeds LIST a sweep" in err
    assert "give one of them" in err


def test_an_invalid_seed_list_exits_2_saying_how_to_write_it(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "toy-linear", "--seeds", "4-2"])
    assert exit_.value.code == 2
    assert (
        "argument --seeds: invalid seed list '4-2': the range '4-2' goes down; write 2-4"
        in capsys.readouterr().err
    )
