r"""The stochastic adjoint (Li, Wong, Chen & Duvenaud, *Scalable Gradients for Stochastic
Differential Equations*, AISTATS 2020): ``gradient=Adjoint(...)`` on an SDE term.

For the Stratonovich SDE :math:`dy = b(t, y)\,dt + \sigma(t, y)\circ dW`, the gradient
:math:`a(t) = \partial L/\partial y(t)` and the parameter gradient :math:`a_\theta` satisfy, on
the same Brownian path,

.. math:: da = -a^\top \partial_y b\,dt - a^\top \partial_y \sigma \circ dW,\qquad
          da_\theta = -a^\top \partial_\theta b\,dt - a^\top \partial_\theta \sigma \circ dW,

and :math:`y` itself is reconstructed backwards by the same SDE. The augmented state
:math:`[y, a, a_\theta]` is solved from each output time to the previous one with a
Stratonovich method stepping backwards (step :math:`-h`, increment :math:`W(t) - W(t + h)`: the
Brownian motion queried backwards in time), restarting :math:`y` from the forward pass's output
and adding each output's incoming gradient to :math:`a`, as the ODE adjoint does.

Each evaluation of the augmented system at :math:`(t, y, a)` for a step :math:`(h, \Delta W)`
needs only :math:`k = b\,h + \sigma\,\Delta W` and one vector-Jacobian product
:math:`a^\top \partial_{(y, \theta)} k`: one evaluation of the drift and the diffusion, one
backward pass, whatever the noise type (the product :math:`\sigma\,\Delta W` of the noise type is
differentiated as it is). With :math:`k` the backward methods are

- ``midpoint``: :math:`\tilde v = v - \tfrac12 K(t_1, v)`, :math:`v_0 = v - K(t_{1/2}, \tilde v)`;
- ``heun``: :math:`\tilde v = v - K(t_1, v)`, :math:`v_0 = v - \tfrac12 (K(t_1, v) + K(t_0, \tilde v))`,

with :math:`K = (k, -a^\top\partial_y k, -a^\top\partial_\theta k)` and :math:`v = (y, a,
a_\theta)` at :math:`t_1 = t_0 + h` (the first midpoint stage needs no parameter product).

**Itô SDEs** are converted: the Stratonovich drift is :math:`b = \mu - \tfrac12 c` with
:math:`c = (\partial_y \sigma)\,\sigma` (diagonal noise, where :math:`\sigma_i` depends on
:math:`y_i` only, as Milstein's method assumes: :math:`c_i = \sigma_i \partial_{y_i}\sigma_i`;
scalar noise: the Jacobian of the one column along itself; additive noise: :math:`c = 0`),
computed by autograd with its graph kept, so the vector-Jacobian product differentiates through
it (second derivatives of :math:`\sigma`). Itô general noise is refused (its correction needs
every column's derivative along every other).

The steps are fixed: the forward grid (``dt``, with the output times added) unless
``Adjoint(dt=...)`` gives another. The backward solver defaults to Heun's method after
``heun``, ``euler_heun`` and ``reversible_heun``, and to the midpoint method otherwise
(the Itô solvers ``euler``, ``milstein``, ``srk`` included).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch

from .._loop.reversible import step_grid
from ..solvers.stochastic import along_itself

__all__ = ["BACKWARD_SOLVERS", "check_sde_adjoint", "sde_backward"]

BACKWARD_SOLVERS = ("heun", "midpoint")
_FIXED_ONLY = ("rtol", "atol", "norm", "step_ts", "jump_ts", "controller_hook")


def backward_solver(strategy: Any, forward: Any) -> str:
    """The name of the backward Stratonovich method (see the module docstring)."""
    if strategy.solver is None:
        return "heun" if forward.name in ("heun", "euler_heun", "reversible_heun") else "midpoint"
    name = strategy.solver.name
    if name not in BACKWARD_SOLVERS:
        raise ValueError(
            f"Adjoint(solver={name!r}) cannot solve the stochastic adjoint: the backward "
            f"Stratonovich solve supports {', '.join(repr(n) for n in BACKWARD_SOLVERS)}"
        )
    return name


def check_sde_adjoint(strategy: Any, term: Any, forward: Any) -> None:
    """Reject, before solving, what the stochastic adjoint does not support."""
    bad = [key for key in _FIXED_ONLY if getattr(strategy, key) is not None]
    bad += ["controller_options"] if strategy.controller_options else []
    if bad:
        raise ValueError(
            f"the stochastic adjoint takes fixed steps: Adjoint({', '.join(bad)}=...) do not apply to "
            "SDE terms; pass Adjoint(dt=..., solver='midpoint' or 'heun', params=...)"
        )
    backward_solver(strategy, forward)
    if term.calculus == "ito" and term.noise == "general":
        raise ValueError(
            "the stochastic adjoint does not support Itô SDEs with general noise (the Stratonovich "
            "correction needs every noise column's derivative along the others): write the SDE in "
            "Stratonovich form, or use gradient='backprop' or 'checkpoint'"
        )


def _grid(context: Any) -> list[float]:
    """The backward steps' boundaries: the forward steps with the output times added (or, for
    ``Adjoint(dt=...)``, steps of that size from each output time)."""
    problem, ctrl, strategy = context.problem, context.ctrl, context.strategy
    s_out = problem.s_host
    extra = []
    for times in (ctrl.step_ts, ctrl.jump_ts):
        if times is not None:
            extra += times.tolist()
    if strategy.dt is not None:
        return step_grid(s_out, strategy.dt, extra)
    forward = step_grid(s_out if context.solver.reversible else [s_out[0], s_out[-1]], ctrl.dt, extra)
    return sorted({*forward, *s_out})


def _augmented(context: Any) -> Callable:
    """``K(s, y, a, h, dw, with_params) -> (k, a^T dk/dy, [a^T dk/dtheta])`` (module docstring)."""
    problem, params = context.problem, context.params
    bound = problem.sde
    f, g, prod = problem.func(count=False), bound.g, bound.prod  # both in the loop's layout
    noise = bound.noise
    ito = bound.calculus == "ito" and noise != "additive"
    counter = context.backward_stats

    def augmented(s: float, y: torch.Tensor, a: torch.Tensor, h: float, dw: torch.Tensor,
                  with_params: bool) -> tuple[torch.Tensor, torch.Tensor, tuple]:  # fmt: skip
        counter.nfe += 2
        with torch.enable_grad():
            y_ = y.detach().requires_grad_(True)
            drift, gy = f(s, y_), g(s, y_)
            if ito:  # the Stratonovich drift mu - (dg/dy) g / 2
                drift = torch.add(drift, along_itself(noise, y_, gy, keep=True)[1], alpha=-0.5)
            k = torch.add(prod(gy, dw), drift, alpha=h)
            inputs = (y_, *params) if with_params else (y_,)
            if not k.requires_grad:  # k depends on neither y nor the parameters
                return k, torch.zeros_like(y), (None,) * (len(inputs) - 1)
            grads = torch.autograd.grad(k, inputs, a, allow_unused=True)
        vy = grads[0] if grads[0] is not None else torch.zeros_like(y)
        return k.detach(), vy, grads[1:]

    return augmented


def _add(acc: list[torch.Tensor], grads: tuple, scale: float = 1.0) -> None:
    for x, v in zip(acc, grads):
        if v is not None:
            x.add_(v, alpha=scale)


def _midpoint(K: Callable, s1: float, h: float, y: torch.Tensor, a: torch.Tensor, dw: torch.Tensor,
              acc: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    k, va, _ = K(s1, y, a, h, dw, False)
    k, vb, grads = K(s1 - 0.5 * h, y.sub(k, alpha=0.5), a.add(va, alpha=0.5), h, dw, True)
    _add(acc, grads)
    return y - k, a + vb


def _heun(K: Callable, s1: float, h: float, y: torch.Tensor, a: torch.Tensor, dw: torch.Tensor,
          acc: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    k1, va, g1 = K(s1, y, a, h, dw, True)
    k2, vb, g2 = K(s1 - h, y - k1, a + va, h, dw, True)
    _add(acc, g1, 0.5)
    _add(acc, g2, 0.5)
    return y.sub(k1 + k2, alpha=0.5), a.add(va + vb, alpha=0.5)


_STEPS = {"midpoint": _midpoint, "heun": _heun}


def sde_backward(context: Any, ys: torch.Tensor, grad_ys: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
    """The backward pass of :class:`~torchnde.Adjoint` for an SDE term: ``(dL/dy0, [dL/dp])``."""
    problem, params = context.problem, context.params
    step = _STEPS[backward_solver(context.strategy, context.solver)]
    K = _augmented(context)
    bm = problem.sde.brownian
    grid = _grid(context)
    s_out = problem.s_host
    out_index = {s: i for i, s in enumerate(s_out)}
    acc = [torch.zeros_like(p) for p in params]
    n = len(s_out)
    y, a = ys[n - 1], grad_ys[n - 1]
    stats = context.backward_stats
    for s0, s1 in itertools.pairwise(reversed(grid)):  # s0 > s1: one step back from s0 to s1
        h = s0 - s1
        y, a = step(K, s0, h, y, a, bm.increment(s1, s0), acc)
        stats.steps += 1
        i = out_index.get(s1)
        if i is not None:  # the forward pass's output restarts y; its gradient joins a
            y, a = ys[i], a + grad_ys[i]
    stats.accepted = stats.steps
    return a, [x.to(p.dtype) for x, p in zip(acc, params)]
