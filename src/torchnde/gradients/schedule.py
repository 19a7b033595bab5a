r"""Checkpointing with a memory budget: a step loop differentiated by recomputation, holding at
most ``budget`` step inputs ("carries") after the forward pass, whatever the number of steps.

The number of steps is not known in advance (adaptive step sizes), so the carries are chosen
*online*, as the loop goes, by :class:`CheckpointTape`; the backward pass, :func:`sweep`,
recomputes the missing carries from the stored ones and differentiates one step at a time.
:class:`CheckpointedSolve` wraps both in an autograd Function for the solve loop.

**The scheme.** The tape keeps the carries at the multiples of a spacing :math:`d` (a power of
two). When a new multiple of :math:`d` would exceed the budget :math:`B`, :math:`d` doubles and
the carries that are no longer at multiples of it are dropped. After :math:`n` steps,
:math:`d` is the smallest power of two with :math:`\lceil n/d\rceil \le B` (so :math:`d = 1`
when :math:`n \le B` and :math:`d < 2n/B` otherwise), and the stored carries cut the run into
segments of at most :math:`d` steps. The backward sweep reverses each segment, last first, by
recursive bisection (Griewank, *Achieving logarithmic growth of temporal and spatial
complexity in reverse automatic differentiation*, Optimization Methods and Software 1, 1992):
to reverse steps :math:`[a, b)` from carry :math:`a`, advance without a graph to the midpoint
:math:`m`, reverse :math:`[m, b)`, drop carry :math:`m`, reverse :math:`[a, m)`. A segment of
:math:`L` steps costs :math:`C(L) = \lfloor L/2\rfloor + C(\lceil L/2\rceil) +
C(\lfloor L/2\rfloor)` graph-free steps, :math:`C(L) \le \tfrac{L}{2}\lceil\log_2 L\rceil`,
plus one differentiated replay per step, and keeps :math:`\lceil\log_2 L\rceil` extra carries
alive. In all, with :math:`n > B`,

.. math:: \text{replayed steps} \;\le\; n\,\bigl(1 + \tfrac12\lceil\log_2(n/B)\rceil\bigr),

and :func:`recompute_bound` gives the exact count (the sweep replays exactly that many steps,
fewer when whole stretches receive no gradient). Memory: at most :math:`B` carries after the
forward pass (:math:`B + 1` while it runs: the latest carry is held until the next one
arrives), :math:`B + \lceil\log_2 d\rceil` plus one step's graph during the backward pass.

This thinning scheme was chosen over the optimal online schedules (Stumm & Walther, *New
algorithms for optimal online checkpointing*, SIAM J. Sci. Comput. 32, 2010; Wang, Moin &
Iaccarino, *Minimal repetition dynamic checkpointing algorithm for unsteady adjoint
calculation*, SIAM J. Sci. Comput. 31, 2009) for its simplicity: those reach the binomial
bounds of *revolve* (Griewank & Walther, ACM TOMS 26, 2000), a constant factor fewer
recomputations for a given budget, at the price of considerably more bookkeeping; the
:math:`n \log(n/B)` growth is the same.

**Using it from a step loop.** The loop hands :class:`CheckpointedSolve` a ``context`` object
with four methods and gets the stacked outputs back, differentiable with respect to ``y0`` and
``params``::

    outputs = CheckpointedSolve.apply(context, budget, y0, *params)  # [n_out, ...]
    # after backward: context.recomputed_steps (int), for sol.stats

The context must satisfy:

- ``initial_carry(y0) -> carry0``: the carry before step 0, a tuple of tensors (e.g.
  ``(y0, f(t0, y0))``). Called once without a graph in the forward pass and once more under
  grad in the backward pass (not counted as a step), so that gradients reach ``y0`` and the
  parameters through it.
- ``run_forward(carry0, tape) -> outputs``: the step loop, run without a graph. Before taking
  (or upon accepting) step :math:`k = 0, 1, \dots` it calls ``tape.record(carry_k)`` with the
  carry before the step; at the end ``tape.finish(n_steps)``, where ``n_steps`` is the number
  of records or one less (a record for a step that was not taken is dropped). It returns the
  outputs stacked along a new first dimension. It must not modify recorded tensors in place
  (the tape keeps references, not copies), and it must log, per accepted step, whatever
  ``transition`` needs to replay it without the step-size controller: the step's time and size
  (a few scalars per step), since rejected attempts are not replayed.
- ``transition(k, carry) -> (next_carry, outputs_k)``: replays accepted step ``k`` from its
  input carry: a pure, deterministic function of ``(k, carry)`` (a stateful solver restores its
  state), producing the same ``next_carry`` as the forward pass did (bit for bit, so that
  restarting from a recomputed carry is exact). ``outputs_k`` is the tuple of output rows the
  step produced (e.g. interpolated outputs in :math:`(t_k, t_{k+1}]`), possibly empty. Called
  under ``torch.no_grad()`` to recompute and under ``torch.enable_grad()`` to differentiate.
- ``outputs_of(k) -> Sequence[int]``: the rows of ``outputs`` that step ``k`` produced, in the
  order of ``outputs_k``. Every row belongs to exactly one step (an output at :math:`t_0` is
  produced by step 0, as its carry's state), so a solve with outputs needs at least one step.

``params`` are the tensors that ``transition`` and ``initial_carry`` close over and that should
receive gradients (a vector field's parameters; the times too, if they are tensors the steps
use); tensors not listed receive none. A parameter some steps do not use simply gets no
contribution from them. The backward pass is not itself differentiable (no double backward).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.autograd.function import once_differentiable

__all__ = ["CheckpointTape", "CheckpointedSolve", "recompute_bound", "sweep"]

Carry = tuple[torch.Tensor, ...]
Grads = tuple[torch.Tensor | None, ...]


def _check_budget(budget: Any) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"the checkpoint budget must be a positive int, got {budget!r}")
    return budget


def _spacing(n_steps: int, budget: int) -> int:
    """The tape's final spacing after ``n_steps`` steps: the smallest power of two ``d`` with
    ``ceil(n_steps / d) <= budget``."""
    d = 1
    while -(-n_steps // d) > budget:
        d *= 2
    return d


class CheckpointTape:
    """Online choice of the carries to keep, at most ``budget`` of them (see the module
    docstring for the scheme and the loop's contract).

    ``record(carry)`` takes the carry before step ``k`` (``k`` counts the calls from 0);
    ``finish(n_steps)`` closes the tape. Afterwards ``indices`` lists the steps whose input
    carries are kept (always 0 among them), ``carry(i)`` returns one, and ``segments`` the runs
    of steps the backward sweep reverses from each.
    """

    def __init__(self, budget: int):
        self.budget = _check_budget(budget)
        self.spacing = 1
        self.n_recorded = 0
        self.n_steps: int | None = None
        self._kept: dict[int, Carry] = {}
        self._pending: tuple[int, Carry] | None = None

    def record(self, carry: Sequence[torch.Tensor]) -> None:
        """Take the carry before the next step (a tuple of tensors; kept detached, by reference)."""
        if self.n_steps is not None:
            raise RuntimeError("CheckpointTape.record after finish")
        if self._pending is not None:
            self._commit(*self._pending)
        self._pending = (self.n_recorded, tuple(t.detach() for t in carry))
        self.n_recorded += 1

    def finish(self, n_steps: int) -> None:
        """Close the tape after ``n_steps`` steps: the number of records, or one less (the
        carry recorded before a step that was not taken is dropped)."""
        if self.n_steps is not None:
            raise RuntimeError("CheckpointTape.finish called twice")
        if n_steps not in (self.n_recorded, self.n_recorded - 1) or n_steps < 0:
            raise ValueError(
                f"CheckpointTape.finish({n_steps}) after {self.n_recorded} records: the loop must "
                "record the carry before every step it takes (and at most one more)"
            )
        if self._pending is not None and self._pending[0] < n_steps:
            self._commit(*self._pending)
        self._pending = None
        self.n_steps = n_steps

    def _commit(self, k: int, carry: Carry) -> None:
        if k % self.spacing:
            return
        if len(self._kept) == self.budget:  # k == budget * spacing: thin out
            self.spacing *= 2
            self._kept = {i: c for i, c in self._kept.items() if i % self.spacing == 0}
            if k % self.spacing:
                return
        self._kept[k] = carry

    def __len__(self) -> int:
        """The number of carries held (after ``finish``: at most ``budget``)."""
        return len(self._kept) + (self._pending is not None)

    @property
    def indices(self) -> list[int]:
        """The steps whose input carries are kept, in increasing order."""
        return sorted(self._kept)

    def carry(self, index: int) -> Carry:
        """The kept carry before step ``index``."""
        return self._kept[index]

    @property
    def segments(self) -> list[tuple[int, int]]:
        """``(start, stop)`` for each kept carry: the steps ``start, ..., stop - 1`` that are
        recomputed from it."""
        if self.n_steps is None:
            raise RuntimeError("CheckpointTape.segments before finish")
        starts = self.indices
        return list(zip(starts, [*starts[1:], self.n_steps]))


def _bisection_cost(length: int) -> int:
    """Graph-free steps that recursive bisection spends reversing ``length`` steps."""
    cost, counts = 0, {length: 1}
    while counts:  # the recursion tree, level by level (two distinct lengths per level)
        nxt: dict[int, int] = {}
        for n, times in counts.items():
            if n > 1:
                cost += times * (n // 2)
                for part in (n - n // 2, n // 2):
                    nxt[part] = nxt.get(part, 0) + times
        counts = nxt
    return cost


def recompute_bound(n_steps: int, budget: int) -> int:
    r"""The number of steps :func:`sweep` replays (graph-free recomputations plus one
    differentiated replay per step) for a tape of ``n_steps`` steps and budget ``budget``; at
    most :math:`n(1 + \frac12\lceil\log_2(n/B)\rceil)` for :math:`n > B`, and :math:`n` for
    :math:`n \le B`."""
    budget = _check_budget(budget)
    if n_steps <= 0:
        return 0
    d = _spacing(n_steps, budget)
    full, rest = divmod(n_steps, d)
    return n_steps + full * _bisection_cost(d) + _bisection_cost(rest)


def _as_grads(grads: Sequence[torch.Tensor | None] | None, n: int, what: str) -> Grads:
    if grads is None:
        return (None,) * n
    grads = tuple(grads)
    if len(grads) != n:
        raise ValueError(f"{what}: {len(grads)} gradients for {n} tensors")
    return grads


def _leaf(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return t.requires_grad_() if (t.is_floating_point() or t.is_complex()) else t


def sweep(
    tape: CheckpointTape,
    transition: Callable[[int, Carry], tuple[Carry, Carry]],
    grad_final: Sequence[torch.Tensor | None] | None,
    grad_outputs: Callable[[int], Sequence[torch.Tensor | None]],
    params: Sequence[torch.Tensor] = (),
) -> tuple[Grads, tuple[torch.Tensor, ...], int]:
    r"""Backpropagate through the steps a finished ``tape`` recorded, last to first.

    ``transition(k, carry) -> (next_carry, outputs_k)`` replays step ``k``; ``grad_final`` is
    the incoming gradient of the carry after the last step and ``grad_outputs(k)`` that of
    ``outputs_k`` (``None`` entries mean zero, and so do ``grad_final=None`` and
    ``grad_outputs(k)`` returning ``None``). For each step, the
    carry before it is recomputed from the nearest kept carry by recursive bisection (module
    docstring), the step is replayed under grad, and :math:`(\lambda_{k+1}, \text{grad\_outputs}(k))`
    is pulled back to :math:`\lambda_k` and to ``params``.

    Returns ``(grad_carry0, grad_params, recomputed_steps)``: the gradient of the initial carry
    (``None`` entries are zero), one gradient per parameter (zeros for a parameter no step uses
    or that does not require grad), and the number of steps replayed, never more than
    :func:`recompute_bound`.
    """
    if tape.n_steps is None:
        raise RuntimeError("sweep needs a finished tape (CheckpointTape.finish)")
    params = tuple(params)
    wrt = tuple(p for p in params if p.requires_grad)
    acc: list[torch.Tensor | None] = [None] * len(wrt)
    replayed = 0

    def advance(k: int, carry: Carry, stop: int) -> Carry:
        nonlocal replayed
        with torch.no_grad():
            while k < stop:
                carry = tuple(transition(k, carry)[0])
                k += 1
                replayed += 1
        return carry

    def backstep(k: int, carry: Carry, lam: Grads | None) -> Grads:
        nonlocal replayed
        g_out = grad_outputs(k)
        g_out = () if g_out is None else tuple(g_out)
        if all(g is None for g in (*(lam or ()), *g_out)):  # nothing to pull back
            return (None,) * len(carry)
        with torch.enable_grad():
            inputs = tuple(_leaf(t) for t in carry)
            next_carry, outs = transition(k, inputs)
        replayed += 1
        next_carry, outs = tuple(next_carry), tuple(outs)
        lam = _as_grads(lam, len(next_carry), f"carry after step {k}")
        g_out = _as_grads(g_out or None, len(outs), f"outputs of step {k}")
        roots, seeds = [], []
        for t, g in zip((*next_carry, *outs), (*lam, *g_out)):
            if g is not None and t.requires_grad:
                roots.append(t)
                seeds.append(g)
        inputs_wrt = [t for t in inputs if t.requires_grad]
        if not roots:
            return (None,) * len(carry)
        grads = torch.autograd.grad(roots, [*inputs_wrt, *wrt], seeds, allow_unused=True)
        for i, g in enumerate(grads[len(inputs_wrt) :]):
            if g is not None:
                acc[i] = g if acc[i] is None else acc[i] + g
        it = iter(grads[: len(inputs_wrt)])
        return tuple(next(it) if t.requires_grad else None for t in inputs)

    def reverse(a: int, carry: Carry, b: int, lam: Grads | None) -> Grads:
        """Pull ``lam`` (after step ``b - 1``) back through steps ``a .. b-1`` from carry ``a``."""
        if b - a == 1:
            return backstep(a, carry, lam)
        m = a + (b - a) // 2
        lam = reverse(m, advance(a, carry, m), b, lam)  # the midpoint carry dies here
        return reverse(a, carry, m, lam)

    lam: Grads | None = None if grad_final is None else tuple(grad_final)
    for start, stop in reversed(tape.segments):
        lam = reverse(start, tape.carry(start), stop, lam)
    reverse = None  # type: ignore[assignment]  # it refers to itself through its closure cell: break the cycle
    if lam is None:  # no steps, no gradient given
        lam = ()
    grad_params = []
    it = iter(acc)
    for p in params:
        g = next(it) if p.requires_grad else None
        grad_params.append(torch.zeros_like(p) if g is None else g)
    return lam, tuple(grad_params), replayed


class CheckpointedSolve(torch.autograd.Function):
    """``CheckpointedSolve.apply(context, budget, y0, *params) -> outputs``: the loop of
    ``context`` (module docstring) run without a graph, keeping at most ``budget`` carries, and
    differentiated by :func:`sweep`. Sets ``context.checkpoints_held`` (carries kept) and
    ``context.n_steps`` after the forward pass, ``context.recomputed_steps`` after the backward.
    """

    @staticmethod
    def forward(ctx: Any, context: Any, budget: int, y0: torch.Tensor, *params: torch.Tensor) -> Any:
        tape = CheckpointTape(budget)
        with torch.no_grad():
            carry0 = tuple(context.initial_carry(y0.detach()))
            outputs = context.run_forward(carry0, tape)
        if tape.n_steps is None:
            raise RuntimeError("context.run_forward must call tape.finish(n_steps)")
        claimed = [0] * outputs.shape[0]
        for k in range(tape.n_steps):
            for i in context.outputs_of(k):
                claimed[i] += 1
        if any(c != 1 for c in claimed):
            raise ValueError(
                "context.outputs_of must assign every output row to exactly one step; got "
                f"claim counts {claimed} over {tape.n_steps} steps"
            )
        del carry0
        context.checkpoints_held = len(tape)
        context.n_steps = tape.n_steps
        ctx.context = context
        ctx.tape = tape
        ctx.save_for_backward(y0, *params)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_ys: torch.Tensor) -> Any:
        context, tape = ctx.context, ctx.tape
        y0, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad[2:]
        diff = tuple(p for p, need in zip(params, needs[1:]) if need)

        def grad_outputs(k: int) -> Grads:
            return tuple(grad_ys[i] for i in context.outputs_of(k))

        lam0, grad_diff, replayed = sweep(tape, context.transition, None, grad_outputs, diff)
        context.recomputed_steps = replayed
        # the initial carry (e.g. f(t0, y0)) depends on y0 and the parameters too
        y0_leaf = y0.detach().requires_grad_(needs[0])
        with torch.enable_grad():
            carry0 = tuple(context.initial_carry(y0_leaf))
        lam0 = _as_grads(lam0 or None, len(carry0), "initial carry")
        roots, seeds = [], []
        for t, g in zip(carry0, lam0):
            if g is not None and t.requires_grad:
                roots.append(t)
                seeds.append(g)
        wrt = [*([y0_leaf] if needs[0] else []), *diff]
        grads: tuple[torch.Tensor | None, ...] = (None,) * len(wrt)
        if roots and wrt:
            grads = torch.autograd.grad(roots, wrt, seeds, allow_unused=True)
        grad_y0 = None
        if needs[0]:
            grad_y0 = grads[0] if grads[0] is not None else torch.zeros_like(y0)
            grads = grads[1:]
        out, it = [], iter(zip(grad_diff, grads))
        for need in needs[1:]:
            if need:
                g_sweep, g_init = next(it)
                out.append(g_sweep if g_init is None else g_sweep + g_init)
            else:
                out.append(None)
        return (None, None, grad_y0, *out)
