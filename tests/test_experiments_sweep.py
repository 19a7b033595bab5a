"""Seed sweeps: the seed lists, one run per seed, each criterion's spread and pass count, the files."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from torchnde.experiments import parse_seeds, run_sweep
from torchnde.experiments._sweep import default_sweep_out, format_sweep, sweep_table

from .helpers import registered_toy


def _seed_below_2(run) -> None:
    """A criterion that holds for seeds 0 and 1 only."""
    run.check("seed below 2", run.seed, "<=", 1)


@pytest.mark.parametrize(
    ("spec", "seeds"),
    [
        ("0-4", [0, 1, 2, 3, 4]),
        ("0,3,7", [0, 3, 7]),
        ("1-3,9", [1, 2, 3, 9]),
        (" 5 , 2-3 ", [5, 2, 3]),
        ("7", [7]),
    ],
)
def test_seed_lists_take_seeds_and_ranges_in_the_order_given(spec, seeds):
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty seed list; write seeds and ranges separated by commas, e.g. 0-4"),
        ("a", "'a' is not a seed or a range A-B; write seeds and ranges"),
        ("1-", "'1-' is not a seed or a range A-B"),
        ("-1", "'-1' is not a seed or a range A-B"),
        ("1.5", "'1.5' is not a seed or a range A-B"),
        ("0,,2", "'' is not a seed or a range A-B"),
        ("3-1", "the range '3-1' goes down; write 1-3"),
        ("0-2,1", "seed 1 is listed twice; list each seed once"),
        ("4294967296", "seeds go from 0 to 4294967295 (numpy's limit), not 4294967296"),
    ],
)
def test_an_invalid_seed_list_is_rejected_with_how_to_write_it(spec, message):
    with pytest.raises(ValueError, match=r"invalid seed list|empty seed list") as err:
        parse_seeds(spec)
    assert message in str(err.value)


def test_run_sweep_rejects_a_repeated_seed_before_running_anything(tmp_path):
    with registered_toy() as calls, pytest.raises(ValueError, match="run_sweep: seed 2 is listed twice"):
        run_sweep("toy-linear", [2, 0, 2], quick=True, out=tmp_path, progress=False)
    assert calls["steps"] == 0 and not list(tmp_path.iterdir())


def test_a_sweep_runs_each_seed_into_its_folder_and_writes_the_summary(tmp_path, capsys):
    with registered_toy(extra=_seed_below_2):
        sweep = run_sweep("toy-linear", "0-2", quick=True, out=tmp_path, progress=False)
    out = capsys.readouterr().out
    per_seed = [json.loads((tmp_path / f"seed-{s}" / "metrics.json").read_text()) for s in (0, 1, 2)]
    assert [doc["seed"] for doc in per_seed] == [0, 1, 2] and all(doc["quick"] for doc in per_seed)
    for seed in (0, 1, 2):  # each run's output paths, as a single run prints them
        assert f"report: {tmp_path / f'seed-{seed}' / 'report.md'}" in out
    assert json.loads((tmp_path / "sweep.json").read_text()) == sweep
    assert f"sweep: {tmp_path / 'sweep.json'}" in out and f"sweep report: {tmp_path / 'sweep.md'}" in out
    assert sweep["seeds"] == [0, 1, 2] and sweep["out"] == str(tmp_path)
    assert [r["out"] for r in sweep["runs"]] == [str(tmp_path / f"seed-{s}") for s in (0, 1, 2)]
    slope = sweep["criteria"][0]
    values = [doc["checks"][0]["measured"] for doc in per_seed]
    assert slope["name"] == "slope" and slope["measured"] == values and slope["passed"] == [True] * 3
    assert slope["min"] == min(values) and slope["max"] == max(values)
    assert slope["median"] == statistics.median(values) and (slope["passes"], slope["runs"]) == (3, 3)
    by_seed = sweep["criteria"][2]
    assert by_seed["measured"] == [0, 1, 2] and by_seed["passed"] == [True, True, False]
    assert (by_seed["min"], by_seed["median"], by_seed["max"], by_seed["passes"]) == (0, 1, 2, 2)
    assert sweep["passed"] is False


def test_the_sweep_table_has_a_row_per_criterion_with_each_seed_the_spread_and_the_pass_count(tmp_path):
    with registered_toy(extra=_seed_below_2):
        sweep = run_sweep("toy-linear", [0, 1, 2], quick=True, out=tmp_path, progress=False)
    table = sweep_table(sweep)
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert cells[0] == ["criterion", "needed", "seed 0", "seed 1", "seed 2", "min", "median", "max", "passed"]
    assert set(table[1]) == {"|", "-"} and len({len(line) for line in table}) == 1  # aligned
    rows = {row[0]: row[1:] for row in cells[2:]}
    assert rows["seed below 2"] == ["<= 1", "0 PASS", "1 PASS", "2 FAIL", "0", "1", "2", "2 of 3"]
    assert rows["impossible"] == ["<= 0", "1 FAIL", "1 FAIL", "1 FAIL", "1", "1", "1", "0 of 3"]
    slopes = sweep["criteria"][0]["measured"]
    assert rows["slope"][1:4] == [f"{v:.4g} PASS" for v in slopes]
    assert rows["slope"][4:] == [
        f"{min(slopes):.4g}",
        f"{statistics.median(slopes):.4g}",
        f"{max(slopes):.4g}",
        "3 of 3",
    ]
    markdown = (tmp_path / "sweep.md").read_text()
    assert "\n".join(table) in markdown and "**FAILED**" in markdown
    assert "[seed 2](seed-2/report.md)" in markdown
    lines = list(format_sweep(sweep))
    assert lines[0] == "toy-linear (quick tier, 3 seeds): FAILED (failed for seeds 0, 1, 2)"
    assert lines[1:4] == table[:3]


def test_a_known_failure_is_marked_in_the_sweep_and_does_not_fail_it(tmp_path):
    with registered_toy(known_failure="a toy's claim"):
        sweep = run_sweep("toy-linear", "3-4", quick=True, out=tmp_path, progress=False)
    assert sweep["passed"] is True and [r["passed"] for r in sweep["runs"]] == [True, True]
    row = next(line for line in sweep_table(sweep) if "impossible" in line)
    assert "impossible (known failure)" in row and row.count("1 FAIL (known)") == 2 and "0 of 2" in row
    lines = list(format_sweep(sweep))
    assert lines[0] == "toy-linear (quick tier, 2 seeds): passed for every seed"
    assert lines[-1] == "  NOT REPRODUCED (known): impossible; a toy's claim"
    assert "- NOT REPRODUCED (known): impossible; a toy's claim" in (tmp_path / "sweep.md").read_text()


def test_a_known_failure_that_passes_for_some_seed_is_flagged(tmp_path):
    def odd_seeds_reproduce(run) -> None:
        run.check("odd seed", run.seed % 2, ">=", 1, known_failure="holds for odd seeds only")

    with registered_toy(known_failure="x", extra=odd_seeds_reproduce):
        sweep = run_sweep("toy-linear", "0-3", quick=True, out=tmp_path, progress=False)
    notes = list(format_sweep(sweep))
    assert (
        "  REPRODUCED (unexpectedly) for seeds 1, 3: odd seed; recorded as not reproducing "
        "(holds for odd seeds only): update the documents"
    ) in notes
    assert "  NOT REPRODUCED (known): odd seed; holds for odd seeds only" in notes
    assert sweep["passed"] is True


def test_a_criterion_some_seeds_did_not_record_counts_as_failed(tmp_path):
    def only_seed_0(run) -> None:
        if run.seed == 0:
            run.check("seed-0 only", 1.0, ">=", 0.0)

    with registered_toy(known_failure="x", extra=only_seed_0):
        sweep = run_sweep("toy-linear", "0-1", quick=True, out=tmp_path, progress=False)
    row = next(c for c in sweep["criteria"] if c["name"] == "seed-0 only")
    assert row["measured"] == [1.0, None] and row["passed"] == [True, False] and row["missing_seeds"] == [1]
    assert (row["min"], row["max"], row["passes"]) == (1.0, 1.0, 1)
    assert sweep["passed"] is False  # although each seed's run passed on its own checks
    assert "missing" in next(line for line in sweep_table(sweep) if "seed-0 only" in line)
    assert "  seed-0 only: not recorded for seeds 1 (counted as failed)" in list(format_sweep(sweep))


def test_a_second_sweep_reuses_each_seeds_checkpoints(tmp_path, capsys):
    with registered_toy() as calls:
        run_sweep("toy-linear", "0-1", quick=True, out=tmp_path, progress=False)
        first = calls["steps"]
        capsys.readouterr()
        run_sweep("toy-linear", "0-1", quick=True, out=tmp_path, progress=False)
        out = capsys.readouterr().out
        assert calls["steps"] == first == 120
        for seed in (0, 1):
            assert f"reusing checkpoint {tmp_path / f'seed-{seed}' / 'checkpoints' / 'fit.pt'}" in out
        run_sweep("toy-linear", "0-1", quick=True, out=tmp_path, progress=False, fresh=True)
        assert calls["steps"] == 240


def test_the_default_sweep_folder_is_beside_the_single_runs():
    assert default_sweep_out("hnn-spring") == Path("runs/hnn-spring-seeds")
    assert default_sweep_out("hnn-spring", quick=True) == Path("runs/hnn-spring-quick-seeds")
