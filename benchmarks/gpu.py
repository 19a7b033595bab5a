"""GPU benchmarks: the core, training, stiff and SDE cases on a CUDA device, side by side with the
peer libraries, timed interleaved (:func:`benchmarks.common.measure_group`).

``python -m benchmarks.gpu`` needs a CUDA device and writes ``gpu.json`` and ``gpu.md`` under
``--out`` (default ``benchmarks/results``) with the device named (``torch.cuda.get_device_name``).
``python -m benchmarks.gpu --dry-run`` runs every case on the CPU at tiny sizes, one repeat each,
into a temporary directory (or ``--out``): the check that the script works, run by the tests.

Groups (``subject``: the torchnde row every ratio is taken against; ratio > 1: torchnde faster):

- ``core/no_grad/b16``, ``core/no_grad/b1024``: the P1 neural ODE (MLP 2-64-64-2 tanh, dopri5,
  rtol 1e-5, atol 1e-7, 10 outputs on [0, 1], float32): torchnde with one step size for the batch
  and with ``per_sample=True``, torchdiffeq ``odeint``, torchode (per-sample by design) and
  diffrax (jit, on jax's default device) when installed.
- ``train/backprop/b256``: one training iteration (solve, MSE on the 10 outputs, backward):
  torchnde ``Backprop``, torchdiffeq ``odeint``, diffrax ``RecursiveCheckpointAdjoint``.
- ``stiff/robertson/b256``: 256 copies of Robertson's problem to t = 1e5 in float64 (rtol 1e-6,
  atol 1e-10), torchnde's Rodas5P (global and per sample) and Kvaerno5; torchdiffeq and torchode
  have no stiff solver, and diffrax's Kvaerno5 row is not written yet (see
  ``benchmarks/stiff.py`` for the CPU comparison with scipy and diffrax).
- ``sde/gbm/b4096``: 4,096 paths of geometric Brownian motion (Itô, diagonal noise), Euler-Maruyama
  with dt = 0.01 on [0, 1], each library's default Brownian motion: torchnde and torchsde.

A torch row ends with ``torch.cuda.synchronize()``, so the time is the device's, not the launch
queue's; diffrax rows block on their result. Counters (steps, nfe) come from one untimed solve.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import torchnde as nde

from .common import (
    Candidate,
    Settings,
    configure_threads,
    measure_group,
    ratio_rows,
    ratio_table_rows,
    short_error,
)
from .jax_peer import diffrax_dopri5, versions
from .peers import torchdiffeq_dopri5, torchnde_dopri5, torchode_dopri5
from .problems import Problem, neural_ode
from .training import diffrax_training, torch_strategies, torch_training, training_problem

FULL = Settings(warmup=3, repeats=30, min_repeats=10, group_budget_s=10.0, min_sample_s=0.02,
                compile_timeout_s=300.0)  # fmt: skip
DRY = Settings(
    warmup=1,
    repeats=1,
    min_repeats=1,
    group_budget_s=0.0,
    min_sample_s=0.0,
    compile_timeout_s=60.0,
    collect_garbage=False,
)
DRY_SKIP = "skipped in --dry-run: its jit compile alone outlasts the dry run"


@dataclass(frozen=True)
class Sizes:
    """The batch of each case: ``FULL_SIZES`` on a GPU, ``DRY_SIZES`` for ``--dry-run``."""

    core: tuple[int, ...]
    train: int
    stiff: int
    stiff_t1: float
    sde: int
    sde_dt: float


FULL_SIZES = Sizes(core=(16, 1024), train=256, stiff=256, stiff_t1=1e5, sde=4096, sde_dt=0.01)
DRY_SIZES = Sizes(core=(4,), train=4, stiff=2, stiff_t1=1.0, sde=8, sde_dt=0.25)


@dataclass
class Group:
    key: str
    title: str
    subject: str
    candidates: list[Candidate]


def _on(problem: Problem, device: torch.device) -> Problem:
    """A copy of ``problem`` on ``device`` (its field moved in place: build CPU-only peers first)."""
    return Problem(problem.name, problem.field.to(device), problem.y0.to(device), problem.t_eval.to(device))


def _guard(key: str, label: str, build: Callable[[], Candidate]) -> Candidate:
    """``build()``, or a row that says why it could not be built (a peer not installed)."""
    try:
        return build()
    except Exception as err:
        return Candidate(key, label, error=short_error(err))


def _blocking(cand: Candidate, device: torch.device) -> Candidate:
    """Make a torch row wait for the device before its time is taken."""
    if device.type != "cuda" or cand.run is None:
        return cand
    run = cand.run

    def synced() -> Any:
        out = run()
        torch.cuda.synchronize(device)
        return out

    cand.run = synced
    return cand


def core_group(batch: int, device: torch.device, dry: bool) -> Group:
    cpu = neural_ode(batch)
    diffrax = (
        Candidate("diffrax", "diffrax Dopri5 (jit)", error=DRY_SKIP)
        if dry
        else _guard(
            "diffrax", "diffrax Dopri5 (jit)", lambda: diffrax_dopri5("diffrax", "diffrax Dopri5 (jit)", cpu)
        )
    )
    p = _on(cpu, device)
    f = p.field
    torch_rows = [
        torchnde_dopri5("torchnde", "torchnde dopri5 (global step)", p, f, False),
        torchnde_dopri5("torchnde_ps", "torchnde dopri5 per_sample=True", p, f, False, per_sample=True),
        _guard("torchdiffeq", "torchdiffeq dopri5",
               lambda: torchdiffeq_dopri5("torchdiffeq", "torchdiffeq dopri5", p, f, False)),
        _guard("torchode", "torchode Dopri5 (per-sample)",
               lambda: torchode_dopri5("torchode", "torchode Dopri5 (per-sample)", p, f, False)),
    ]  # fmt: skip
    return Group(f"core/no_grad/b{batch}", f"P1 neural ODE, dopri5, torch.no_grad(), batch {batch}",
                 "torchnde", [*torch_rows, diffrax])  # fmt: skip


def train_group(batch: int, device: torch.device, dry: bool) -> Group:
    cpu, target = training_problem(batch=batch)
    label = "diffrax RecursiveCheckpointAdjoint (jit)"
    diffrax = (
        Candidate("diffrax", label, error=DRY_SKIP)
        if dry
        else _guard(
            "diffrax", label, lambda: diffrax_training("diffrax", label, cpu, target, backsolve=False)
        )
    )
    p, target = _on(cpu, device), target.to(device)
    rows = torch_strategies(p)
    cands = [
        _guard(key, rows[key][0], lambda key=key: torch_training(key, rows[key][0], p, target, rows[key][1]))
        for key in ("torchnde_backprop", "torchdiffeq")
    ]
    return Group(f"train/backprop/b{batch}", f"One training iteration (solve + MSE + backward), batch {batch}",
                 "torchnde_backprop", [*cands, diffrax])  # fmt: skip


def _robertson(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    a, b, c = y.unbind(-1)
    return torch.stack([-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b], dim=-1)


def stiff_group(batch: int, t1: float, device: torch.device) -> Group:
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, device=device).repeat(batch, 1)
    ts = torch.tensor([0.0, t1], dtype=torch.float64, device=device)

    def row(key: str, label: str, solver: Any, per_sample: bool = False) -> Candidate:
        def run() -> nde.Solution:
            with torch.no_grad():
                return nde.solve(_robertson, y0, ts, solver, rtol=1e-6, atol=1e-10, per_sample=per_sample,
                                 max_steps=50_000)  # fmt: skip

        return Candidate(key, label, run=run, probe=run)

    cands = [
        row("rodas5p", "torchnde Rodas5P (autograd Jacobian)", nde.solvers.Rodas5P()),
        row("rodas5p_ps", "torchnde Rodas5P per_sample=True", nde.solvers.Rodas5P(), per_sample=True),
        row("kvaerno5", "torchnde Kvaerno5 (autograd Jacobian)", nde.solvers.Kvaerno5()),
    ]
    return Group(
        f"stiff/robertson/b{batch}", f"Robertson to t = {t1:g}, float64, batch {batch}", "rodas5p", cands
    )


class _GBM(torch.nn.Module):
    """dX = 0.5 X dt + 0.3 X dW (Itô, diagonal noise) in torchsde's form."""

    noise_type = "diagonal"
    sde_type = "ito"

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * y

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.3 * y


def sde_group(batch: int, dt: float, device: torch.device) -> Group:
    sde = _GBM()
    y0 = torch.ones(batch, 1, device=device)
    ts = torch.tensor([0.0, 1.0], device=device)

    def native() -> Any:
        with torch.no_grad():
            return nde.solve(nde.SDETerm(sde.f, sde.g, noise="diagonal"), y0, ts, "euler", dt=dt).ys

    def torchsde_row() -> Candidate:
        import torchsde

        def run() -> Any:
            with torch.no_grad():
                return torchsde.sdeint(sde, y0, ts, method="euler", dt=dt)

        return Candidate("torchsde", "torchsde.sdeint euler", run=run)

    cands = [Candidate("torchnde", "torchnde solve(SDETerm) euler", run=native),
             _guard("torchsde", "torchsde.sdeint euler", torchsde_row)]  # fmt: skip
    return Group(f"sde/gbm/b{batch}", f"GBM, Euler-Maruyama, dt = {dt:g}, {batch} paths", "torchnde", cands)


def all_groups(device: torch.device, sizes: Sizes, dry: bool) -> list[Group]:
    return [
        *(core_group(b, device, dry) for b in sizes.core),
        train_group(sizes.train, device, dry),
        stiff_group(sizes.stiff, sizes.stiff_t1, device),
        sde_group(sizes.sde, sizes.sde_dt, device),
    ]


def _jax_devices() -> str:
    """Where jax (diffrax's rows) runs: its default backend's devices, or why it is absent."""
    try:
        import jax

        return ", ".join(str(d) for d in jax.devices())
    except Exception as err:
        return f"jax not available ({short_error(err, 80)})"


def _counters(cand: Candidate) -> dict[str, Any]:
    """Steps and evaluations from one untimed call (torchnde rows; others report none here)."""
    if cand.error is not None or cand.probe is None:
        return {}
    try:
        out = cand.probe()
    except Exception as err:
        return {"probe_error": short_error(err)}
    stats = getattr(out, "stats", None)
    if isinstance(out, nde.Solution) and stats is not None:
        return {k: int(torch.as_tensor(v).max()) for k, v in (("steps", stats.steps), ("nfe", stats.nfe))}
    return {k: getattr(out, k) for k in ("steps", "nfe") if getattr(out, k, None) is not None}


def run(device: torch.device, settings: Settings, sizes: Sizes, dry: bool, log: Callable[[str], None],
        only: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    groups: dict[str, Any] = {}
    for group in all_groups(device, sizes, dry):
        if only and not any(text in group.key for text in only):
            continue
        log(f"{group.key}: {group.title}")
        cands = [_blocking(c, device) for c in group.candidates]
        timings = measure_group(cands, settings, log)
        extra = {c.key: _counters(c) for c in cands}
        groups[group.key] = {"title": group.title, "subject": group.subject,
                             "rows": ratio_rows(cands, timings, group.subject, extra)}  # fmt: skip
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or 'cpu'})"
    )
    return {
        "device": name,
        "device_type": device.type,
        "dry_run": dry,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "peers": {} if dry else versions(),  # (importing jax costs seconds)
        "jax_devices": "not imported (--dry-run)" if dry else _jax_devices(),
        "settings": settings.__dict__,
        "sizes": sizes.__dict__,
        "groups": groups,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# GPU benchmarks on {result['device']}",
        "",
        f"torch {result['torch']}, CUDA {result['cuda']}"
        + (" — **dry run** (CPU, tiny sizes, one repeat: not a measurement)" if result["dry_run"] else "")
        + f". diffrax's rows ran on jax's devices: {result['jax_devices']}. Ratio: the group's torchnde "
        "row's median time / the row's (above 1: torchnde faster).",
        "",
        "| group | row | median | min | samples x inner | steps | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += ratio_table_rows(result, 0.0, lambda row: [str(row.get("steps", "—"))], others=())
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="default: benchmarks/results (dry run: a temp dir)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="every case on the CPU, tiny sizes, one repeat"
    )
    parser.add_argument("--only", nargs="*", default=None, help="only groups whose key contains TEXT")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device here: run it on a GPU machine, or check the script with --dry-run")
    configure_threads()
    device = torch.device("cpu") if args.dry_run else torch.device("cuda", torch.cuda.current_device())
    out = args.out or (
        Path(tempfile.mkdtemp(prefix="torchnde-gpu-")) if args.dry_run else Path("benchmarks/results")
    )
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    result = run(device, DRY if args.dry_run else FULL, DRY_SIZES if args.dry_run else FULL_SIZES,
                 args.dry_run, log, args.only)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "gpu.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out / 'gpu.json'} and {out / 'gpu.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
