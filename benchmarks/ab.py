"""Interleaved A/B timing of torchnde against another checkout (a refactor's "no slowdown" check):
``python -m benchmarks.ab --base /path/to/other/checkout [--rounds 40] [--only CASE ...]``.

Both checkouts' ``src/torchnde`` are loaded into *one* process, under the names
``torchnde_base`` and ``torchnde_new`` (their internal imports are relative, so each copy runs
its own code), and every case alternates between them (A B B A ...), each sample lasting about
50 ms. One process matters: the speed of the same code differs by up to 15% from one process to
the next at batch 1024 (measured here: the MLP's ``linear`` and ``tanh`` kernels run slower or
faster depending on where the allocator happens to place their buffers, which shifts with
anything imported, even an unrelated ``import json``), so two processes compare memory
layouts, not code. The table reports each side's median time per solve (per step for ``rk4``)
and the ratio new/base. The problems are the core benchmarks' (``benchmarks.problems``): MLP
2-64-64-2 neural ODE, dopri5 at rtol 1e-5, atol 1e-7, one thread.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from .problems import ATOL, RTOL, neural_ode, rk4_problem

CASES = (
    "node_fwd/no_grad/b16",
    "node_fwd/no_grad/b1024",
    "node_fwd/grad/b16",
    "node_fwd/grad/b1024",
    "per_sample/no_grad/b1024",
    "rk4/no_grad/b1",
    "train/backprop/b256",
    "train/adjoint/b256",
)


def load_as(name: str, checkout: Path) -> ModuleType:
    """``checkout/src/torchnde`` imported as the package ``name``."""
    init = checkout / "src" / "torchnde" / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    if spec is None or spec.loader is None:
        raise SystemExit(f"no torchnde package under {checkout}/src")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def runner(nde: ModuleType, case: str) -> Any:
    """A zero-argument callable running ``case`` once with the package ``nde``."""
    if case.startswith("rk4"):
        p = rk4_problem()
        return lambda: nde.solve(p.field, p.y0, p.t_eval, solver="rk4", dt=1e-3)
    if case.startswith("train"):
        return _training_step(nde, case.split("/")[1])
    group, mode, batch = case.split("/")
    p = neural_ode(int(batch[1:]))
    grad, per_sample = mode == "grad", group == "per_sample"

    def run() -> Any:
        with torch.set_grad_enabled(grad):
            return nde.solve(p.field, p.y0, p.t_eval, "dopri5", rtol=RTOL, atol=ATOL, per_sample=per_sample)

    return run


def _training_step(nde: ModuleType, strategy: str) -> Any:
    """The training rows' iteration (``benchmarks.training``): solve at batch 256, an MSE loss on
    the 10 saved points against a fixed target, backward, gradients cleared."""
    from .training import training_problem

    p, target = training_problem()
    params = tuple(p.field.parameters())
    gradient = nde.Backprop() if strategy == "backprop" else nde.Adjoint(params=params)

    def run() -> Any:
        ys = nde.solve(p.field, p.y0, p.t_eval, "dopri5", rtol=RTOL, atol=ATOL, gradient=gradient).ys
        (ys - target).square().mean().backward()
        p.field.zero_grad(set_to_none=True)
        return ys

    return run


def _sample(run: Any, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the other checkout (its src/torchnde is loaded)")
    parser.add_argument("--new", default=str(Path(__file__).resolve().parents[1]), help="default: this one")
    parser.add_argument("--rounds", type=int, default=40, help="samples per side and case")
    parser.add_argument("--only", nargs="*", default=list(CASES))
    parser.add_argument("--out", default=None, help="write the medians as JSON here")
    parser.add_argument("--new-first", action="store_true", help="load the new checkout first")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    new = load_as("torchnde_new", Path(args.new)) if args.new_first else None
    libs = {"base": load_as("torchnde_base", Path(args.base))}
    libs["new"] = new if new is not None else load_as("torchnde_new", Path(args.new))
    print("| case | base | new | new/base | |\n|---|---:|---:|---:|---|", flush=True)
    medians: dict[str, dict[str, float]] = {}
    for case in args.only:
        runs = {name: runner(lib, case) for name, lib in libs.items()}
        for run in runs.values():  # warm-up (and caches) on both sides
            run(), run()
        calls = max(1, int(0.05 / _sample(runs["new"], 1)))  # about 50 ms a sample
        times: dict[str, list[float]] = {"base": [], "new": []}
        for r in range(args.rounds):
            for name in ("base", "new") if r % 2 == 0 else ("new", "base"):
                times[name].append(_sample(runs[name], calls))
        medians[case] = {k: statistics.median(v) for k, v in times.items()}
        _print_row(case, medians[case])
    if args.out:
        Path(args.out).write_text(json.dumps(medians, indent=2))


def _print_row(case: str, median: dict[str, float]) -> None:
    per_step = 1000 if case.startswith("rk4") else 1
    base, new = (median[k] / per_step for k in ("base", "new"))
    unit = "per step" if per_step > 1 else "per solve"
    print(f"| {case} | {base * 1e6:,.1f} µs | {new * 1e6:,.1f} µs | {new / base:.3f} | {unit} |", flush=True)


if __name__ == "__main__":
    main()
