"""Seed sweeps: one experiment run once per seed, and the spread of each criterion over the seeds.

A reproduction whose claim holds only for the seed it was tuned on is not reproduced. A sweep
runs the experiment (one tier) for every seed of a list, each into its own folder
``OUT/seed-S``, and summarises every criterion over the seeds: each seed's measured value and
whether it passed, the smallest, median and largest value, and how many seeds passed. The
summary goes to ``OUT/sweep.json`` and ``OUT/sweep.md`` (``torchnde run NAME --seeds 0-4``).

```python
from torchnde.experiments import parse_seeds
parse_seeds("0-2,7")   # [0, 1, 2, 7]
```
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._framework import _fmt, check_status, default_out, get, run_experiment

__all__ = ["default_sweep_out", "format_sweep", "parse_seeds", "run_sweep", "sweep_table"]

_MAX_SEED = 2**32  # numpy's generators take seeds below 2**32


def parse_seeds(spec: str) -> list[int]:
    """The seeds of a list such as ``"0-4"``, ``"0,3,7"`` or ``"1-3,9"``, in the order given.

    Items are separated by commas; an item is a seed or an inclusive, increasing range ``A-B``.
    Seeds are integers from 0 to 2**32 - 1, each listed once. Anything else raises a
    ``ValueError`` that says how to write it.

    ```python
    assert parse_seeds("1-3,9") == [1, 2, 3, 9]
    ```
    """
    hint = "write seeds and ranges separated by commas, e.g. 0-4 or 0,3,7 or 1-3,9"
    if not spec.strip():
        raise ValueError(f"empty seed list; {hint}")
    seeds: list[int] = []
    for item in (part.strip() for part in spec.split(",")):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"invalid seed list {spec!r}: {item!r} is not a seed or a range A-B; {hint}")
        first = int(match["first"])
        last = int(match["last"]) if match["last"] is not None else first
        if last < first:
            raise ValueError(
                f"invalid seed list {spec!r}: the range {item!r} goes down; write {last}-{first}"
            )
        seeds += range(first, last + 1)
    return _checked(seeds, f"invalid seed list {spec!r}")


_ITEM = re.compile(r"(?P<first>[0-9]+)\s*(?:-\s*(?P<last>[0-9]+))?")


def _checked(seeds: list[int], where: str) -> list[int]:
    """``seeds``, if there is one at least and each is a valid seed listed once."""
    if not seeds:
        raise ValueError(f"{where}: no seed; give at least one, e.g. 0-4")
    for seed in seeds:
        if not 0 <= seed < _MAX_SEED:
            raise ValueError(f"{where}: seeds go from 0 to {_MAX_SEED - 1} (numpy's limit), not {seed}")
    twice = [seed for seed, n in Counter(seeds).items() if n > 1]
    if twice:
        raise ValueError(f"{where}: seed {twice[0]} is listed twice; list each seed once")
    return seeds


def default_sweep_out(name: str, quick: bool = False) -> Path:
    """Where :func:`run_sweep` writes by default: ``runs/NAME-seeds`` (``runs/NAME-quick-seeds``)."""
    folder = default_out(name, quick)
    return folder.with_name(folder.name + "-seeds")


def _number(value: Any) -> float | None:
    """A measured value as a float (``metrics.json`` stores non-finite ones as strings)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _criteria(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each criterion's values over the runs (``docs`` in seed order), in order of first appearance."""
    rows: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for c in doc["checks"]:
            rows.setdefault(
                c["name"],
                {
                    "name": c["name"],
                    "op": c["op"],
                    "threshold": c["threshold"],
                    "claim": c.get("claim"),
                    "known_failure": c.get("known_failure"),
                },
            )
    for row in rows.values():
        found = [next((c for c in doc["checks"] if c["name"] == row["name"]), None) for doc in docs]
        row["measured"] = [None if c is None else c["measured"] for c in found]
        row["passed"] = [c is not None and bool(c["passed"]) for c in found]
        row["missing_seeds"] = [doc["seed"] for doc, c in zip(docs, found) if c is None]
        finite = sorted(v for v in map(_number, row["measured"]) if v is not None and math.isfinite(v))
        row["min"] = finite[0] if finite else None
        row["median"] = statistics.median(finite) if finite else None
        row["max"] = finite[-1] if finite else None
        row["passes"] = sum(row["passed"])
        row["runs"] = len(docs)
    return list(rows.values())


def run_sweep(
    name: str,
    seeds: Iterable[int] | str,
    *,
    quick: bool = False,
    out: str | Path | None = None,
    progress: bool = True,
    fresh: bool = False,
) -> dict[str, Any]:
    """Run the experiment ``name`` once per seed and summarise each criterion over the seeds.

    Each seed ``S`` runs as :func:`run_experiment` would (same tier, printing what it does and
    where its files go) into ``out/seed-S``; a rerun resumes from the checkpoints there
    (``fresh=True`` deletes them first). ``seeds`` is a list of seeds or a string for
    :func:`parse_seeds` (``"0-4"``). ``out`` defaults to :func:`default_sweep_out`.

    Returns the document also written to ``out/sweep.json`` (``sweep.md`` holds the same as a
    table): the experiment, tier, seeds, output folder, each run (seed, folder, passed, seconds) and, for each
    criterion, its comparison and threshold, each seed's measured value and pass, their
    minimum, median and maximum (over finite values) and how many seeds passed. ``"passed"`` is
    true when every seed passed every criterion, known failures aside (a criterion a seed did
    not record counts as failed).

    ```python
    doc = run_sweep("anode-g1d", "0-2", quick=True, out="/tmp/g1d-seeds")   # about 30 s
    [(c["name"], c["passes"], c["median"]) for c in doc["criteria"]]
    ```
    """
    exp = get(name)
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else _checked([int(s) for s in seeds], "run_sweep")
    folder = Path(out) if out is not None else default_sweep_out(name, quick)
    tier = "quick" if quick else "full"
    print(
        f"{name}: seed sweep over {len(seeds)} seeds ({', '.join(map(str, seeds))}), {tier} tier", flush=True
    )
    print(f"  {exp.title}; outputs in {folder}/seed-S", flush=True)
    docs, runs = [], []
    for i, seed in enumerate(seeds, 1):
        print(f"\n[{name}: seed {seed}, {i} of {len(seeds)}]", flush=True)
        seed_out = folder / f"seed-{seed}"
        doc = run_experiment(name, quick=quick, seed=seed, out=seed_out, progress=progress, fresh=fresh)
        docs.append(doc)
        runs.append({"seed": seed, "out": str(seed_out), "passed": doc["passed"], "seconds": doc["seconds"]})
        print(f"seed {seed}: {'passed' if doc['passed'] else 'FAILED'} in {doc['seconds']:.1f} s", flush=True)
    criteria = _criteria(docs)
    counted = [c for c in criteria if c["known_failure"] is None]
    sweep = {
        "experiment": name,
        "title": exp.title,
        "quick": quick,
        "seeds": seeds,
        "out": str(folder),
        "passed": bool(counted) and all(all(c["passed"]) for c in counted) and all(r["passed"] for r in runs),
        "runs": runs,
        "criteria": criteria,
    }
    (folder / "sweep.json").write_text(json.dumps(sweep, indent=2) + "\n")
    lines = [
        f"# Seed sweep: {exp.title} (`{name}`)",
        "",
        f"{tier.capitalize()} tier, seeds {', '.join(map(str, seeds))}. "
        f"**{'PASSED for every seed' if sweep['passed'] else 'FAILED'}**.",
        "",
        *sweep_table(sweep),
    ]
    notes = _footnotes(sweep)
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    reports = ", ".join(f"[seed {r['seed']}](seed-{r['seed']}/report.md)" for r in runs)
    lines += ["", f"Each seed's report: {reports}."]
    (folder / "sweep.md").write_text("\n".join(lines) + "\n")
    print(f"\nsweep: {folder / 'sweep.json'}", flush=True)
    print(f"sweep report: {folder / 'sweep.md'}", flush=True)
    return sweep


def _cell(measured: Any, passed: bool, known: bool) -> str:
    if measured is None:
        return "missing"
    mark = "PASS" if passed else "FAIL"
    if known:
        mark = "PASS (unexpected)" if passed else "FAIL (known)"
    return f"{_fmt(measured)} {mark}"


def sweep_table(sweep: dict[str, Any]) -> list[str]:
    """A sweep document's criteria as an aligned Markdown table: one row per criterion, a column
    per seed (measured value and mark), then the minimum, median and maximum and the pass count.

    A known failure's cells read ``FAIL (known)`` (``PASS (unexpected)`` where it reproduced).
    """
    header = ["criterion", "needed", *[f"seed {s}" for s in sweep["seeds"]], "min", "median", "max", "passed"]
    rows = []
    for c in sweep["criteria"]:
        known = c["known_failure"] is not None
        rows.append(
            [
                c["name"] + (" (known failure)" if known else ""),
                f"{c['op']} {_fmt(c['threshold'])}",
                *[_cell(m, p, known) for m, p in zip(c["measured"], c["passed"])],
                *["-" if c[k] is None else _fmt(c[k]) for k in ("min", "median", "max")],
                f"{c['passes']} of {c['runs']}",
            ]
        )
    cells = [[cell.replace("|", "\\|") for cell in row] for row in [header, *rows]]
    widths = [max(len(row[j]) for row in cells) for j in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


def _footnotes(sweep: dict[str, Any]) -> list[str]:
    """Lines about known failures, unexpected passes and criteria some seeds did not record."""
    notes = []
    for c in sweep["criteria"]:
        if c["known_failure"] is not None:
            passed = [s for s, p in zip(sweep["seeds"], c["passed"]) if p]
            if passed:
                notes.append(
                    f"{check_status(True, c['known_failure'])} for seeds {', '.join(map(str, passed))}: "
                    f"{c['name']}; recorded as not reproducing ({c['known_failure']}): update the documents"
                )
            if len(passed) < len(sweep["seeds"]):
                notes.append(f"{check_status(False, c['known_failure'])}: {c['name']}; {c['known_failure']}")
        if c["missing_seeds"]:
            seeds = ", ".join(map(str, c["missing_seeds"]))
            notes.append(f"{c['name']}: not recorded for seeds {seeds} (counted as failed)")
    return notes


def format_sweep(sweep: dict[str, Any]) -> Iterable[str]:
    """Console lines for a sweep document: the verdict, the criteria table and the notes."""
    tier = "quick" if sweep["quick"] else "full"
    failed = [r["seed"] for r in sweep["runs"] if not r["passed"]]
    verdict = "passed for every seed" if sweep["passed"] else "FAILED"
    if failed:
        verdict += f" (failed for seeds {', '.join(map(str, failed))})"
    yield f"{sweep['experiment']} ({tier} tier, {len(sweep['seeds'])} seeds): {verdict}"
    yield from sweep_table(sweep)
    for line in _footnotes(sweep):
        yield f"  {line}"
