"""Jacobians of the vector field, for the implicit solvers: by autograd (the default), by
finite differences (``jacobian="fd"``), or the user's own.

For a small state whose field takes a stack of states (most do), autograd's Jacobian is one
evaluation of ``f`` on ``N`` copies of the state and one backward pass (:class:`StateCopies`,
checked once per solve); otherwise ``torch.autograd.functional.jacobian`` with
``vectorize=True`` (reverse mode, batched over the rows), which measured several times faster
than ``torch.func.jacfwd`` on small states; a vector field with an operation that has no
batching rule falls back to the row-by-row version. A solver's
``jacobian`` option replaces autograd for ``df/dy``: the user's exact ``df/dy`` (a callable), or
forward differences of ``f`` (``"fd"``, :func:`finite_difference_jacobian`, the default of
scipy's stiff solvers); ``df/dt`` of a time-dependent field still comes from autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._names import did_you_mean
from .base import Func

__all__ = [
    "StateCopies",
    "autograd_engine",
    "check_jacobian_option",
    "dense_solver",
    "finite_difference_jacobian",
    "ignores_time",
    "jacobians",
]

# the string values of an implicit solver's ``jacobian`` option ("autograd" is ``None``)
JACOBIAN_NAMES = ("autograd", "fd")


def _autograd_jacobian(fn: Callable[..., torch.Tensor], args: Any, create_graph: bool) -> Any:
    if isinstance(args, torch.Tensor) and args.ndim == 1:
        return _rows_jacobian(fn, args, create_graph)
    jac = torch.autograd.functional.jacobian
    with torch.enable_grad():
        try:
            return jac(fn, args, create_graph=create_graph, vectorize=True)
        except (RuntimeError, NotImplementedError):  # an op without a batching rule
            return jac(fn, args, create_graph=create_graph)


# What ``torch.autograd.grad`` runs once it has normalised and checked its arguments. Private:
# absent from some torch releases, and its arguments could change; it is used only after a probe
# on a tiny graph gives the right answer (``autograd_engine``), else the public function is.
_ENGINE: list[Callable | None] = []


def autograd_engine() -> Callable | None:
    """``torch.autograd.graph._engine_run_backward`` when a probe on a tiny graph confirms that it
    computes a vector-Jacobian product as ``torch.autograd.grad`` does (checked once), else
    ``None``. It skips ``grad``'s per-call argument handling, a large part of a small graph's
    backward pass (the adjoint calls it once per evaluation)."""
    if not _ENGINE:
        run = getattr(torch.autograd.graph, "_engine_run_backward", None)
        try:
            with torch.enable_grad():
                x = torch.ones(2, dtype=torch.float64, requires_grad=True)
                got = run((x * 3.0,), (torch.ones(2, dtype=torch.float64),), False, False, (x,), True,
                          accumulate_grad=False)  # fmt: skip
            ok = x.grad is None and torch.equal(got[0], torch.full((2,), 3.0, dtype=torch.float64))
        except Exception:  # any failure means: use the public function
            ok = False
        _ENGINE.append(run if ok else None)
    return _ENGINE[0]


# Up to this many rows the Jacobian is taken one backward pass per row through the engine
# directly, below that ``is_grads_batched``'s vectorised pass costs more than its rows: a whole
# Rodas5P solve (interleaved runs on a loaded machine) took 0.87x the time on Van der Pol
# (N = 2) and 0.94x on Robertson (N = 3); HIRES's N = 8 Jacobian alone took 3.2x.
ROW_BY_ROW = 3


def _rows_jacobian(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, create_graph: bool
) -> torch.Tensor:
    """``d fn(x) / dx`` for a 1-D ``x`` and 1-D output: one vectorised backward pass over the
    identity's rows (``is_grads_batched``), the same pass ``torch.autograd.functional.jacobian``
    makes without its input/output bookkeeping (measured 15% cheaper on Robertson's step); up
    to :data:`ROW_BY_ROW` rows (and not ``create_graph``), one engine call per row instead."""
    with torch.enable_grad():
        inp = x if (create_graph and x.requires_grad) else x.detach().requires_grad_()
        out = fn(inp)
        if not out.requires_grad:  # f does not depend on x (nor on anything recorded)
            return out.new_zeros(out.shape[0], x.shape[0])
        n = out.shape[0]
        eye = torch.eye(n, dtype=out.dtype, device=out.device)
        run = (
            autograd_engine() if n <= ROW_BY_ROW and not create_graph and type(out) is torch.Tensor else None
        )
        if run is not None:
            parts = [run((out,), (eye[i],), i < n - 1, False, (inp,), True, accumulate_grad=False)[0]
                     for i in range(n)]  # fmt: skip
            return torch.stack([torch.zeros_like(inp) if g is None else g for g in parts])
        try:
            (rows,) = torch.autograd.grad(
                out,
                inp,
                eye,
                retain_graph=True,
                create_graph=create_graph,
                is_grads_batched=True,
                allow_unused=True,
            )
        except (RuntimeError, NotImplementedError):  # an op without a batching rule
            grads = (
                torch.autograd.grad(
                    out[i], inp, retain_graph=True, create_graph=create_graph, allow_unused=True
                )[0]
                for i in range(out.shape[0])
            )
            rows = torch.stack([torch.zeros_like(inp) if g is None else g for g in grads])
    return out.new_zeros(out.shape[0], x.shape[0]) if rows is None else rows


# The copies way (:class:`StateCopies`) is tried for a 1-D (or 0-d) state of up to this many
# unknowns: it evaluates ``f`` on ``N`` copies of the state, where the row-by-row way makes one
# forward pass and ``N`` backward ones. Measured on a 2-64-64-N tanh MLP: 0.47x to 0.58x the
# row-by-row way's time for 1-D states of 2 to 64 unknowns; on a state ``[B, d]`` (whose rows the
# field treats as a batch) the copies are ``N`` batches of ``B`` rows each, and [32, 2] took
# 2.6x: a multi-dimensional state takes the copies up to :data:`COPIES_ANY_SHAPE` unknowns.
COPIES_MAX = 64
# Multi-dimensional states up to this many unknowns: a 2-64-2 MLP on [2, 2], [4, 2], [8, 2] took
# 0.45x, 0.53x, 0.67x the row-by-row time (a 2-64-64-2 one on [8, 2] 0.94x), a field of
# ``q, p = y`` on [2, 1] to [2, 8] 0.44x-0.60x.
COPIES_ANY_SHAPE = 16
# Per sample (``[B, N]``), the copies are ``N`` batches of ``B`` rows: taken while ``N * B`` is
# at most this. A 4-64-4 tanh MLP's Jacobian took 0.39x the vectorised way's time at B = 16 and
# 1.1x at B = 256 (N * B = 1024); Robertson's (elementwise) 0.40x at B = 256.
COPIES_ROWS = 256


class StateCopies:
    r"""``df/dy`` from one evaluation of ``f`` on ``N`` copies of the state and one backward pass.

    A vector field written for one state usually also evaluates a stack of states along a new
    axis: an ``nn.Module`` treats leading axes as a batch, and a field written as
    ``a, b, c = y.unbind()`` treats trailing ones so. Stacking ``N = y.numel()`` copies
    :math:`Y = (y, \dots, y)` and back-propagating the identity, copy :math:`i` with the
    cotangent :math:`e_i`, gives row :math:`i` of :math:`J = \partial f/\partial y` in copy
    :math:`i`'s gradient: one forward and one backward pass where the row-by-row way takes one
    forward and ``N`` backward passes (on Robertson, ``N = 3``: about 140 against 290 us for the
    whole Jacobian) -- the reverse-mode analogue of evaluating finite differences as one batch.

    Whether ``f`` treats the new axis as a batch is checked once, on the first call, for a
    leading axis and then a trailing one: ``f`` of a stack whose second copy is a perturbed state
    must equal ``f`` of each state alone, and a cotangent on the first copy's output must give
    the other copies' inputs a gradient of exactly zero (no copy reads another: a field that
    averages over that axis, branches on a norm of the whole tensor or mixes through a matrix
    product on it fails this). Where neither axis passes (or ``f`` raises on the stack), the call
    returns ``None`` and the caller takes the row-by-row way for the rest of the solve.

    Per sample (a batch ``[B, N]``), the copies go on a new leading axis, ``[N, B, N]``, copy
    ``i`` of every sample taking the cotangent :math:`e_i`: one matrix per sample, while
    ``N * B`` is at most :data:`COPIES_ROWS` (beyond, the vectorised row-by-row way is cheaper).

    The same stack serves two more callers: :meth:`with_time` (each copy with its own time, so
    the one pass also gives ``df/dt``, for Rosenbrock steps on a time-dependent field) and
    :meth:`evaluate` (forward differences' ``N`` columns in one call).

    ``call(s, Y)``: the user's ``f`` at the loop's time ``s`` on a stack ``Y`` (the state's shape
    with one more axis), in the loop's sign; ``count``: adds to the solve's evaluation counter.
    """

    def __init__(
        self, call: Callable[[Any, torch.Tensor], torch.Tensor], count: Callable[[int], None]
    ) -> None:
        self.call = call
        self.count = count
        self.axis: int | None = None  # 0 (leading), -1 (trailing); None: not checked yet
        self.usable = True
        self._identity: torch.Tensor | None = None  # the cotangent: copy i gets e_i
        self.timed: bool | None = None  # whether f takes a time per copy; None: not checked yet

    def __call__(
        self, s: Any, y: torch.Tensor, create_graph: bool, batched: bool = False
    ) -> torch.Tensor | None:
        """``df/dy``: ``[N, N]``, or per sample (``batched``: ``y`` of shape ``[B, ...]``)
        ``[B, N, N]``; ``None`` where the caller is to take the row-by-row way."""
        batch = y.shape[0] if batched else 1
        n = y.numel() // batch if batch else 0
        if not self._ready(s, y, n, batch, batched):
            return None
        out, grad, _ = self._pass(s, y, n, batch, batched, create_graph, timed=False)
        if grad is None:  # f does not depend on y
            return out.new_zeros(*y.shape[:1] if batched else (), n, n)
        if batched:  # [N, B, N] -> [B, N, N]
            return grad.reshape(n, batch, n).permute(1, 0, 2)
        rows = grad.reshape(n, n)
        return rows if self.axis == 0 else rows.t()

    def with_time(
        self, s: Any, y: torch.Tensor, create_graph: bool
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        r"""``(df/dy [N, N], df/dt [N])`` from the same single pass, each copy also getting its
        own time (a ``[N, 1]`` or ``[N]`` float64 tensor, broadcasting against the stack) whose
        gradient under copy ``i``'s cotangent :math:`e_i` is :math:`\partial f_i/\partial t`.
        Checked once, as the copies themselves, with the second copy's time moved too; ``None``
        where ``f`` does not take a time per copy (a ``float(t)``, a branch on ``t``) or the
        copies are not usable: the caller then takes the row-by-row pass, which gives both."""
        n = y.numel()
        if self.timed is False or not self._ready(s, y, n, 1, False):
            return None
        if self.timed is None:
            with _unseen():
                self.timed = self._timed(s, y.detach(), n)
            if not self.timed:
                return None
        out, grad, grad_t = self._pass(s, y, n, 1, False, create_graph, timed=True)
        dy = out.new_zeros(n, n) if grad is None else grad.reshape(n, n)
        dt = out.new_zeros(n) if grad_t is None else grad_t.reshape(n).to(out.dtype)
        return (dy if self.axis == 0 else dy.t()), dt

    def evaluate(self, s: Any, points: torch.Tensor, y: torch.Tensor, batched: bool) -> torch.Tensor | None:
        """``f`` at ``N`` states in one call on the copies' axis: ``points`` ``[N, N]`` (row
        ``j`` a flattened state near ``y``), per sample ``[B, N, N]``; returns the flattened
        outputs in the same layout, or ``None`` (the caller evaluates them one by one). Forward
        differences (:func:`finite_difference_jacobian`) use it for their columns."""
        batch = y.shape[0] if batched else 1
        n = points.shape[-1]
        if not self._ready(s, y, n, batch, batched):
            return None
        state = y.shape[1:] if batched else y.shape
        if batched:  # [B, N, N] -> [N, B, ...]
            stack = points.transpose(0, 1).reshape(n, batch, *state)
        else:
            stack = points.reshape(n, *state) if self.axis == 0 else points.t().reshape(*state, n)
        out = self.call(s, stack)
        self.count(1)
        if batched:  # -> [B, N, N]
            return out.reshape(n, batch, n).transpose(0, 1)
        rows = out.reshape(n, n)
        return rows if self.axis == 0 else rows.t()

    def _ready(self, s: Any, y: torch.Tensor, n: int, batch: int, batched: bool) -> bool:
        """Whether this call takes the copies: usable, within :data:`COPIES_MAX` unknowns and
        :data:`COPIES_ROWS` rows (not this time otherwise: a batch may shrink later), and ``f``
        checked to take them (on the first call)."""
        if not self.usable or n > COPIES_MAX or n * batch > COPIES_ROWS:
            return False
        if self.axis is None:
            with _unseen():
                self.axis = self._probe(s, y.detach(), n, batched)
            if self.axis is None:
                self.usable = False
        return self.usable

    def _pass(self, s: Any, y: torch.Tensor, n: int, batch: int, batched: bool, create_graph: bool,
              timed: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
        """``(f(copies), d/d copies, d/d times or None)`` of the identity cotangent: one forward
        pass on the stack (with a time per copy when ``timed``) and one backward pass."""
        axis = self.axis
        assert axis is not None
        with torch.enable_grad():
            stack = _copies(y if (create_graph and y.requires_grad) else y.detach(), n, axis)
            if not stack.requires_grad:
                stack.requires_grad_()
            inputs: tuple[torch.Tensor, ...] = (stack,)
            if timed:
                inputs = (stack, _times(float(s), n, axis, y.ndim, y.device).requires_grad_())
            out = self.call(inputs[1] if timed else s, stack)
            self.count(1)
            if not out.requires_grad:
                return out, None, None
            cotangent = self._cotangent(out, n, batch, batched)
            run = autograd_engine() if not create_graph and type(out) is torch.Tensor else None
            if run is not None:
                grads = run((out,), (cotangent,), False, False, inputs, True, accumulate_grad=False)
            else:
                grads = torch.autograd.grad(
                    out, inputs, cotangent, create_graph=create_graph, allow_unused=True
                )
        return out, grads[0], (grads[1] if timed else None)

    def _cotangent(self, out: torch.Tensor, n: int, batch: int, batched: bool) -> torch.Tensor:
        """The identity on the copies (copy ``i`` of every sample gets ``e_i``), cached."""
        cotangent = self._identity
        if cotangent is None or cotangent.shape != out.shape or cotangent.dtype != out.dtype:
            eye = torch.eye(n, dtype=out.dtype, device=out.device)
            if batched:
                eye = eye.unsqueeze(1).expand(n, batch, n)
            with torch.inference_mode(False):  # a cached constant must outlive inference mode
                cotangent = self._identity = eye.reshape(out.shape).clone()
        return cotangent

    def _probe(self, s: Any, y: torch.Tensor, n: int, batched: bool) -> int | None:
        """The axis along which ``f`` treats copies as a batch (see the class docstring), or
        ``None``; ``f`` is evaluated on the state, a perturbed state and up to two stacks. Per
        sample only a leading axis is tried (the per-sample time broadcasts against leading axes)."""
        try:
            other, alone = self._alone(s, y, s)
        except Exception:  # f fails on its own state: leave it to the row-by-row way to report
            return None
        for axis in (0,) if batched else (0, -1):
            try:
                if self._separable(s, y, other, alone, n, axis):
                    return axis
            except Exception:  # f does not take the stack (a shape error, a branch on a value)
                continue
        return None

    def _separable(self, s: Any, y: torch.Tensor, other: torch.Tensor, alone: tuple[torch.Tensor, ...],
                   n: int, axis: int, other_s: float | None = None) -> bool:  # fmt: skip
        """Whether ``f`` of a stack (copy 1 ``other``, the rest ``y``) equals ``f`` of each state
        ``alone`` and no copy's output reads another copy's input. With ``other_s``, each copy
        also gets its own time (copy 1 ``other_s``, the rest ``s``), and no copy's output may read
        another copy's time either."""
        copies = max(n, 2)
        stack = _copies(y, copies, axis)
        stack.select(axis, 1).copy_(other)
        stack.requires_grad_()
        times = None
        if other_s is not None:
            times = _times(float(s), copies, axis, y.ndim, y.device)
            times.view(-1)[1] = other_s
            times.requires_grad_()
        with torch.enable_grad():
            out = self.call(s if times is None else times, stack)
            self.count(1)
            if type(out) is not torch.Tensor or out.shape != stack.shape or out.dtype != y.dtype:
                return False
            tol = 1e3 * torch.finfo(y.dtype).eps
            for i in range(copies):
                ref = alone[1] if i == 1 else alone[0]
                got = out.select(axis, i)
                bound = tol * (ref.abs() + ref.abs().max())
                if not bool(((got - ref).abs() <= bound).all()):
                    return False
            if not out.requires_grad:
                return True
            cotangent = torch.zeros_like(out)
            cotangent.select(axis, 0).fill_(1.0)
            inputs = (stack,) if times is None else (stack, times)
            grads = torch.autograd.grad(out, inputs, cotangent, allow_unused=True)
        for grad in grads:
            if grad is not None:
                grad.select(axis, 0).zero_()
                if bool(grad.ne(0).any()):
                    return False
        return True

    def _alone(self, s: Any, y: torch.Tensor, other_s: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``(other, (f(s, y), f(other_s, other)))``: a state near ``y`` (each element moved by
        1/64 of its size plus the mean size) and ``f`` of each state alone, the checks' reference."""
        scale = float(y.abs().mean()) or 1.0
        other = y + (y.abs() + scale) * 2.0**-6
        with torch.no_grad():
            alone = (self.call(s, y), self.call(other_s, other))
        self.count(2)
        return other, alone

    def _timed(self, s: Any, y: torch.Tensor, n: int) -> bool:
        """Whether ``f`` takes a time per copy on the copies' axis (see :meth:`with_time`)."""
        t = float(s)
        other_t = t + (abs(t) + 1.0) * 2.0**-6
        try:
            other, alone = self._alone(s, y, other_t)
            return self._separable(s, y, other, alone, n, self.axis, other_t)  # type: ignore[arg-type]
        except Exception:  # f does not take a tensor of times (float(t), a branch on t)
            return False


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _unseen() -> Any:
    """Saved-tensor hooks that keep each tensor as it is. The innermost hooks are the ones used,
    so inside this a checkpointed region's own (``torch.utils.checkpoint``'s, which the
    ``Checkpoint`` strategy uses) do not see what the once-per-solve checks save: those run in
    the forward pass and not in the step's recomputation, which must save the same tensors."""
    return torch.autograd.graph.saved_tensors_hooks(_same, _same)


def _times(t: float, n: int, axis: int, ndim: int, device: torch.device) -> torch.Tensor:
    """``n`` copies of the time ``t`` (float64) shaped to broadcast against a stack of ``n``
    states of ``ndim`` axes along ``axis``: ``[n, 1, ...]`` for a leading axis, ``[n]`` for a
    trailing one (it then also matches a part of the state unbound from it, ``[n]``)."""
    shape = (n, *([1] * ndim)) if axis == 0 else (n,)
    return torch.full(shape, t, dtype=torch.float64, device=device)


def _copies(y: torch.Tensor, n: int, axis: int) -> torch.Tensor:
    """``n`` copies of ``y`` stacked along a new leading (``axis=0``) or trailing (``-1``) axis,
    contiguous (a field may view or reshape its input)."""
    return torch.stack([y] * n, axis)


def finite_difference_jacobian(
    func: Func, t: Any, y: torch.Tensor, f0: torch.Tensor | None = None, *, batched: bool
) -> torch.Tensor:
    r"""``df/dy`` at ``(t, y)`` by forward differences: column ``j`` is
    :math:`(f(t, y + \delta_j e_j) - f(t, y)) / \delta_j`, ``N`` evaluations of ``f`` (one more
    when ``f0 = f(t, y)`` is not given), as scipy's stiff solvers do by default.

    The increment is :math:`\delta_j = \sqrt{\varepsilon}\,\max(|y_j|,\ \sqrt{\varepsilon}\,\|y\|_\infty)`
    (``1`` for an all-zero state), rounded so that :math:`y_j + \delta_j` is exact: the
    truncation and rounding errors of the quotient are then both of order
    :math:`\sqrt{\varepsilon}` relative to the scale of ``f`` (J. E. Dennis & R. B. Schnabel,
    *Numerical Methods for Unconstrained Optimization and Nonlinear Equations*, SIAM 1996,
    section 5.4), about ``1e-8`` in float64. Per sample (``batched``, ``y`` of shape
    ``[B, ...]``) each sample takes its own increments and the ``N`` evaluations are of the whole
    batch: ``[B, N, N]``. Where ``func`` carries the solve's :class:`StateCopies` (a small state
    whose field takes a stack of states), the ``N`` evaluations are one call on the stack.
    Differentiable as the torch operations it is made of.
    """
    shape = y.shape
    lead = (shape[0],) if batched else ()
    x = y.reshape(*lead, -1)
    base = (func(t, y) if f0 is None else f0).reshape(*lead, -1)
    root = torch.finfo(x.real.dtype).eps ** 0.5
    size = x.abs()
    floor = root * size.amax(-1, keepdim=True)
    step = root * torch.where(size > floor, size, torch.where(floor > 0, floor, 1.0))
    step = (x + step) - x  # the increment the sum really carries
    points = x.unsqueeze(-2) + torch.diag_embed(step)  # row j: y + step_j e_j
    copies = getattr(func, "copies", None)  # all N points in one call where f takes a stack
    together = None if copies is None else copies.evaluate(t, points, y, batched)
    if together is not None:
        return (together.transpose(-1, -2) - base.unsqueeze(-1)) / step.unsqueeze(-2)
    outs = [func(t, p.view(shape)).reshape(*lead, -1) for p in points.unbind(-2)]
    return (torch.stack(outs, -1) - base.unsqueeze(-1)) / step.unsqueeze(-2)


def jacobians(
    func: Func, t: Any, y: torch.Tensor, *, batched: bool, create_graph: bool = False, with_time: bool = False,
    f0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """``(df/dy, df/dt or None)`` at ``(t, y)`` over the flattened state.

    Global (``batched=False``): ``[N, N]`` and ``[N]``. Per sample (``batched=True``, ``y`` of
    shape ``[B, ...]``, ``t`` a ``[B]`` tensor): ``[B, N, N]`` and ``[B, N]`` -- rows of ``f``
    depend only on their own sample, so the Jacobian of the batch sum holds every sample's block.
    Differentiable (the graph of ``f`` recorded) when ``create_graph``. ``df/dy`` comes from
    ``func.jacobian`` when the solver's option set it (the user's callable, or ``"fd"``: forward
    differences, which reuse ``f0 = f(t, y)`` when given).
    """
    shape = y.shape
    lead = (shape[0],) if batched else ()
    x = (y if create_graph else y.detach()).reshape(*lead, -1)

    def out(tt: Any, v: torch.Tensor) -> torch.Tensor:
        f = func(tt, v.view(shape)).reshape(*lead, -1)
        return f.sum(0) if batched else f

    user = getattr(func, "jacobian", None)  # the solver's ``jacobian`` option, in loop layout
    if with_time:
        t_tensor = (
            t.detach().to(torch.float64)
            if batched
            else torch.as_tensor(t, dtype=torch.float64, device=y.device)
        )
        if user is None and not batched:  # one autograd pass for both
            copies = getattr(func, "copies", None)
            both = None if copies is None else copies.with_time(t, x.view(shape), create_graph)
            if both is not None:
                return both
            dt, dy = _autograd_jacobian(out, (t_tensor, x), create_graph)
            return dy, dt.to(y.dtype).reshape(-1)
    if user == "fd":
        dy = finite_difference_jacobian(func, t, x.view(shape), f0, batched=batched)
    elif user is not None:
        dy = user(t, x.view(shape))
    else:
        copies = getattr(func, "copies", None)
        dy = None if copies is None else copies(t, x.view(shape), create_graph, batched)
        if dy is None:
            dy = _autograd_jacobian(lambda v: out(t, v), x, create_graph)
            if batched:
                dy = dy.permute(1, 0, 2)  # [N, B, N] -> [B, N, N]
    if not with_time:
        return dy, None
    dt = _autograd_jacobian(lambda tt: out(tt, x), t_tensor, create_graph)  # [N, B] or [N]
    return dy, (dt.transpose(0, 1) if batched else dt.reshape(-1)).to(y.dtype)


def ignores_time(func: Func, t: Any, y: torch.Tensor) -> bool:
    """Whether ``f`` ignores ``t`` (``t`` is not in its graph), so that ``df/dt = 0``."""
    if isinstance(t, torch.Tensor):
        t_tensor = t.detach().to(torch.float64).requires_grad_(True)
    else:
        t_tensor = torch.tensor(float(t), dtype=torch.float64, device=y.device, requires_grad=True)
    with torch.enable_grad():
        out = func(t_tensor, y.detach())
        if not out.requires_grad:
            return True
        (grad,) = torch.autograd.grad(out.sum(), t_tensor, allow_unused=True)
    return grad is None


def check_jacobian_option(solver: str, jacobian: Any) -> Callable[..., torch.Tensor] | str | None:
    """Validate an implicit solver's ``jacobian`` option: ``None`` or ``"autograd"`` (returned as
    ``None``), ``"fd"`` (finite differences), or a callable ``jacobian(t, y) -> df/dy``."""
    if isinstance(jacobian, str):
        if jacobian not in JACOBIAN_NAMES:
            raise ValueError(
                f"{solver}(jacobian=...) must be 'autograd' (the default), 'fd' (finite differences) or "
                f"a callable jacobian(t, y) returning df/dy, got {jacobian!r}.{did_you_mean(jacobian, JACOBIAN_NAMES)}"
            )
        return None if jacobian == "autograd" else jacobian
    if jacobian is not None and not callable(jacobian):
        raise TypeError(
            f"{solver}(jacobian=...) must be None (autograd), 'fd' (finite differences) or a callable "
            f"jacobian(t, y) returning df/dy, got {type(jacobian).__name__}"
        )
    return jacobian


# Up to this many unknowns a matrix used for several solves is inverted once and each solve is a
# matrix-vector product: one inversion and eight products cost less than eight LU solves
# (measured 23 vs 83 us for N = 3 on CPU, where every lu_solve call has a fixed cost of about
# 10 us). The forward error of either way is of order cond(M) times the unit roundoff (N. J.
# Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., section 14.1); the inverse is
# not backward stable, which a stage or a Newton correction does not need.
SMALL_SYSTEM = 16


def dense_solver(m: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``b -> m^{-1} b`` for a matrix that several solves share: ``m [N, N]`` and ``b [N]``, or
    per sample ``m [B, N, N]`` and ``b [B, N]``. An inverse up to :data:`SMALL_SYSTEM` unknowns,
    an LU factorisation beyond."""
    if m.shape[-1] <= SMALL_SYSTEM:
        inverse = torch.linalg.inv_ex(m)[0]
        if m.ndim == 2:
            return lambda b: torch.mv(inverse, b)
        return lambda b: (inverse @ b.unsqueeze(-1)).squeeze(-1)
    lu, piv = torch.linalg.lu_factor(m)
    return lambda b: torch.linalg.lu_solve(lu, piv, b.unsqueeze(-1)).squeeze(-1)
