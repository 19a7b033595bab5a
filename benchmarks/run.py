"""Run the core benchmarks: ``python -m benchmarks.run [--quick] [--out benchmarks/results]``.

Writes ``core.json`` (every timing, counter and ratio) and ``core.md`` (the table, also printed).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from .common import Settings, configure_threads, short_error

QUICK = Settings(
    warmup=2, repeats=7, min_repeats=3, group_budget_s=3.0, min_sample_s=0.005, compile_timeout_s=300.0
)
FULL = Settings(
    warmup=5, repeats=60, min_repeats=15, group_budget_s=20.0, min_sample_s=0.02, compile_timeout_s=600.0
)

NOTES = [
    "Neural ODE: MLP 2-64-64-2 (tanh), torch.manual_seed(0) weights shared by every library (diffrax "
    "and scipy get copies), y0 = randn(batch, 2) from a generator seeded with 1, dopri5 at rtol 1e-5, "
    "atol 1e-7, outputs at torch.linspace(0, 1, 10), float32 (scipy: float64).",
    "torchnde and torchdiffeq control one step size for the whole batch (RMS error norm over all of "
    "it); torchode always steps each sample separately, with per-sample t_eval [batch, 10]; diffrax "
    "solves the batch as one state (RMS norm over all of it); scipy solves the flattened batch as one "
    "system in float64 numpy.",
    "diffrax: Dopri5 + PIDController(rtol, atol), dt0=None, SaveAt(ts), jit-compiled; its first call "
    "is the compile and is excluded from the median; it reports steps but not NFE.",
    "grad rows: the parameters require grad, so each solve records the autograd graph (no backward).",
    "compile rows: torch._dynamo.reset(), then fc = torch.compile(f, dynamic=False) shared by torchnde "
    "and torchdiffeq; first call = compile (+ recompile for a new guard), excluded from the median.",
    "RK4: MLP 2-16-2 (tanh), batch 1, 1000 steps of dt = 1e-3. The hand-written loop passes 0-d tensor "
    "times built with torch.tensor per step and updates y = y + dt/6*(k1 + 2k2 + 2k3 + k4). torchdiffeq's "
    "'rk4' is the 3/8-rule variant (also 4 evaluations per step); its steps are derived as calls / 4.",
]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "torchnde", "torchdiffeq", "torchode", "numpy", "scipy", "jax", "diffrax"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git_commit() -> str | None:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + (" (src modified)" if dirty.stdout.strip() else "")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="few repeats, for development (noisy)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output folder")
    p.add_argument(
        "--only", nargs="*", default=None, metavar="TEXT", help="run only groups whose key contains TEXT"
    )
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile groups")
    p.add_argument("--repeats", type=int, default=None, help="override the number of repeats")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_threads()  # before torch does any work and before jax is imported

    import torch

    from .cases import all_groups
    from .common import measure_group
    from .problems import reference_final
    from .report import GroupResult, fill_ratios, make_row, markdown, write_json

    settings = QUICK if args.quick else FULL
    if args.repeats is not None:
        settings = replace(
            settings, repeats=args.repeats, min_repeats=min(settings.min_repeats, args.repeats)
        )
    groups = all_groups(settings.compile_timeout_s, with_compile=not args.no_compile)
    if args.only:
        groups = [g for g in groups if any(s in g.key for s in args.only)]

    started = time.perf_counter()
    references: dict[str, Any] = {}
    results: list[GroupResult] = []
    for i, group in enumerate(groups, 1):
        _log(f"[{i}/{len(groups)}] {group.key}: {group.title}")
        group_start = time.perf_counter()
        if group.problem.name not in references:
            references[group.problem.name] = reference_final(group.problem)
        candidates = group.build()
        timings = measure_group(candidates, settings, _log)
        rows = []
        for cand in candidates:
            probe = None
            if cand.error is None and cand.probe is not None:
                try:
                    probe = cand.probe()
                except Exception as err:
                    cand.note = (
                        cand.note + "; " if cand.note else ""
                    ) + f"probe failed: {short_error(err, 80)}"
            rows.append(make_row(cand, timings[cand.key], probe, references[group.problem.name]))
        result = GroupResult(
            group.key, group.title, group.problem.name, group.subject, group.per_step, rows, group.targets
        )
        fill_ratios(result)
        result.wall_s = round(time.perf_counter() - group_start, 1)
        for row in rows:
            shown = row.per_step_median_s if group.per_step else row.median_s
            ratio = "" if row.ratio is None or row.key == group.subject else f"  ratio {row.ratio:.2f}"
            status = f"error: {row.error}" if row.error else f"{(shown or 0) * 1e3:9.3f} ms{ratio}"
            _log(f"    {row.label:<48} {status}")
        _log(f"    ({result.wall_s} s, {min((r.repeats for r in rows if r.repeats), default=0)}+ repeats)")
        results.append(result)
        del candidates

    meta = {
        "mode": "quick" if args.quick else "full",
        "settings": f"warm-up {settings.warmup}, up to {settings.repeats} repeats "
        f"(at least {settings.min_repeats}, {settings.group_budget_s:g} s of timed work per case), "
        f"each sample at least {settings.min_sample_s * 1e3:g} ms of back-to-back calls",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "platform": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "git": _git_commit(),
        "versions": _versions(),
        "wall_s": round(time.perf_counter() - started, 1),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.run", *(argv or sys.argv[1:])]),
        "notes": NOTES,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "core.json", meta, results)
    table = markdown(meta, results)
    (args.out / "core.md").write_text(table)
    print(table)
    _log(f"wrote {args.out / 'core.json'} and {args.out / 'core.md'} in {meta['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
