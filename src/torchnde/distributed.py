r"""Training and ensembles across processes with :mod:`torch.distributed` (``torchrun``).

A model of this library is a plain ``nn.Module``, so ``DistributedDataParallel`` trains it across
processes and machines unchanged. This module adds what a neural-DE workload needs around it:

- :func:`process_group`: joins the process group ``torchrun`` describes in the environment
  (``gloo`` on CPU, ``nccl`` with CUDA), and is a no-op in a plain single process, so the same
  script runs under ``python`` and under ``torchrun``.
- :func:`rank`, :func:`world_size`, :func:`is_main`: who this process is (0 and 1 outside a
  process group).
- :func:`shard_rows`, :func:`shard` and :func:`gather`: split a batch into contiguous per-rank
  blocks (the first ``n % world`` ranks get one row more, as :func:`torch.tensor_split`) and put
  the blocks back together, in rank order, on every rank.
- :func:`ensemble_solve`: a large per-sample ensemble (many initial conditions, parameter sweeps,
  SDE paths) solved in shards, one per rank, with ``per_sample=True`` and gathered in order.
- :func:`rank_seed`: a seed for this rank's own randomness (noise, dropout) from the run's seed.

Per-sample mode is what makes a sharded solve exact: every sample has its own step size, so a
sample's solution does not depend on which other samples share its batch (a global step size
would be set by the hardest sample of each shard instead). The same holds for training: with
``per_sample=True`` (or fixed steps) the gradient of a global batch split evenly over the ranks
equals the single-process gradient, and ``DistributedDataParallel`` averages it over the ranks.

Data-parallel training with gradients averaged over processes: Li et al., *PyTorch Distributed:
Experiences on Accelerating Data Parallel Training*, VLDB 2020 (arXiv:2006.15704).

```python
import torch, torchnde as nde
from torchnde import distributed

y0 = torch.linspace(-1, 1, 1000, dtype=torch.float64).reshape(-1, 1)    # 1000 initial conditions
ts = torch.linspace(0, 1, 5, dtype=torch.float64)
sol = distributed.ensemble_solve(lambda t, y: -y + torch.sin(t), y0, ts, rtol=1e-8, atol=1e-10)
sol.ys.shape                                         # [5, 1000, 1]: every sample, on every rank
assert sol.stats.steps.shape == (1000,) and bool((sol.status == 0).all())
distributed.shard_rows(10, rank=1, world=4)          # slice(3, 6): rows 3, 4, 5
```

Under ``torchrun --nproc_per_node=2 script.py`` the same call solves rows ``0..499`` on rank 0 and
``500..999`` on rank 1 and returns all 1000 on both. See ``docs/distributed.md`` for the training
recipe (``DistributedDataParallel`` with the experiments' trainer) and the multi-node command.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ._solution import ERRORS, Solution, Stats, Status
from ._solve import solve
from .terms import AbstractTerm

__all__ = [
    "ensemble_solve",
    "gather",
    "is_main",
    "process_group",
    "rank",
    "rank_seed",
    "shard",
    "shard_rows",
    "world_size",
]

# solve() options that produce what a gathered ensemble cannot hold as one tensor per sample
_RAGGED = ("dense", "save_steps", "event", "per_sample", "gradient", "progress")


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank(group: Any = None) -> int:
    return dist.get_rank(group) if _active() else 0


def rank(group: Any = None) -> int:
    """This process's rank in ``group`` (the default group); 0 outside a process group."""
    return _rank(group)


def world_size(group: Any = None) -> int:
    """The number of processes in ``group`` (the default group); 1 outside a process group."""
    return dist.get_world_size(group) if _active() else 1


def is_main(group: Any = None) -> bool:
    """True on rank 0 (and in a single process): the one that writes files and prints."""
    return rank(group) == 0


def rank_seed(seed: int, rank_: int | None = None) -> int:
    """A seed for rank ``rank_`` (default: this process's) derived from the run's ``seed``.

    Rank 0 keeps ``seed`` itself, so a single process is seeded as it always was; every other
    rank gets an independent stream from numpy's ``SeedSequence((seed, rank))`` (no two
    ``(seed, rank)`` pairs collide the way ``seed + rank`` would).

    ```python
    from torchnde import distributed
    assert distributed.rank_seed(7, 0) == 7
    assert distributed.rank_seed(7, 1) != distributed.rank_seed(8, 0)
    ```
    """
    r = _rank() if rank_ is None else rank_
    if r == 0:
        return int(seed)
    return int(np.random.SeedSequence((int(seed), int(r))).generate_state(1, dtype=np.uint32)[0])


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


@contextmanager
def process_group(backend: str | None = None) -> Iterator[int]:
    """Join the process group that ``torchrun`` describes in the environment; yield the world size.

    Under ``torchrun`` (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR`` set) it initialises the default
    group with ``backend`` (default ``"nccl"`` when CUDA is available, else ``"gloo"``), selects the
    GPU ``LOCAL_RANK`` with NCCL, and destroys the group on exit. In a plain process, or when a
    group is already initialised (by the caller), it does nothing. ``backend`` must be one of
    ``"gloo"``, ``"nccl"``, ``"mpi"``.

    ```python
    from torchnde import distributed
    with distributed.process_group() as world:       # a plain process: nothing to join
        assert world == 1 and distributed.rank() == 0
    ```
    """
    if backend is not None and backend not in ("gloo", "nccl", "mpi"):
        raise ValueError(f"unknown backend {backend!r}; valid: 'gloo' (CPU), 'nccl' (CUDA), 'mpi'")
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    if _active() or not launched:
        yield world_size()
        return
    chosen = backend or _backend()
    if chosen == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(chosen)
    try:
        yield world_size()
    finally:
        dist.destroy_process_group()


def shard_rows(n: int, rank: int | None = None, world: int | None = None) -> slice:
    """The contiguous rows of ``n`` that rank ``rank`` of ``world`` owns (defaults: this process).

    The first ``n % world`` ranks get ``n // world + 1`` rows, the others ``n // world``; the
    blocks follow each other in rank order, so concatenating them gives ``range(n)`` back.
    """
    r = _rank() if rank is None else rank
    w = world_size() if world is None else world
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"rank {r} is not in a world of {w} processes; need 0 <= rank < world")
    if n < 0:
        raise ValueError(f"cannot shard {n} rows; need n >= 0")
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def shard(x: torch.Tensor, dim: int = 0, group: Any = None) -> torch.Tensor:
    """This rank's block of ``x`` along ``dim`` (:func:`shard_rows`); ``x`` itself in one process."""
    rows = shard_rows(x.shape[dim], rank(group), world_size(group))
    return x.narrow(dim, rows.start, rows.stop - rows.start)


def gather(x: torch.Tensor, n: int, dim: int = 0, group: Any = None) -> torch.Tensor:
    """The blocks of every rank along ``dim``, concatenated in rank order, on every rank.

    ``x`` is this rank's block of a tensor of ``n`` rows along ``dim``, split as :func:`shard_rows`
    splits them (blocks of unequal size are padded for the collective and trimmed after). The
    result has no autograd history. In one process it returns ``x``.
    """
    world, me = world_size(group), rank(group)
    if world == 1:
        return x
    mine = shard_rows(n, me, world)
    if x.shape[dim] != mine.stop - mine.start:
        raise ValueError(
            f"rank {me} holds {x.shape[dim]} rows along dim {dim}, but its block of {n} rows has "
            f"{mine.stop - mine.start}: pass the total row count n of the sharded tensor"
        )
    widest = shard_rows(n, 0, world)
    size = widest.stop - widest.start
    moved = x.detach().movedim(dim, 0).contiguous()
    padded = moved.new_zeros((size, *moved.shape[1:]))
    padded[: moved.shape[0]] = moved
    blocks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(blocks, padded, group=group)
    rows = [shard_rows(n, r, world) for r in range(world)]
    whole = torch.cat([b[: s.stop - s.start] for b, s in zip(blocks, rows)])
    return whole.movedim(0, dim)


def _gather_stat(value: Any, n: int, rows: slice, group: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim == 1 and value.shape[0] == rows.stop - rows.start:
        return gather(value, n, 0, group)
    return value


def ensemble_solve(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | AbstractTerm | None,
    y0: torch.Tensor,
    t_eval: torch.Tensor,
    solver: Any = None,
    *,
    field_for_rows: Callable[[slice], Any] | None = None,
    throw: bool = True,
    group: Any = None,
    **options: Any,
) -> Solution:
    r"""Solve an ensemble of independent problems split across the ranks of ``group``; every rank
    gets the whole result.

    Row ``i`` of ``y0`` (``[N, ...]``) is the initial state of problem ``i``. Each rank solves its
    contiguous block of rows (:func:`shard_rows`) with ``solve(..., per_sample=True)``: every sample
    has its own step size, accept/reject decisions and status, so its solution is the one a single
    process solving all ``N`` gives (per-sample mode's contract: a batched solve equals each
    sample solved alone). The blocks are all-gathered in rank order. In a single process (no group
    initialised) it is ``solve(f, y0, t_eval, solver, per_sample=True, **options)`` under
    ``torch.no_grad()``.

    **Arguments:**

    - ``f``: the vector field ``f(t, y)`` or a term shared by every sample; ``None`` with
      ``field_for_rows``.
    - ``field_for_rows``: instead of ``f``, a function ``rows -> f`` given this rank's ``slice``
      of the ensemble that returns the vector field (or term) of those rows: a parameter sweep
      (``lambda rows: partial(field, theta[rows])``) or SDE paths (a term driven by
      ``bm.rows(rows)`` of one seeded motion ``bm`` of the whole ensemble's shape: every sample
      then gets the same noise on any number of ranks; :meth:`~torchnde.AbstractBrownian.rows`).
    - ``y0``: ``[N, *state]``, one row per problem (a tensor; pack a tuple state into one).
    - ``t_eval``: output times, shared ``[n]`` or per problem ``[N, n]`` (sharded like ``y0``).
    - ``solver`` and ``**options``: as :func:`torchnde.solve` (``rtol``, ``atol``, ``dt``,
      ``controller``, ``max_steps``, ``compile``); ``dense``, ``save_steps``, ``event``,
      ``gradient`` and ``progress`` give ragged or per-process results and are refused.
    - ``throw``: raise the :class:`~torchnde.SolveError` subclass of the first failed sample (its
      global index in the message) on every rank; ``False`` returns the statuses instead.
    - ``group``: the process group (default: the default group).

    **Returns** a :class:`~torchnde.Solution` with ``ys`` ``[n, N, *state]``, ``ts`` as given,
    ``stats`` (``nfe``, ``steps``, ``accepted``, ``rejected``, ``forced``: ``[N]`` each) and
    ``status`` (``[N]``), identical on every rank. The result carries no autograd history: to
    train across ranks, use ``DistributedDataParallel`` (``docs/distributed.md``).

    Per-sample step sizes for batched solves: Kidger, *On Neural Differential Equations*, PhD
    thesis, Oxford, 2022 (arXiv:2202.02435); Lienen and Günnemann, *torchode: A
    Parallel ODE Solver for PyTorch*, 2022 (arXiv:2210.12375).

    ```python
    import functools, torch
    from torchnde import distributed

    def decay(rate, t, y):                              # a parameter sweep: one rate per sample
        return -rate.unsqueeze(-1) * y

    rates = torch.linspace(0.5, 2.0, 200, dtype=torch.float64)
    y0 = torch.ones(200, 1, dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    sol = distributed.ensemble_solve(None, y0, ts, "dopri5", rtol=1e-9, atol=1e-12,
                                     field_for_rows=lambda rows: functools.partial(decay, rates[rows]))
    assert torch.allclose(sol.ys[-1, :, 0], torch.exp(-rates), rtol=1e-7)
    ```
    """
    if (f is None) == (field_for_rows is None):
        raise TypeError("ensemble_solve needs exactly one of f (shared by every sample) and field_for_rows")
    refused = sorted(k for k in options if k in _RAGGED)
    if refused:
        raise TypeError(
            f"ensemble_solve does not take {', '.join(refused)}: it always solves per sample and "
            "gathers one output row per sample without autograd history; call torchnde.solve on "
            "each rank's shard (distributed.shard) for dense output, steps, events or gradients"
        )
    if not isinstance(y0, torch.Tensor) or y0.ndim < 1:
        raise TypeError(
            "ensemble_solve needs y0 as one tensor [N, *state] with a row per problem; pack a "
            "tuple state into one tensor (torch.cat) and split it in the vector field"
        )
    n = y0.shape[0]
    world, me = world_size(group), rank(group)
    if n < world:
        raise ValueError(f"an ensemble of {n} problems cannot be split over {world} ranks; use at most {n}")
    rows = shard_rows(n, me, world)
    t = torch.as_tensor(t_eval)
    if t.ndim == 2 and t.shape[0] != n:
        raise ValueError(f"per-sample t_eval has {t.shape[0]} rows, y0 has {n}; they must match")
    field = field_for_rows(rows) if field_for_rows is not None else f
    with torch.no_grad():
        local = solve(
            field,
            y0[rows],
            t[rows] if t.ndim == 2 else t,
            solver,
            per_sample=True,
            throw=False,
            **options,
        )
    if world == 1:
        sol = local
    else:
        stats = Stats(**{k: _gather_stat(v, n, rows, group) for k, v in local.stats.as_dict().items()})
        sol = Solution(
            ts=t,
            ys=gather(local.ys, n, 1, group),
            stats=stats,
            status=gather(local.status, n, 0, group),
        )
    if throw:
        _raise_first_failure(sol)
    return sol


def _raise_first_failure(sol: Solution) -> None:
    failed = ~((sol.status == Status.SUCCESS) | (sol.status == Status.EVENT))
    if not bool(failed.any()):
        return
    bad = failed.nonzero().flatten()
    i = int(bad[0])
    status = Status(int(sol.status[i]))
    more = f" (and {bad.numel() - 1} more)" if bad.numel() > 1 else ""
    raise ERRORS[status](
        f"ensemble sample {i}{more} stopped: {status.message}. Solve that sample alone with "
        f"torchnde.solve(..., per_sample=True) for the time, step size and a fix, or pass "
        f"throw=False to get every sample's status (sol.status)",
        sol,
    )
