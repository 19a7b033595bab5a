"""Interleaved A/B timing of torchnde against another checkout (a refactor's "no slowdown" check):
``python -m benchmarks.ab --base /path/to/other/checkout [--rounds 40]``.

Two worker processes, one importing each checkout's ``src/``, receive the same requests in
alternating order (A B B A ...), one at a time, so machine noise falls on both sides alike.
Each request times one case for a fixed number of calls; the table reports each side's median
time per solve (per step for ``rk4``) and the ratio new/base. The problems are the core
benchmarks' (``benchmarks.problems``): MLP 2-64-64-2 neural ODE, dopri5 at rtol 1e-5, atol 1e-7,
one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

import torchnde as nde

from .problems import ATOL, RTOL, neural_ode, rk4_problem

CASES = (
    "node_fwd/no_grad/b16",
    "node_fwd/no_grad/b1024",
    "node_fwd/grad/b16",
    "node_fwd/grad/b1024",
    "per_sample/no_grad/b1024",
    "rk4/no_grad/b1",
)


def _runner(case: str) -> Any:
    """A zero-argument callable running ``case`` once (in a worker: ``nde`` is its checkout's)."""
    if case.startswith("rk4"):
        p = rk4_problem()
        return lambda: nde.solve(p.field, p.y0, p.t_eval, solver="rk4", dt=1e-3)
    group, mode, batch = case.split("/")
    p = neural_ode(int(batch[1:]))
    grad, per_sample = mode == "grad", group == "per_sample"

    def run() -> Any:
        with torch.set_grad_enabled(grad):
            return nde.solve(p.field, p.y0, p.t_eval, "dopri5", rtol=RTOL, atol=ATOL, per_sample=per_sample)

    return run


def worker() -> None:
    """Answer ``case calls`` lines with the seconds per call."""
    torch.set_num_threads(1)
    runners: dict[str, Any] = {}
    for line in sys.stdin:
        case, calls = line.split()
        run = runners.get(case)
        if run is None:
            run = runners[case] = _runner(case)
            for _ in range(3):
                run()
        start = time.perf_counter()
        for _ in range(int(calls)):
            run()
        print((time.perf_counter() - start) / int(calls), flush=True)


class _Side:
    def __init__(self, src: Path):
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{Path(__file__).resolve().parents[1]}"}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from benchmarks.ab import worker; worker()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip

    def time(self, case: str, calls: int) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{case} {calls}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the other checkout (its src/ is imported)")
    parser.add_argument("--new", default=str(Path(__file__).resolve().parents[1]), help="default: this one")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--only", nargs="*", default=list(CASES))
    parser.add_argument("--out", default=None, help="write the medians as JSON here")
    args = parser.parse_args(argv)
    sides = {"base": _Side(Path(args.base) / "src"), "new": _Side(Path(args.new) / "src")}
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for case in args.only:
            probe = sides["new"].time(case, 1)
            calls = max(1, int(0.05 / probe))  # about 50 ms a sample
            times: dict[str, list[float]] = {"base": [], "new": []}
            for r in range(args.rounds):
                order = ("base", "new") if r % 2 == 0 else ("new", "base")
                for name in order:
                    times[name].append(sides[name].time(case, calls))
            results[case] = times
            _print_row(case, times)
    finally:
        for side in sides.values():
            side.close()
    if args.out:
        medians = {c: {k: statistics.median(v) for k, v in t.items()} for c, t in results.items()}
        Path(args.out).write_text(json.dumps(medians, indent=2))


def _print_row(case: str, times: dict[str, list[float]]) -> None:
    per_step = 1000 if case.startswith("rk4") else 1
    base, new = (statistics.median(times[k]) / per_step for k in ("base", "new"))
    unit = "per step" if per_step > 1 else "per solve"
    print(f"| {case} | {base * 1e6:,.1f} µs | {new * 1e6:,.1f} µs | {new / base:.3f} | {unit} |", flush=True)


if __name__ == "__main__":
    print("| case | base | new | new/base | |\n|---|---:|---:|---:|---|")
    main()
