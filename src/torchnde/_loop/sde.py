"""An SDE term bound to its problem: the diffusion in the loop's layout, the Brownian motion and
the product of the diffusion with a Brownian increment, for each noise type.

:func:`bind_sde` runs once per solve, after ``Problem.build`` (the drift is the problem's vector
field). It checks what the SDE solvers need (forward time), evaluates the diffusion once at the
initial point to check its shape and learn the number of Brownian motions, and makes the
Brownian motion when the term has none: a stored :class:`~torchnde.BrownianPath` for fixed steps
on one time grid, a :class:`~torchnde.BrownianInterval` over the solve's span for adaptive steps
(which refuse a path that depends on the order of the queries) and for per-sample time spans
(whose samples query the path at times of their own). The result hangs on the problem
(``Problem.sde``) and on the loop's vector field (``func.sde``), where the stochastic solvers
read it: the ODE hot path is untouched. For the KL channel of a latent SDE (:mod:`.kl`) under
diagonal noise, the Brownian motion has the user's shape and is padded with a zero entry for the
channel.

**Tuple states.** The loop steps a tuple state as its parts flattened and concatenated
(``Problem.unflatten``), and the diffusion is lowered the same way: ``g(t, (y_1, ..., y_k))``
returns a tuple whose part ``i`` is shaped like ``y_i`` (diagonal noise: one Brownian motion per
element of each part, ``W`` of shape ``(N,)`` for ``N`` elements in all, in the parts' order) or
``(*y_i.shape, m)`` (additive and general noise: every part driven by one shared
``m``-dimensional ``W`` of shape ``(m,)``; scalar noise: ``m = 1``). The loop sees the
concatenated SDE, so a tuple solve is the solve of the concatenated state on the same path.

**Per-sample mode.** The state is ``[B, ...]`` (a tuple: ``[B, N]``), the Brownian motion has
the batch layout (leading axis ``B``: diagonal noise shaped like the state, otherwise
``(B, ..., m)``), and sample ``b`` reads row ``b`` of the increment over its own step
``[s_b, s_b + h_b]``: the step's times are read on the host (one more host read per step) and
the path is queried once per distinct interval. A per-sample solve is therefore the solve of each
sample alone on its row of the path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..brownian import AbstractBrownian, BrownianInterval, BrownianPath
from ..terms import SDETerm
from .kl import KLTerm, PaddedBrownian

__all__ = ["BoundSDE", "bind_sde"]


class BoundSDE:
    """The SDE as the stochastic solvers see it (forward time ``s = t``, the loop's layout).

    - ``diffusion(s, y)``: ``g`` at the time ``s`` (a host float, or per sample a ``[B]``
      tensor) and the loop's state ``y`` (evaluations counted with the drift's);
    - ``increment(s, h)``: ``W(s + h) - W(s)``; ``levy(s, h)``: ``(W, H)`` over the same step
      (per sample: row ``b`` over sample ``b``'s step);
    - ``prod(g, dw)``: :math:`g\\,dW` for the noise type;
    - ``noise``, ``calculus``, ``brownian``, ``m`` (Brownian motions per row; the state size for
      diagonal noise), ``per_sample``;
    - ``g``: the diffusion in the loop's layout, uncounted, for the gradient strategies'
      backward passes; :meth:`counted` rebinds the counted one to another counter.
    """

    __slots__ = ("brownian", "calculus", "diffusion", "g", "m", "noise", "per_sample", "prod")

    def __init__(self, g: Callable, counter: list[int], noise: str, calculus: str, brownian: AbstractBrownian,
                 m: int, per_sample: bool = False):  # fmt: skip
        self.g, self.noise, self.calculus, self.brownian, self.m = g, noise, calculus, brownian, m
        self.per_sample = per_sample
        self.diffusion = _counting(g, counter)
        self.prod = _PRODUCTS[noise]

    def counted(self, counter: Any) -> BoundSDE:
        """The same SDE with its diffusion's evaluations counted in ``counter`` (anything whose
        ``counter[0]`` can be incremented)."""
        return BoundSDE(self.g, counter, self.noise, self.calculus, self.brownian, self.m, self.per_sample)

    def increment(self, s: Any, h: Any) -> torch.Tensor:
        if self.per_sample:
            return _by_rows(lambda a, b: (self.brownian.increment(a, b),), self.brownian, s, h)[0]
        return self.brownian.increment(s, s + h)

    def levy(self, s: Any, h: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.per_sample:
            return _by_rows(self.brownian.levy, self.brownian, s, h)  # type: ignore[return-value]
        return self.brownian.levy(s, s + h)


def _by_rows(query: Callable, bm: AbstractBrownian, s: torch.Tensor, h: torch.Tensor) -> tuple:
    """``query(s_b, s_b + h_b)`` read in row ``b``, for every sample ``b``: one query per distinct
    interval; samples that stand still (``h_b = 0``) get zeros."""
    lo, hi = s.tolist(), (s + h).tolist()  # the step's times on the host: the path is queried there
    groups: dict[tuple[float, float], list[int]] = {}
    for b, key in enumerate(zip(lo, hi)):
        if key[0] != key[1]:
            groups.setdefault(key, []).append(b)
    if len(groups) == 1:
        ((key, rows),) = groups.items()
        if len(rows) == len(lo):  # the common case: every sample on one grid
            return tuple(query(*key))
    out = tuple(torch.zeros(bm.shape, dtype=bm.dtype, device=bm.device) for _ in range(2))
    for key, rows in groups.items():
        index = torch.tensor(rows, device=bm.device)
        for o, v in zip(out, query(*key)):
            o[index] = v[index]
    return out


def _diagonal(g: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    return g * dw


def _scalar(g: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    return g.squeeze(-1) * dw  # [*lead, d] * [*lead, 1]


def _matrix(g: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    return torch.matmul(g, dw.unsqueeze(-1)).squeeze(-1)


_PRODUCTS = {"diagonal": _diagonal, "scalar": _scalar, "additive": _matrix, "general": _matrix}


def bind_sde(term: SDETerm, problem: Any, solver: Any, ctrl: Any) -> BoundSDE:
    """Check the SDE against the problem and solver, and bind its diffusion and noise."""
    if problem.direction < 0:
        raise ValueError("SDE terms are solved forwards in time: pass increasing t_eval")
    y0, counter, noise = problem.y0, problem.nfe_counter, term.noise
    if problem.per_sample and noise != "diagonal" and not problem.is_tuple and y0.ndim < 2:
        raise ValueError(
            f"per_sample=True with {noise} noise needs y0 of shape (batch, ..., d), so that each sample "
            f"has its own row of the Brownian motion (batch, ..., m): reshape y0 to ({y0.shape[0]}, 1)"
        )
    g = _in_loop_layout(term.diffusion, problem, noise)
    g0 = _checked_g0(term.diffusion, problem, noise)
    counter[0] += 1
    shape = _noise_shape(noise, y0, g0, problem.dtype)
    pad = isinstance(term, KLTerm) and noise == "diagonal"  # the KL channel has no noise
    if pad:
        shape = (*shape[:-1], shape[-1] - 1)
    if problem.per_sample:
        s0, s1 = float(problem.s_eval[:, 0].min()), float(problem.s_eval[:, -1].max())
    else:
        s0, s1 = problem.s_host[0], problem.s_host[-1]
    brownian = _brownian(term.brownian, problem, solver, ctrl, shape, s0, s1)
    if pad:
        brownian = PaddedBrownian(brownian)
    m = shape[-1] if noise != "diagonal" else math.prod(shape)
    return BoundSDE(g, counter, noise, term.calculus, brownian, m, problem.per_sample)


def _brownian(brownian: AbstractBrownian | None, problem: Any, solver: Any, ctrl: Any, shape: tuple,
              s0: float, s1: float) -> AbstractBrownian:  # fmt: skip
    """The term's Brownian motion, checked, or a new one for the solve."""
    dtype, device = problem.dtype, problem.device
    levy = bool(getattr(solver, "levy_area", False))
    adaptive = bool(getattr(ctrl, "adaptive", False))  # ctrl None: fixed steps
    own_times = problem.per_sample and problem.s_host is None  # per-sample time spans
    if brownian is None and (adaptive or own_times):  # queried at times in any order
        return BrownianInterval(s0, s1, shape, dtype=dtype, device=device, levy_area=levy)
    if brownian is None:
        return BrownianPath(s0, shape, dtype=dtype, device=device, levy_area=levy)
    _check_brownian(brownian, shape, dtype, device, s0, s1, levy, solver)
    if adaptive and not brownian.any_order:
        raise ValueError(
            f"adaptive steps query the Brownian motion at times chosen as the solve goes and revisit "
            f"rejected steps, which needs a path that is the same in any order of queries: build a "
            f"BrownianInterval(t0, t1, {tuple(shape)}, seed=...) instead of a {type(brownian).__name__}, "
            "or take fixed steps with dt=..."
        )
    return brownian


def _counting(g: Callable, counter: Any) -> Callable:
    """``g`` with its evaluations counted in ``counter``."""

    def diffusion(s: Any, y: torch.Tensor) -> torch.Tensor:
        counter[0] += 1
        return g(s, y)

    return diffusion


def _in_loop_layout(g: Callable, problem: Any, noise: str) -> Callable:
    """The diffusion ``(s, y) -> g`` in the loop's layout (see the module docstring), uncounted."""
    dtype, device = problem.dtype, problem.device
    if not problem.is_tuple and not problem.per_sample:  # the user's g as it is
        scalar = torch.scalar_tensor

        def plain(s: Any, y: torch.Tensor) -> torch.Tensor:
            t = s.to(dtype) if isinstance(s, torch.Tensor) else scalar(s, dtype=dtype, device=device)
            return g(t, y)

        return plain
    user_time, unflatten, per_sample = problem.user_time, problem.unflatten, problem.per_sample
    if not problem.is_tuple:  # per sample: the time as a [B, 1, ..., 1] column

        def per_row(s: Any, y: torch.Tensor) -> torch.Tensor:
            return g(user_time(s), y)

        return per_row
    flatten = _flattener(True, noise)

    def general(s: Any, y: torch.Tensor) -> torch.Tensor:
        rows = (y.shape[0],) if per_sample else ()
        return flatten(g(user_time(s), unflatten(y, rows)), rows)

    return general


def _flattener(is_tuple: bool, noise: str) -> Callable[[Any, tuple[int, ...]], torch.Tensor]:
    """The diffusion's output in the loop's layout: a tensor as it is; a tuple's parts flattened
    and concatenated along the state's elements (``[*rows, N]``, or ``[*rows, N, m]``)."""
    if not is_tuple:
        return lambda out, rows: out
    if noise == "diagonal":
        return lambda out, rows: torch.cat([o.reshape(*rows, -1) for o in out], -1)
    return lambda out, rows: torch.cat([o.reshape(*rows, -1, o.shape[-1]) for o in out], -2)


def _checked_g0(g: Callable, problem: Any, noise: str) -> torch.Tensor:
    """The diffusion at the initial point in the loop's layout, after checking a tuple's parts."""
    lead = (problem.batch,) if problem.per_sample else ()
    s0 = problem.s_eval[:, 0] if problem.per_sample else problem.s_host[0]
    out = g(problem.user_time(s0), problem.unflatten(problem.y0, lead))
    if not problem.is_tuple:
        return out
    k = len(problem.shapes)
    if not isinstance(out, (tuple, list)) or len(out) != k:
        raise TypeError(
            f"for a tuple state the diffusion g(t, y) must return a tuple of {k} tensors, one per part "
            f"of y, got {type(out).__name__}"
        )
    m = None
    for i, (o, shape) in enumerate(zip(out, problem.shapes)):
        want = (*lead, *shape)
        if not isinstance(o, torch.Tensor):
            raise TypeError(f"the diffusion returned {type(o).__name__} for part {i} of y: return a tensor")
        if o.dtype != problem.dtype:
            raise TypeError(
                f"the diffusion returned dtype {o.dtype} for part {i} but y is {problem.dtype}: cast inside g"
            )
        got = tuple(o.shape)
        if noise == "diagonal":
            if got != want:
                raise ValueError(
                    f"diagonal noise: part {i} of g(t, y) must be shaped like part {i} of y {want}, got {got}"
                )
            continue
        if got[:-1] != want or (noise == "scalar" and got[-1] != 1) or (m is not None and got[-1] != m):
            need = "1" if noise == "scalar" else ("m" if m is None else str(m))
            full = ", ".join([*map(str, want), need])
            raise ValueError(
                f"{noise} noise: part {i} of g(t, y) must have shape (*y[{i}].shape, {need}) = ({full}) "
                f"(every part against one shared Brownian motion of {need} channel(s)), got {got}"
            )
        m = got[-1]
    return _flattener(True, noise)(out, lead)


def _noise_shape(noise: str, y0: torch.Tensor, g0: Any, dtype: torch.dtype) -> tuple[int, ...]:
    """The Brownian motion's shape, after checking the diffusion's output at the initial point."""
    if not isinstance(g0, torch.Tensor):
        raise TypeError(f"the diffusion g(t, y) must return a tensor, got {type(g0).__name__}")
    if g0.dtype != dtype:
        raise TypeError(f"the diffusion returned dtype {g0.dtype} but y is {dtype}: cast inside g")
    y_shape = tuple(y0.shape)
    got = tuple(g0.shape)
    if noise == "diagonal":
        if got != y_shape:
            raise ValueError(
                f"diagonal noise: g(t, y) must be shaped like y {y_shape}, got {got}; for m Brownian "
                "motions use noise='general' with g of shape (*y.shape, m)"
            )
        return y_shape
    if not y_shape:
        raise ValueError(f"{noise} noise needs a state with at least one axis (y is 0-d): reshape y0 to (1,)")
    want = "(*y.shape, 1)" if noise == "scalar" else "(*y.shape, m)"
    if got[:-1] != y_shape or len(got) != len(y_shape) + 1 or (noise == "scalar" and got[-1] != 1):
        raise ValueError(
            f"{noise} noise: g(t, y) must have shape {want} with y of shape {y_shape}, got {got}"
        )
    return (*y_shape[:-1], got[-1])


def _check_brownian(bm: AbstractBrownian, shape: tuple, dtype: torch.dtype, device: torch.device,
                    s0: float, s1: float, levy: bool, solver: Any) -> None:  # fmt: skip
    if tuple(bm.shape) != tuple(shape):
        raise ValueError(f"the Brownian motion has shape {tuple(bm.shape)} but this SDE needs {tuple(shape)}")
    if bm.dtype != dtype or bm.device != device:
        raise TypeError(
            f"the Brownian motion is {bm.dtype} on {bm.device} but the state is {dtype} on {device}: "
            "build it with the state's dtype and device"
        )
    if not (bm.t0 <= s0 and s1 <= bm.t1):
        raise ValueError(f"the Brownian motion covers [{bm.t0}, {bm.t1}] but the solve spans [{s0}, {s1}]")
    if levy and not bm.levy_area:
        raise ValueError(
            f"solver {solver.name!r} needs the space-time Lévy area: build the Brownian motion with "
            "levy_area=True"
        )
