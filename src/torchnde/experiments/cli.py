"""The ``torchnde`` console script: ``torchnde list``, ``torchnde run NAME``, ``torchnde demo``.

Each run prints what it is about to do first, then every stage with its progress (a tqdm bar on
a terminal, plain lines every few seconds otherwise; ``--no-progress`` hides them), announces
checkpoints it reuses (``--fresh`` retrains), and ends with the criteria and the path of every
file it wrote. ``torchnde run NAME --seeds 0-4`` runs a seed sweep (one run per seed) and ends
with a table of every criterion over the seeds (:mod:`torchnde.experiments._sweep`).

```python
from torchnde.experiments.cli import main
main(["run", "anode-g1d", "--quick", "--out", "/tmp/g1d"])   # 0 if every criterion passed
main(["run", "anode-g1d", "--quick", "--seeds", "0-2"])      # 0 if they passed for every seed
```
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .._optional import MissingDependency
from ._framework import default_out, format_checks, format_outputs, get, names, run_experiment
from ._sweep import format_sweep, parse_seeds, run_sweep


def _common(parser: argparse.ArgumentParser, out_help: str, quick_help: str) -> None:
    """The flags ``run`` and ``demo`` share."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--seed", type=int, default=None, help="seed of every random generator (default 0)")
    parser.add_argument("--out", default=None, metavar="DIR", help=out_help)
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide progress bars and periodic progress lines (stage messages and paths still print)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete the output folder's checkpoints and train from the start "
        "(by default a rerun resumes from them)",
    )


def _seed_list(spec: str) -> list[int]:
    """``--seeds``' parser: :func:`parse_seeds`, its message shown by argparse."""
    try:
        return parse_seeds(spec)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchnde", description="torchnde experiments: reproductions of the papers' claims"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")
    sub.add_parser("list", help="list the experiments", description="List the registered experiments.")
    run = sub.add_parser(
        "run",
        help="run an experiment (or 'all')",
        description="Run an experiment: train, measure, check its criteria, write report.md, "
        "metrics.json and figures.",
    )
    run.add_argument("name", help="experiment name (see 'torchnde list'), or 'all'")
    _common(
        run,
        "output folder (default runs/NAME, runs/NAME-quick with --quick, runs/NAME[-quick]-seeds "
        "with --seeds; with 'all', DIR/NAME each)",
        "the small tier: fewer steps, looser criteria (10 s to 2 min each on 2 cores)",
    )
    run.add_argument(
        "--seeds",
        type=_seed_list,
        default=None,
        metavar="LIST",
        help="a seed sweep: run once per seed (e.g. 0-4, 0,3,7 or 1-3,9), each into DIR/seed-S, "
        "then print each criterion's value per seed, its min/median/max and how many seeds passed "
        "(also in DIR/sweep.json and DIR/sweep.md); not with --seed",
    )
    demo = sub.add_parser(
        "demo",
        help="the main job: equation discovery on Lotka-Volterra",
        description="A universal differential equation learns the missing terms of a predator-prey "
        "model from 31 noisy points; sparse regression turns them into equations.",
    )
    _common(
        demo, "output folder (default runs/demo)", "the small tier (about 1.5 min on 2 cores instead of 3)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (1 if a run failed a criterion, for any seed; 2 if
    it could not start: an unknown name, or an optional dependency missing)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _main(args, parser)
    except MissingDependency as err:
        print(err, file=sys.stderr)
        return 2


def _main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "list":
        for name in names():
            exp = get(name)
            print(f"{name:24s} {exp.title}  [{exp.paper}]")
        return 0
    if getattr(args, "seeds", None) is not None and args.seed is not None:
        parser.error(
            "--seed and --seeds exclude each other: --seed S runs one seed, --seeds LIST a sweep "
            "(e.g. --seeds 0-4); give one of them"
        )
    seed = 0 if args.seed is None else args.seed
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(
            quick=args.quick, seed=seed, out=args.out, progress=not args.no_progress, fresh=args.fresh
        )
    todo = names() if args.name == "all" else [args.name]
    try:
        [get(n) for n in todo]
    except KeyError as err:
        print(err.args[0], file=sys.stderr)
        return 2
    failed = []
    for name in todo:
        out = args.out if len(todo) == 1 or args.out is None else f"{args.out}/{name}"
        passed = _run_one(name, args, seed, out) if args.seeds is None else _sweep_one(name, args, out)
        if not passed:
            failed.append(name)
    if len(todo) > 1:
        every = " for every seed" if args.seeds is not None else ""
        print(
            f"{len(todo) - len(failed)} of {len(todo)} experiments passed{every}"
            + (f"; failed: {', '.join(failed)}" if failed else "")
        )
    return 1 if failed else 0


def _run_one(name: str, args: argparse.Namespace, seed: int, out: str | None) -> bool:
    """``torchnde run NAME``: one run, its criteria and output paths printed; whether it passed."""
    folder = out if out is not None else default_out(name, args.quick)
    doc = run_experiment(
        name, quick=args.quick, seed=seed, out=folder, progress=not args.no_progress, fresh=args.fresh
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: rank 0 reports
        return doc["passed"]
    print(f"{name}: {'passed' if doc['passed'] else 'FAILED'} in {doc['seconds']:.1f} s")
    for line in format_checks(doc):
        print(line)
    print("Outputs:")
    for line in format_outputs(doc, folder):
        print(line)
    print(flush=True)
    return doc["passed"]


def _sweep_one(name: str, args: argparse.Namespace, out: str | None) -> bool:
    """``torchnde run NAME --seeds LIST``: a sweep, its table printed; whether every seed passed."""
    sweep = run_sweep(
        name, args.seeds, quick=args.quick, out=out, progress=not args.no_progress, fresh=args.fresh
    )
    print()
    for line in format_sweep(sweep):
        print(line)
    folder = Path(sweep["out"])
    print("Outputs:")
    print(f"  sweep        {folder / 'sweep.json'}")
    print(f"  sweep report {folder / 'sweep.md'}")
    for run in sweep["runs"]:
        print(f"  seed {run['seed']:<7d} {run['out']}")
    print(flush=True)
    return sweep["passed"]


if __name__ == "__main__":
    sys.exit(main())
