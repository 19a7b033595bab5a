"""The experiment harness: a registry, the run context, checks, figures, reports, resumable training.

An experiment is a function ``fn(run: Run) -> None`` registered with :func:`experiment`. It
builds its data and models, trains them with :meth:`Run.train` (progress bar, checkpoints a rerun
resumes from), records numbers with :meth:`Run.metric`, pass criteria with :meth:`Run.check`
(measured value, threshold, the paper's claim; a claim known not to reproduce is recorded with
its reason and not counted) and figures with :meth:`Run.figure`. The harness
writes ``metrics.json`` and a ``report.md`` that embeds the figures.

Under ``torchrun`` (:mod:`torchnde.distributed`) the same experiment runs on every rank:
:func:`run_experiment` joins the process group, seeds each rank's global generators with its own
:func:`~torchnde.distributed.rank_seed` (``run.generator`` stays common to all ranks, for data
every rank shares), and only rank 0 prints, writes checkpoints (holding every rank's generator
states), figures and reports. :meth:`Run.ddp` and :meth:`Run.shard` wrap a model in
``DistributedDataParallel`` and take this rank's rows of a batch; once a model is wrapped, the
ranks train one model on shards of each batch and :meth:`Run.train` averages each step's numbers
over them (before that, each rank runs on its own and rank 0's numbers are the ones recorded).
"""

from __future__ import annotations

import json
import math
import operator
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .. import distributed
from .._names import did_you_mean
from .._optional import MissingDependency, install_hint, missing, require
from ._checkpoint import CheckpointError, read_checkpoint, rng_states, write_checkpoint
from ._figures import finish, problems, save_png
from ._progress import Progress, seconds

__all__ = [
    "Check",
    "Experiment",
    "Run",
    "check_status",
    "default_out",
    "experiment",
    "format_checks",
    "format_outputs",
    "get",
    "known_failure_line",
    "names",
    "run_experiment",
]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


@dataclass
class Check:
    """One pass criterion: ``measured <op> threshold``, with the published figure beside it.

    ``known_failure``: why the claim is known not to reproduce, for a check that is evaluated
    and reported but does not count towards the run's ``passed`` (``None`` for every other).
    """

    name: str
    measured: Any
    op: str
    threshold: Any
    passed: bool
    claim: str | None = None
    known_failure: str | None = None


def check_status(passed: bool, known_failure: str | None) -> str:
    """A check's console mark: ``PASS``, ``FAIL``, ``NOT REPRODUCED (known)`` (a known failure
    that failed) or ``REPRODUCED (unexpectedly)`` (one that passed)."""
    if known_failure is None:
        return "PASS" if passed else "FAIL"
    return "REPRODUCED (unexpectedly)" if passed else "NOT REPRODUCED (known)"


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


def _plain(value: Any) -> Any:
    """A step's reported value as a plain number (what a ``weights_only`` checkpoint can hold)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.detach().cpu().tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise TypeError(
        f"a training step returned a {type(value).__name__}; return numbers, strings or lists of them"
    )


def _mean_over_ranks(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` with its numbers (not flags, strings or lists) averaged over the ranks."""
    keys = sorted(k for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    if distributed.world_size() == 1 or not keys:
        return info
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    values = torch.tensor([float(info[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    means = (values / distributed.world_size()).tolist()
    return {**info, **dict(zip(keys, means))}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Run:
    """What an experiment gets: where to write, how big to be, and the recording methods.

    - ``out``: the output folder (``metrics.json``, ``report.md``, PNGs, ``checkpoints/``).
    - ``quick``: the small tier (about 90 s on 2 cores, looser criteria).
    - ``seed``: every generator is seeded from it before the experiment starts.
    - ``progress``: show progress (a tqdm bar on a terminal, plain periodic lines otherwise).
    - ``experiment``: the registered name (checkpoints record it; set by :func:`run_experiment`).
    - ``fresh``: train every stage from the start, ignoring (and overwriting) its checkpoint.
    - ``sharded``: set by :meth:`ddp` under ``torchrun``: the ranks train one model on shards,
      so :meth:`train` averages the steps' numbers over them.

    Messages about what the run is doing and where its files go are printed on stdout (see
    :meth:`say`), warnings on stderr, progress bars on stderr. Under ``torchrun`` only rank 0
    prints (warnings name their rank) and writes files.
    """

    out: Path
    quick: bool = False
    seed: int = 0
    progress: bool = True
    experiment: str = ""
    fresh: bool = False
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: list[tuple[str, str]] = field(default_factory=list)
    figure_problems: dict[str, list[str]] = field(default_factory=dict)
    train_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    sharded: bool = field(default=False, repr=False)

    @property
    def rank(self) -> int:
        """This process's rank under ``torchrun`` (0 in a single process)."""
        return distributed.rank()

    @property
    def world_size(self) -> int:
        """How many processes run the experiment (1 without ``torchrun``)."""
        return distributed.world_size()

    def ddp(self, model: torch.nn.Module, **options: Any) -> torch.nn.Module:
        """``model`` wrapped in ``DistributedDataParallel`` under ``torchrun`` (the model itself
        in one process). DDP copies rank 0's parameters to every rank here and averages the
        gradients over the ranks in ``backward``; ``options`` go to DDP. Train the wrapper,
        save the model (its ``state_dict`` has no ``module.`` prefix)."""
        if self.world_size == 1:
            return model
        if dist.get_backend() == "nccl" and "device_ids" not in options:
            options["device_ids"] = [torch.cuda.current_device()]
        self.sharded = True
        return torch.nn.parallel.DistributedDataParallel(model, **options)

    def shard(self, batch: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """This rank's contiguous block of ``batch`` along ``dim``
        (:func:`torchnde.distributed.shard`); the whole batch in one process."""
        return distributed.shard(batch, dim)

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

    def check(
        self,
        name: str,
        measured: Any,
        op: str,
        threshold: Any,
        claim: str | None = None,
        *,
        known_failure: str | None = None,
    ) -> bool:
        """Record the criterion ``measured <op> threshold`` and whether it passed.

        ``known_failure="why (short)"`` records a claim that is checked but known not to
        reproduce: it is measured and reported as usual (``NOT REPRODUCED (known): ...``), but
        does not count towards :attr:`passed`. If it passes after all, it is reported as
        ``REPRODUCED (unexpectedly)`` and warned about, so that somebody updates the documents
        that say it does not reproduce.

        ```python
        run = Run(Path("runs/example"))
        run.check("error", 0.01, "<=", 0.1)                          # True
        run.check("ratio", 5.5, "<=", 1.0, known_failure="why")      # False, reported
        run.passed                                                   # True: not counted
        ```
        """
        if op not in _OPS:
            raise ValueError(f"unknown comparison {op!r}; valid: {', '.join(_OPS)}.{did_you_mean(op, _OPS)}")
        if known_failure is not None and not known_failure.strip():
            raise ValueError(f"check {name!r}: known_failure must say why the claim does not reproduce")
        value = float(measured) if isinstance(measured, (torch.Tensor, np.generic)) else measured
        passed = bool(math.isfinite(float(value)) and _OPS[op](value, threshold))
        self.checks.append(Check(name, _jsonable(value), op, threshold, passed, claim, known_failure))
        if known_failure is not None and passed:
            self.warn(
                f"check {name!r} is recorded as a known failure ({known_failure}) but passed "
                f"({_fmt(value)} {op} {_fmt(threshold)}): if it holds, update the documents that say "
                "it does not reproduce and drop known_failure"
            )
        return passed

    def note(self, text: str) -> None:
        """A line of prose for the report (and the console)."""
        self.notes.append(text)

    def section(self, title: str, markdown: str) -> None:
        """A section of the report (``## title`` and the Markdown ``markdown``, a table for
        instance), after the notes and before the measurements."""
        self.sections.append((title, markdown))

    def say(self, text: str) -> None:
        """Tell the user what the run is doing or where a file went (stdout, flushed; rank 0)."""
        if self.rank == 0:
            print(text, flush=True)

    def warn(self, text: str) -> None:
        """Tell the user about something that went wrong and how it was handled (stderr)."""
        where = f" (rank {self.rank})" if self.world_size > 1 else ""
        print(f"warning{where}: {text}", file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, what: str, total: int | None = None, *, unit: str = "step") -> Iterator[Progress]:
        """A named stage of the run: announced, timed, with progress over ``total`` units.

        ```python
        with run.stage("scoring candidate structures", total=len(cands), unit="structure") as bar:
            for c in cands:
                score(c)
                bar.update()
        ```
        """
        self.say(f"{what} ...")
        shown = self.progress and total is not None and self.rank == 0
        bar = Progress(what, total or 0, enabled=shown, unit=unit)
        try:
            yield bar
        finally:
            bar.close()
        self.say(f"{what}: done in {seconds(time.perf_counter() - bar.start)}")

    def figure(self, name: str, fig: Any, caption: str = "") -> Path:
        """Save a matplotlib figure as ``out/name.png`` and embed it in the report.

        The house style is applied first (constrained layout, integer ticks on integer axes;
        :func:`torchnde.experiments._figures.finish`); layout problems (an unlabelled axis,
        overlapping texts) are warned about and recorded in ``metrics.json``.
        """
        import matplotlib.pyplot as plt

        path = self.out / f"{name}.png"
        if self.rank != 0:  # one copy of each figure: rank 0's
            plt.close(fig)
            return path
        finish(fig)
        fig.set_dpi(110)  # the layout check and the file share one layout, at the file's resolution
        found = problems(fig)
        save_png(fig, path, dpi=110)
        plt.close(fig)
        self.figures.append((path.name, caption))
        if found:
            self.figure_problems[path.name] = found
            self.warn(f"figure {path}: {'; '.join(found)}")
        self.say(f"figure: {path}")
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

        ``step`` returns a dict of numbers (``loss``, ``nfe``, ...) shown beside the progress
        and returned as the history. ``state`` maps names to the stage's models, optimisers and
        schedulers (``state_dict`` / ``load_state_dict``) and ``torch.Generator`` objects. Every
        ``every`` steps and at the end they are saved, with the history and the global RNG
        states, to ``out/checkpoints/tag.pt`` (atomically; see
        :mod:`torchnde.experiments._checkpoint`). A rerun loads that file and continues from
        where it stopped, so a run killed midway ends as an uninterrupted one would; a finished
        stage is not trained again (both are announced; ``fresh=True`` retrains). A checkpoint
        that cannot be read, or was written for another configuration or other shapes, is
        reported and ignored.

        Under ``torchrun`` every rank calls ``step``. Once a model is wrapped by :meth:`ddp`
        (the ranks train one model on shards of each batch) the numbers it returns are averaged
        over the ranks, so the history and the progress are the global batch's; rank 0 writes the checkpoint with every rank's generator states, and a rerun with the same
        number of ranks resumes each rank from its own (a checkpoint of another world size is
        ignored). The ranks must share ``out`` (one machine, or a shared file system).

        ``self.train_seconds[tag]`` is then the stage's training time in seconds, summed over the
        runs that trained it (kept in the checkpoint: a resumed or reused stage reports the time
        its steps took, not this run's share; NaN where an older checkpoint did not record it).
        """
        path = self.out / "checkpoints" / f"{tag}.pt"
        config = {
            "experiment": self.experiment,
            "tier": "quick" if self.quick else "full",
            "seed": self.seed,
            "tag": tag,
            "steps": int(steps),
        }
        if self.world_size > 1:
            config["world_size"] = self.world_size
        history: list[dict[str, Any]] = []
        start, spent = 0, 0.0
        if path.exists() and not self.fresh:
            try:
                saved = read_checkpoint(path, config, state, rank=self.rank)
            except CheckpointError as err:
                self.warn(f"ignoring checkpoint {path}: {err}; training {tag!r} from step 0 instead")
            else:
                history, start = saved["history"], saved["step"]
                recorded = saved.get("seconds")  # absent in older checkpoints
                spent = float(recorded) if isinstance(recorded, (int, float)) else math.nan
                if start >= steps:
                    self.say(f"reusing checkpoint {path} (trained {start} steps); --fresh to retrain")
                    self.train_seconds[tag] = spent
                    return history
                self.say(
                    f"resuming {tag!r} from checkpoint {path} at step {start} of {steps}; --fresh to start over"
                )
        label = f"training {tag}"
        self.say(f"{label}: {steps - start} steps" + (f" (from step {start})" if start else ""))
        bar = Progress(label, steps, initial=start, enabled=self.progress and self.rank == 0)
        began = time.perf_counter()
        self.train_seconds[tag] = spent
        try:
            for i in range(start, steps):
                info = {k: _plain(v) for k, v in step(i).items()}
                if self.sharded:
                    info = _mean_over_ranks(info)
                history.append(info)
                bar.update(info=info)
                if (i + 1) % every == 0 or i + 1 == steps:
                    self.train_seconds[tag] = spent + (time.perf_counter() - began)
                    self._save(path, config, i + 1, history, state, self.train_seconds[tag])
        finally:
            bar.close()
        self.say(f"{label}: done in {seconds(time.perf_counter() - bar.start)}; checkpoint: {path}")
        return history

    def _save(
        self,
        path: Path,
        config: dict[str, Any],
        step: int,
        history: list[dict[str, Any]],
        state: dict[str, Any],
        seconds: float,
    ) -> None:
        """Write the checkpoint: this process's, or (``torchrun``) rank 0's with every rank's
        generator states; the ranks wait for the file before they go on."""
        if self.world_size == 1:
            write_checkpoint(path, config, step, history, state, seconds=seconds)
            return
        states: list[Any] = [None] * self.world_size
        dist.all_gather_object(states, rng_states())
        if self.rank == 0:
            write_checkpoint(path, config, step, history, state, rng=states, seconds=seconds)
        dist.barrier()

    # -- output ---------------------------------------------------------------------------

    @property
    def passed(self) -> bool:
        """True if every check passed (and there was at least one), known failures aside."""
        counted = [c for c in self.checks if c.known_failure is None]
        return bool(counted) and all(c.passed for c in counted)

    def checkpoints(self) -> list[Path]:
        """The checkpoint files in ``out/checkpoints``, sorted."""
        return sorted((self.out / "checkpoints").glob("*.pt"))

    def write(self, exp: Experiment, elapsed: float) -> dict[str, Any]:
        """Write ``metrics.json`` and ``report.md`` (rank 0 only); return the metrics document."""
        doc = {
            "experiment": exp.name,
            "title": exp.title,
            "paper": exp.paper,
            "published_claim": exp.claim,
            "quick": self.quick,
            "seed": self.seed,
            "seconds": round(elapsed, 2),
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "metrics": self.metrics,
            "notes": self.notes,
            "figures": [name for name, _ in self.figures],
            "figure_problems": self.figure_problems,
            "checkpoints": [p.relative_to(self.out).as_posix() for p in self.checkpoints()],
        }
        if self.world_size > 1:
            doc["world_size"] = self.world_size
        if self.rank != 0:
            return doc
        (self.out / "metrics.json").write_text(json.dumps(_jsonable(doc), indent=2) + "\n")
        lines = [
            f"# {exp.title} (`{exp.name}`)",
            "",
            f"*{exp.paper}*. Published claim: {exp.claim}",
            "",
            f"Tier: {'quick' if self.quick else 'full'}, seed {self.seed}, {elapsed:.1f} s. "
            f"**{'PASSED' if self.passed else 'FAILED'}**.",
            "",
            "| criterion | measured | needed | passed | published |",
            "|---|---|---|---|---|",
        ]
        for c in self.checks:
            mark = "yes" if c.passed else "NO"
            if c.known_failure is not None:
                mark = "yes (unexpectedly)" if c.passed else "no (known)"
            lines.append(
                f"| {c.name} | {_fmt(c.measured)} | {c.op} {_fmt(c.threshold)} | {mark} | {c.claim or ''} |"
            )
        known = [c for c in self.checks if c.known_failure is not None]
        if known:
            lines += [
                "",
                "Claims known not to reproduce: checked and reported, not counted towards "
                f"{'PASSED' if self.passed else 'FAILED'}.",
                "",
                *[f"- {known_failure_line(asdict(c))}" for c in known],
            ]
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        for title, markdown in self.sections:
            lines += ["", f"## {title}", "", markdown.strip()]
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


def default_out(name: str, quick: bool = False) -> Path:
    """Where :func:`run_experiment` writes by default: ``runs/NAME`` (``runs/NAME-quick``)."""
    return Path("runs") / (name + ("-quick" if quick else ""))


def run_experiment(
    name: str,
    *,
    quick: bool = False,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    fresh: bool = False,
) -> dict[str, Any]:
    """Run the experiment ``name``, write its outputs under ``out`` and return ``metrics.json``'s content.

    ``out`` defaults to :func:`default_out`. Rerunning with the same ``out`` resumes training
    from the checkpoints there (announced on stdout); ``fresh=True`` deletes them first. The
    header (what runs, where its files go) is printed first, then each stage with its progress,
    each figure's path as it is saved, and the paths of ``metrics.json`` and ``report.md``.
    Under ``torchrun`` it joins the process group first (:func:`torchnde.distributed.process_group`)
    and every rank runs the experiment (see the module's docstring); every rank gets the document.

    ```python
    doc = run_experiment("anode-g1d", quick=True, out="/tmp/g1d")   # about 10 s
    doc["passed"], doc["figures"]
    ```
    """
    exp = get(name)
    check_extra(name)
    folder = Path(out) if out is not None else default_out(name, quick)
    folder.mkdir(parents=True, exist_ok=True)
    matplotlib = require("matplotlib", extra="experiments")
    matplotlib.use("Agg")
    with distributed.process_group():
        return _run(exp, folder, quick=quick, seed=seed, progress=progress, fresh=fresh)


def _run(
    exp: Experiment, folder: Path, *, quick: bool, seed: int, progress: bool, fresh: bool
) -> dict[str, Any]:
    """:func:`run_experiment` once the process group (if any) is joined."""
    name = exp.name
    run = Run(folder, quick=quick, seed=seed, progress=progress, experiment=name, fresh=fresh)
    run.say(f"{name}: {exp.title}")
    run.say(f"  {exp.paper}")
    ranks = f" on {run.world_size} ranks" if run.world_size > 1 else ""
    run.say(f"  {'quick' if quick else 'full'} tier, seed {seed}{ranks}; outputs in {folder}")
    old = run.checkpoints()
    if fresh and old:
        if run.rank == 0:
            for path in old:
                path.unlink()
        if run.world_size > 1:
            dist.barrier()
        run.say(f"--fresh: deleted {len(old)} checkpoint(s) in {folder / 'checkpoints'}")
        run.fresh = False  # nothing left to ignore; the new checkpoints are this run's
    seed_everything(distributed.rank_seed(seed))
    start = time.perf_counter()
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    if exp.threads is not None:
        torch.set_num_threads(exp.threads)
    matplotlib = require("matplotlib", extra="experiments")
    try:
        # constrained layout from each figure's creation: colorbars and suptitles take their room
        with matplotlib.rc_context({"figure.constrained_layout.use": True}):
            exp.fn(run)
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
    doc = run.write(exp, time.perf_counter() - start)
    run.say(f"metrics: {folder / 'metrics.json'}")
    run.say(f"report: {folder / 'report.md'}")
    return doc


def format_outputs(doc: dict[str, Any], out: str | Path) -> Iterable[str]:
    """Console lines listing every file a run wrote (report, metrics, figures, checkpoints)."""
    folder = Path(out)
    yield f"  report       {folder / 'report.md'}"
    yield f"  metrics      {folder / 'metrics.json'}"
    for name in doc.get("figures", []):
        yield f"  figure       {folder / name}"
    for name in doc.get("checkpoints", []):
        yield f"  checkpoint   {folder / name}"


def known_failure_line(check: dict[str, Any]) -> str:
    """What a known-failure check came to, as one line (``check`` as in ``metrics.json``).

    ``NOT REPRODUCED (known): NAME: MEASURED OP THRESHOLD; WHY``, or, when it passed after all,
    ``REPRODUCED (unexpectedly): ...`` with a request to update the documents.
    """
    text = (
        f"{check_status(check['passed'], check['known_failure'])}: {check['name']}: "
        f"{_fmt(check['measured'])} {check['op']} {_fmt(check['threshold'])}"
    )
    if check["passed"]:
        return f"{text}; recorded as not reproducing ({check['known_failure']}): update the documents"
    return f"{text}; {check['known_failure']}"


def format_checks(doc: dict[str, Any]) -> Iterable[str]:
    """Console lines for a metrics document's checks (known failures last, with their reason)."""
    known = []
    for c in doc["checks"]:
        if c.get("known_failure") is not None:
            known.append(c)
            continue
        claim = f"   (published: {c['claim']})" if c.get("claim") else ""
        mark = check_status(c["passed"], None)
        yield f"  [{mark}] {c['name']}: {_fmt(c['measured'])} {c['op']} {_fmt(c['threshold'])}{claim}"
    for c in known:
        yield f"  {known_failure_line(c)}"
