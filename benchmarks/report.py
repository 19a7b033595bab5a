"""Result rows, ratios, and the JSON/markdown outputs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .common import Candidate, Probe, Timing, fmt_time


@dataclass
class Row:
    key: str
    label: str
    median_s: float | None = None
    min_s: float | None = None
    first_call_s: float | None = None
    repeats: int = 0
    inner: int = 1  # back-to-back calls per timed sample
    calls: int | None = None
    nfe: int | None = None
    steps: int | None = None
    per_step_median_s: float | None = None
    max_abs_err: float | None = None
    ratio: float | None = None  # subject / this row (per step in per-step groups)
    error: str | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    times_s: list[float] = field(default_factory=list)


@dataclass
class GroupResult:
    key: str
    title: str
    problem: str
    subject: str
    per_step: bool
    rows: list[Row]
    targets: dict[str, float]
    wall_s: float = 0.0  # the whole group: build, first calls, warm-up, repeats, probes


def make_row(cand: Candidate, timing: Timing, probe: Probe | None, reference: np.ndarray) -> Row:
    row = Row(cand.key, cand.label, timing.median_s, timing.min_s, timing.first_call_s, len(timing.times_s))
    row.times_s, row.inner = timing.times_s, timing.inner
    row.error, row.note = cand.error, cand.note
    if probe is not None:
        row.calls, row.nfe, row.steps, row.extra = probe.calls, probe.nfe, probe.steps, probe.extra
        if probe.y_final is not None:
            row.max_abs_err = float(np.max(np.abs(np.asarray(probe.y_final, dtype=np.float64) - reference)))
    if row.median_s is not None and row.steps:
        row.per_step_median_s = row.median_s / row.steps
    return row


def fill_ratios(result: GroupResult) -> None:
    def metric(row: Row) -> float | None:
        return row.per_step_median_s if result.per_step else row.median_s

    subject = next((r for r in result.rows if r.key == result.subject), None)
    top = metric(subject) if subject is not None else None
    for row in result.rows:
        bottom = metric(row)
        row.ratio = top / bottom if top is not None and bottom else None


def acceptance(results: list[GroupResult]) -> list[dict[str, Any]]:
    out = []
    for res in results:
        rows = {r.key: r for r in res.rows}
        for peer, target in res.targets.items():
            ratio = rows[peer].ratio if peer in rows else None
            out.append(
                {
                    "group": res.key,
                    "subject": res.subject,
                    "peer": peer,
                    "metric": "median time per step" if res.per_step else "median time per solve",
                    "target": target,
                    "ratio": ratio,
                    "met": None if ratio is None else ratio <= target,
                }
            )
    return out


def write_json(path: Path, meta: dict[str, Any], results: list[GroupResult]) -> None:
    payload = {"meta": meta, "groups": [asdict(r) for r in results], "acceptance": acceptance(results)}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def _int(x: int | None) -> str:
    return "—" if x is None else str(x)


def _err(x: float | None) -> str:
    return "—" if x is None else f"{x:.1e}"


def _ratio(row: Row, subject: str) -> str:
    if row.key == subject:
        return "(subject)"
    return "—" if row.ratio is None else f"{row.ratio:.2f}"


def markdown(meta: dict[str, Any], results: list[GroupResult]) -> str:
    lines = [
        "# torchnde core benchmarks",
        "",
        f"Mode **{meta['mode']}** ({meta['settings']}), {meta['date']}, {meta['platform']}, "
        f"one thread per library. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + ".",
        "",
        "Times are medians (and minima) over interleaved samples, after warm-up; a sample is the mean "
        "over back-to-back calls lasting at least the sample time above (the JSON has the count); "
        "*first call* is the "
        "first, untimed-for-the-median call (it includes any compilation). *calls* = batched "
        "vector-field calls counted by a wrapper; *nfe*/*steps* = what the library reports (per-sample "
        "libraries: the maximum over samples). *max err* = max |y(1) - reference| against scipy DOP853 "
        "at rtol 1e-11. *ratio* = torchnde (the subject row) / this row; lower is better for torchnde.",
        "",
        "| case | library | median | min | first call | per step | calls | nfe | steps | max err | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        for i, row in enumerate(res.rows):
            case = f"`{res.key}`" if i == 0 else ""
            if row.error is not None:
                lines.append(
                    f"| {case} | {row.label} | error: {row.error.replace('|', '/')} | | | | | | | | |"
                )
                continue
            label = row.label + (f" ({row.note})" if row.note else "")
            lines.append(
                f"| {case} | {label} | {fmt_time(row.median_s)} | {fmt_time(row.min_s)} | "
                f"{fmt_time(row.first_call_s)} | {fmt_time(row.per_step_median_s) if res.per_step else ''} | "
                f"{_int(row.calls)} | {_int(row.nfe)} | {_int(row.steps)} | {_err(row.max_abs_err)} | "
                f"{_ratio(row, res.subject)} |"
            )
    lines += [
        "",
        "## Acceptance targets",
        "",
        "| case | compared | metric | target | ratio | met |",
        "|---|---|---|---:|---:|---|",
    ]
    for acc in acceptance(results):
        ratio = "—" if acc["ratio"] is None else f"{acc['ratio']:.2f}"
        met = "n/a" if acc["met"] is None else ("yes" if acc["met"] else "**no**")
        lines.append(
            f"| `{acc['group']}` | {acc['subject']} / {acc['peer']} | {acc['metric']} | ≤ {acc['target']} | {ratio} | {met} |"
        )
    notes = meta.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
