"""The experiment harness: a registry, the run context, checks, figures, reports, resumable training.

An experiment is a function ``fn(run: Run) -> None`` registered with :func:`experiment`. It
builds its data and models, trains them with :meth:`Run.train` (progress bar, checkpoints a rerun
resumes from), records numbers with :meth:`Run.metric`, pass criteria with :meth:`Run.check`
(measured value, threshold, the paper's claim) and figures with :meth:`Run.figure`. The harness
writes ``metrics.json`` and a ``report.md`` that embeds the figures.
"""

from __future__ import annotations

import json
import math
import operator
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._names import did_you_mean
from .._optional import MissingDependency, install_hint, missing, require

__all__ = ["Check", "Experiment", "Run", "experiment", "get", "names", "run_experiment"]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


@dataclass
class Check:
    """One pass criterion: ``measured <op> threshold``, with the published figure beside it."""

    name: str
    measured: Any
    op: str
    threshold: Any
    passed: bool
    claim: str | None = None


@dataclass(frozen=True)
class Experiment:
    """A registered reproduction: its name, what it shows, the paper and the runner."""

    name: str
    title: str
    paper: str
    claim: str
    fn: Callable[[Run], None]
    threads: int | None = 1


_REGISTRY: dict[str, Experiment] = {}


def experiment(name: str, *, title: str, paper: str, claim: str, threads: int | None = 1) -> Callable:
    """Register ``fn(run)`` as the experiment ``name`` (``torchnde run NAME``).

    ``threads``: torch's intra-op threads while it runs (restored after). Default 1: the
    models of these reproductions multiply matrices of a few dozen rows, where a second
    thread only adds synchronisation (measured 10-20x slower steps on a shared 2-core
    machine); ``None`` leaves torch's setting alone (large convolutional models).
    """

    def register(fn: Callable[[Run], None]) -> Callable[[Run], None]:
        if name in _REGISTRY:
            raise ValueError(f"experiment {name!r} is registered twice")
        _REGISTRY[name] = Experiment(name, title, paper, claim, fn, threads)
        return fn

    return register


def _load_all() -> None:
    from . import registry  # noqa: F401  (imports every experiment module)


def names() -> list[str]:
    """The registered experiment names, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> Experiment:
    """The experiment ``name``; an unknown name lists the valid ones."""
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(
            f"unknown experiment {name!r}; valid: {', '.join(sorted(_REGISTRY))}.{did_you_mean(name, _REGISTRY)}"
        )
    return _REGISTRY[name]


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class _Bar:
    """A progress bar on stderr (``tqdm`` when installed, a plain line otherwise)."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool) -> None:
        self.enabled = enabled
        self.total, self.n, self.desc = total, initial, desc
        self._tqdm = None
        self._last = 0.0
        if not enabled:
            return
        try:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)
        except ImportError:
            pass

    def update(self, info: dict[str, Any]) -> None:
        self.n += 1
        if not self.enabled:
            return
        post = {k: _fmt(float(v)) for k, v in info.items() if isinstance(v, (int, float))}
        if self._tqdm is not None:
            self._tqdm.set_postfix(post, refresh=False)
            self._tqdm.update(1)
        elif time.monotonic() - self._last > 1.0 or self.n == self.total:
            self._last = time.monotonic()
            print(f"\r{self.desc} {self.n}/{self.total} {post}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.enabled:
            print(file=sys.stderr)


@dataclass
class Run:
    """What an experiment gets: where to write, how big to be, and the recording methods.

    - ``out``: the output folder (``metrics.json``, ``report.md``, PNGs, ``checkpoints/``).
    - ``quick``: the small tier (about 90 s on 2 cores, looser criteria).
    - ``seed``: every generator is seeded from it before the experiment starts.
    - ``progress``: show progress bars.
    """

    out: Path
    quick: bool = False
    seed: int = 0
    progress: bool = True
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` in the quick tier, ``full`` otherwise."""
        return quick if self.quick else full

    def generator(self, offset: int = 0) -> torch.Generator:
        """A torch generator seeded from the run's seed (+ ``offset``)."""
        return torch.Generator().manual_seed(self.seed * 1000 + offset)

    def metric(self, name: str, value: Any) -> Any:
        """Record a measured number (or list, dict) under ``name``."""
        self.metrics[name] = _jsonable(value)
        return value

    def check(self, name: str, measured: Any, op: str, threshold: Any, claim: str | None = None) -> bool:
        """Record the criterion ``measured <op> threshold`` and whether it passed."""
        if op not in _OPS:
            raise ValueError(f"unknown comparison {op!r}; valid: {', '.join(_OPS)}.{did_you_mean(op, _OPS)}")
        value = float(measured) if isinstance(measured, (torch.Tensor, np.generic)) else measured
        passed = bool(math.isfinite(float(value)) and _OPS[op](value, threshold))
        self.checks.append(Check(name, _jsonable(value), op, threshold, passed, claim))
        return passed

    def note(self, text: str) -> None:
        """A line of prose for the report (and the console)."""
        self.notes.append(text)

    def figure(self, name: str, fig: Any, caption: str = "") -> Path:
        """Save a matplotlib figure as ``out/name.png`` and embed it in the report."""
        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.figures.append((path.name, caption))
        return path

    def train(
        self,
        tag: str,
        step: Callable[[int], dict[str, Any]],
        steps: int,
        state: dict[str, Any],
        *,
        every: int = 50,
    ) -> list[dict[str, Any]]:
        """Call ``step(i)`` for ``i`` in ``range(steps)``, resumable.

        ``step`` returns a dict of numbers (``loss``, ``nfe``, ...) shown on the progress bar
        and returned as the history. ``state`` maps names to objects with ``state_dict`` /
        ``load_state_dict`` (models, optimizers, schedulers): every ``every`` steps they are
        saved with the history and the RNG states to ``out/checkpoints/tag.pt``; a rerun loads
        that file and continues from where it stopped (a finished stage is skipped entirely).
        """
        path = self.out / "checkpoints" / f"{tag}.pt"
        history: list[dict[str, Any]] = []
        start = 0
        if path.exists():
            saved = torch.load(path, weights_only=False)
            for key, obj in state.items():
                obj.load_state_dict(saved["state"][key])
            history, start = saved["history"], saved["step"]
            torch.set_rng_state(saved["rng"])
            np.random.set_state(saved["np_rng"])
            random.setstate(saved["py_rng"])

        def save(i: int) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            blob = {
                "state": {k: v.state_dict() for k, v in state.items()},
                "history": history,
                "step": i,
                "rng": torch.get_rng_state(),
                "np_rng": np.random.get_state(),
                "py_rng": random.getstate(),
            }
            torch.save(blob, str(path) + ".tmp")
            os.replace(str(path) + ".tmp", path)

        bar = _Bar(steps, start, tag, self.progress and start < steps)
        for i in range(start, steps):
            info = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in step(i).items()}
            history.append(info)
            bar.update(info)
            if (i + 1) % every == 0 or i + 1 == steps:
                save(i + 1)
        bar.close()
        return history

    # -- output ---------------------------------------------------------------------------

    @property
    def passed(self) -> bool:
        """True if every check passed (and there was at least one)."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    def write(self, exp: Experiment, seconds: float) -> dict[str, Any]:
        """Write ``metrics.json`` and ``report.md``; return the metrics document."""
        doc = {
            "experiment": exp.name,
            "title": exp.title,
            "paper": exp.paper,
            "published_claim": exp.claim,
            "quick": self.quick,
            "seed": self.seed,
            "seconds": round(seconds, 2),
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "metrics": self.metrics,
            "notes": self.notes,
        }
        (self.out / "metrics.json").write_text(json.dumps(_jsonable(doc), indent=2) + "\n")
        lines = [
            f"# {exp.title} (`{exp.name}`)",
            "",
            f"*{exp.paper}*. Published claim: {exp.claim}",
            "",
            f"Tier: {'quick' if self.quick else 'full'}, seed {self.seed}, {seconds:.1f} s. "
            f"**{'PASSED' if self.passed else 'FAILED'}**.",
            "",
            "| criterion | measured | needed | passed | published |",
            "|---|---|---|---|---|",
        ]
        for c in self.checks:
            lines.append(
                f"| {c.name} | {_fmt(c.measured)} | {c.op} {_fmt(c.threshold)} | "
                f"{'yes' if c.passed else 'NO'} | {c.claim or ''} |"
            )
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        if self.metrics:
            lines += ["", "## Measurements", "", "```json", json.dumps(self.metrics, indent=2), "```"]
        for name, caption in self.figures:
            lines += ["", f"![{caption or name}]({name})"]
            if caption:
                lines += ["", f"*{caption}*"]
        (self.out / "report.md").write_text("\n".join(lines) + "\n")
        return doc


# What the experiments import besides torch and numpy: the "experiments" extra (tqdm, also in it,
# is optional: without it progress is a plain line).
EXTRA = ("matplotlib", "scipy", "pysindy", "sympy")


def check_extra(name: str) -> None:
    """Raise :class:`MissingDependency` naming ``torchnde[experiments]`` before experiment
    ``name`` starts, if a package of that extra is not installed (checked without importing)."""
    absent = missing(EXTRA)
    if absent:
        raise MissingDependency(
            f"experiment {name!r} needs {', '.join(repr(a) for a in absent)}, optional dependencies "
            f"that are not installed: {install_hint(absent, 'experiments')}"
        )


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_experiment(
    name: str, *, quick: bool = False, seed: int = 0, out: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run the experiment ``name``, write its outputs under ``out`` and return ``metrics.json``'s content.

    ``out`` defaults to ``runs/NAME`` (``runs/NAME-quick`` for the quick tier). Rerunning with
    the same ``out`` resumes training from the checkpoints there.
    """
    exp = get(name)
    check_extra(name)
    folder = Path(out) if out is not None else Path("runs") / (name + ("-quick" if quick else ""))
    folder.mkdir(parents=True, exist_ok=True)
    require("matplotlib", extra="experiments").use("Agg")
    seed_everything(seed)
    run = Run(folder, quick=quick, seed=seed, progress=progress)
    start = time.perf_counter()
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    if exp.threads is not None:
        torch.set_num_threads(exp.threads)
    try:
        exp.fn(run)
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
    return run.write(exp, time.perf_counter() - start)


def format_checks(doc: dict[str, Any]) -> Iterable[str]:
    """Console lines for a metrics document's checks."""
    for c in doc["checks"]:
        mark = "PASS" if c["passed"] else "FAIL"
        claim = f"   (published: {c['claim']})" if c.get("claim") else ""
        yield f"  [{mark}] {c['name']}: {_fmt(c['measured'])} {c['op']} {_fmt(c['threshold'])}{claim}"
