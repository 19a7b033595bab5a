"""The ``torchnde`` console script: ``torchnde list``, ``torchnde run NAME``, ``torchnde demo``."""

from __future__ import annotations

import argparse
import sys

from .._optional import MissingDependency
from ._framework import format_checks, get, names, run_experiment


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchnde", description="torchnde experiments: reproductions of the papers"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments")
    run = sub.add_parser("run", help="run an experiment (or 'all')")
    run.add_argument("name", help="experiment name, or 'all'")
    run.add_argument("--quick", action="store_true", help="the small tier (about 90 s on 2 cores)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default=None, help="output folder (default runs/NAME[-quick])")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo = sub.add_parser("demo", help="the main job: equation discovery on Lotka-Volterra")
    demo.add_argument("--quick", action="store_true")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (1 if a run failed a criterion, 2 if it could not
    start: an unknown name, or an optional dependency missing)."""
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except MissingDependency as err:
        print(err, file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.command == "list":
        for name in names():
            exp = get(name)
            print(f"{name:24s} {exp.title}  [{exp.paper}]")
        return 0
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(quick=args.quick, seed=args.seed, out=args.out)
    todo = names() if args.name == "all" else [args.name]
    try:
        [get(n) for n in todo]
    except KeyError as err:
        print(err.args[0], file=sys.stderr)
        return 2
    failed = []
    for name in todo:
        out = args.out if len(todo) == 1 or args.out is None else f"{args.out}/{name}"
        doc = run_experiment(name, quick=args.quick, seed=args.seed, out=out, progress=not args.no_progress)
        print(f"{name}: {'passed' if doc['passed'] else 'FAILED'} in {doc['seconds']:.1f} s")
        for line in format_checks(doc):
            print(line)
        if not doc["passed"]:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
