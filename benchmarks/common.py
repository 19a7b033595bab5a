"""Timing machinery shared by every benchmark: thread set-up, candidates, interleaved timing.

A *group* is one problem (e.g. "neural ODE, no grad, batch 16") solved by several *candidates*
(one library or configuration each). Every candidate is warmed up first (its first call, which
includes any compilation, is timed separately), then the group is timed *interleaved*: each
repeat takes one sample of every candidate, in turn, so that drifting machine load hits all of
them alike. A sample runs the candidate ``inner`` times back to back (``inner`` is chosen per
candidate from its warm-up time, so that a sample lasts at least ``Settings.min_sample_s``) and
records the mean time per call, as ``timeit`` does: a millisecond call timed alone measures the
caches that the previous candidate and the garbage collector left cold, not the steady state of a
training loop that calls the solver again and again.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def configure_threads() -> None:
    """One thread per library: torch intra/inter-op and XLA (must run before jax is imported)."""
    os.environ["XLA_FLAGS"] = XLA_FLAGS
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # only settable before any inter-op work ran
        torch.set_num_interop_threads(1)


@dataclass
class Probe:
    """Work counters and the final state of one untimed solve.

    - ``calls``: vector-field calls counted by a wrapper around ``f`` (one call = one batched
      evaluation); ``None`` where ``f`` cannot be wrapped (diffrax, inside ``jit``).
    - ``nfe``/``steps``: what the library itself reports (per-sample libraries: the maximum over
      samples; the mean is in ``extra``), ``None`` where it reports nothing.
    - ``y_final``: the state at the last output time, as a float64 numpy array (for the error).
    """

    calls: int | None = None
    nfe: int | None = None
    steps: int | None = None
    y_final: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Candidate:
    """One library/configuration in a group.

    - ``run``: one solve, exactly what is timed; it must block until the result is ready.
    - ``probe``: one untimed solve that collects the :class:`Probe` (called after timing).
    - ``error``: set when the candidate could not be built (missing package, ...); such a
      candidate is listed in the results but not run.
    """

    key: str
    label: str
    run: Callable[[], Any] | None = None
    probe: Callable[[], Probe] | None = None
    error: str | None = None
    first_call_timeout_s: float | None = None
    note: str = ""


@dataclass
class Timing:
    times_s: list[float] = field(default_factory=list)  # one mean time per call per sample
    first_call_s: float | None = None
    inner: int = 1  # calls per sample

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.times_s) if self.times_s else None

    @property
    def min_s(self) -> float | None:
        return min(self.times_s) if self.times_s else None


@dataclass
class Settings:
    warmup: int
    repeats: int
    min_repeats: int
    group_budget_s: float  # stop repeating a group after this much timed work (>= min_repeats)
    min_sample_s: float  # a sample repeats the call until it lasts at least this long
    # (wall time is larger: warm-ups, first calls, probes and gc between the timed calls)
    compile_timeout_s: float
    # a full garbage collection before each timed call (and none during it); off for dry runs,
    # where nothing is measured and a collection of a large heap (inside pytest) costs 0.3 s
    collect_garbage: bool = True


class FirstCallTimeout(BaseException):
    """A first call (usually a compile) ran too long. A ``BaseException``, so that library code
    catching ``Exception`` (e.g. to fall back to eager) cannot swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`FirstCallTimeout` in the main thread after ``seconds`` (POSIX only)."""
    if not seconds or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise FirstCallTimeout(f"first call did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _timed(fn: Callable[[], Any], inner: int = 1, collect: bool = True) -> float:
    """Mean seconds per call of ``inner`` back-to-back calls, with the garbage collector run
    before them (if ``collect``) and disabled during them."""
    if collect:
        gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(inner):
            out = fn()
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    del out
    return elapsed / inner


def inner_calls(warm_s: float, min_sample_s: float, cap: int = 1000) -> int:
    """Calls per sample so that a sample lasts at least ``min_sample_s`` (at most ``cap``)."""
    if warm_s <= 0:
        return cap
    return max(1, min(cap, math.ceil(min_sample_s / warm_s)))


def short_error(err: BaseException, limit: int = 160) -> str:
    text = f"{type(err).__name__}: {err}".strip().splitlines()[0] if str(err) else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def measure_group(
    candidates: list[Candidate], settings: Settings, log: Callable[[str], None],
    shared_inner: tuple[tuple[str, ...], ...] = (),
) -> dict[str, Timing]:  # fmt: skip
    """Warm up every candidate, then time them interleaved. Failing candidates get ``error`` set.

    ``shared_inner``: groups of candidate keys that repeat their call the same number of times
    per sample (the largest any of them needs), so that candidates whose cost changes from call
    to call in the same way (training iterations: the dynamics get harder as the model learns)
    are timed over the same calls, not the faster one over later, costlier ones."""
    timings = {c.key: Timing() for c in candidates}
    live: list[Candidate] = []
    for cand in candidates:
        if cand.error is not None or cand.run is None:
            continue
        try:
            with time_limit(cand.first_call_timeout_s):
                timings[cand.key].first_call_s = _timed(cand.run, collect=settings.collect_garbage)
            warm = [
                _timed(cand.run, collect=settings.collect_garbage) for _ in range(max(settings.warmup - 1, 1))
            ]
            timings[cand.key].inner = inner_calls(statistics.median(warm), settings.min_sample_s)
        except (Exception, FirstCallTimeout) as err:  # a failing peer must not stop the run
            cand.error = short_error(err)
            log(f"    {cand.label}: FAILED ({cand.error})")
            continue
        live.append(cand)
    for group in shared_inner:
        inner = max((timings[k].inner for k in group if any(c.key == k for c in live)), default=1)
        for k in group:
            timings[k].inner = inner

    # Freeze the (hundreds of thousands of) objects torch, jax and inductor have created, so the
    # gc.collect() before each timed call only walks what the solves themselves leave behind.
    if settings.collect_garbage:
        gc.collect()
        gc.freeze()
    try:
        spent = 0.0
        for rep in range(settings.repeats):
            if rep >= settings.min_repeats and spent > settings.group_budget_s:
                break
            for cand in live:
                assert cand.run is not None
                inner = timings[cand.key].inner
                per_call = _timed(cand.run, inner, settings.collect_garbage)
                timings[cand.key].times_s.append(per_call)
                spent += per_call * inner
    finally:
        if settings.collect_garbage:
            gc.unfreeze()
    return timings


def ratio_rows(cands: list[Candidate], timings: dict[str, Timing], reference: str,
               extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """The result rows of one ``measure_group``: each candidate's label, timings and error,
    ``ratio`` = the ``reference`` candidate's time over its own (sample i of every row was taken
    in the same round: the median of the per-round ratios), then ``extra[key]``'s entries."""
    rows = {}
    base = timings[reference].times_s
    for cand in cands:
        timing = timings[cand.key]
        row: dict[str, Any] = {"label": cand.label, "median_s": timing.median_s, "min_s": timing.min_s,
                               "samples": len(timing.times_s), "inner": timing.inner, "error": cand.error}  # fmt: skip
        if cand.key != reference and timing.times_s and base:
            row["ratio"] = statistics.median(b / o for b, o in zip(base, timing.times_s))
        row.update((extra or {}).get(cand.key, {}))
        rows[cand.key] = row
    return rows


def ratio_table_rows(result: dict[str, Any], target: float,
                     extra: Callable[[dict[str, Any]], list[str]] = lambda row: [],
                     others: tuple[str, ...] = ("diffrax",)) -> list[str]:  # fmt: skip
    """Markdown rows ``| group | row | median | min | samples x inner | *extra | speed-up |`` of a
    ``measure_group`` result whose rows carry ``ratio`` (the reference's time over the row's);
    a torchnde speed-up below ``target`` is marked (rows of ``others``, other libraries shown for
    reference, are not held to it), a failed row shows its error."""
    lines = []
    for key, group in result["groups"].items():
        for row_key, row in group["rows"].items():
            cells = extra(row)
            if row["error"]:
                lines.append(
                    " | ".join([f"| `{key}`", f"`{row['label']}`", "—", "—", "—", *cells, row["error"]])
                    + " |"
                )
                continue
            ratio = row.get("ratio")
            mark = (
                " (reference)"
                if row_key in others
                else ("" if ratio is None or ratio >= target else " (below target)")
            )
            speed = "—" if ratio is None else f"{ratio:.2f}x{mark}"
            timing = [fmt_time(row["median_s"]), fmt_time(row["min_s"]), f"{row['samples']} x {row['inner']}"]
            lines.append(" | ".join([f"| `{key}`", f"`{row['label']}`", *timing, *cells, speed]) + " |")
    return lines


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def bench_cli(
    argv: list[str] | None, prog: str, doc: str | None, stem: str, settings: tuple[Settings, Settings],
    run: Callable[[Settings, Callable[[str], None], list[str] | None], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
) -> int:  # fmt: skip
    """The command line of a side-by-side benchmark module: ``[--out DIR] [--quick] [--only TEXT
    ...]``; runs ``run(settings, log, only)`` on one thread (``settings``: quick, full) and writes
    ``<stem>.json`` and ``<stem>.md`` under ``--out``."""
    import argparse
    import json
    import sys
    from pathlib import Path

    p = argparse.ArgumentParser(prog=prog, description=doc)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="*", default=None, help="only groups whose key contains TEXT")
    args = p.parse_args(argv)
    configure_threads()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    try:
        result = run(settings[0] if args.quick else settings[1], log, args.only)
    except Exception as err:  # report what failed, briefly
        log(short_error(err))
        raise
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=_finite) + "\n")
    text = markdown(result)
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    return 0


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else str(x)
