"""The ``torchnde`` console script: ``torchnde list``, ``torchnde run NAME``, ``torchnde demo``.

Each run prints what it is about to do first, then every stage with its progress (a tqdm bar on
a terminal, plain lines every few seconds otherwise; ``--no-progress`` hides them), announces
checkpoints it reuses (``--fresh`` retrains), and ends with the criteria and the path of every
file it wrote.

```python
from torchnde.experiments.cli import main
main(["run", "anode-g1d", "--quick", "--out", "/tmp/g1d"])   # 0 if every criterion passed
```
"""

from __future__ import annotations

import argparse
import sys

from ._framework import default_out, format_checks, format_outputs, get, names, run_experiment


def _common(parser: argparse.ArgumentParser, out_help: str, quick_help: str) -> None:
    """The flags ``run`` and ``demo`` share."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--seed", type=int, default=0, help="seed of every random generator (default 0)")
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
        "output folder (default runs/NAME, runs/NAME-quick with --quick; with 'all', DIR/NAME each)",
        "the small tier: fewer steps, looser criteria (10 s to 2 min each on 2 cores)",
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
    """Entry point; returns the exit status (1 if a run failed a criterion)."""
    args = _parser().parse_args(argv)
    if args.command == "list":
        for name in names():
            exp = get(name)
            print(f"{name:24s} {exp.title}  [{exp.paper}]")
        return 0
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(
            quick=args.quick, seed=args.seed, out=args.out, progress=not args.no_progress, fresh=args.fresh
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
        folder = out if out is not None else default_out(name, args.quick)
        doc = run_experiment(
            name,
            quick=args.quick,
            seed=args.seed,
            out=folder,
            progress=not args.no_progress,
            fresh=args.fresh,
        )
        print(f"{name}: {'passed' if doc['passed'] else 'FAILED'} in {doc['seconds']:.1f} s")
        for line in format_checks(doc):
            print(line)
        print("Outputs:")
        for line in format_outputs(doc, folder):
            print(line)
        print(flush=True)
        if not doc["passed"]:
            failed.append(name)
    if len(todo) > 1:
        print(
            f"{len(todo) - len(failed)} of {len(todo)} experiments passed"
            + (f"; failed: {', '.join(failed)}" if failed else "")
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
