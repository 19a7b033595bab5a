r"""Deep equilibrium models: the output is a fixed point of one layer, differentiated implicitly.

S. Bai, J. Z. Kolter, V. Koltun, *Deep equilibrium models*, NeurIPS 2019, arXiv 1909.01377. A
weight-tied network :math:`z_{k+1} = f_\theta(z_k, x)` run to its limit returns the equilibrium

.. math:: z^* = f_\theta(z^*, x),

found by a root-finder (:class:`torchnde.solvers.FixedPoint`: Anderson acceleration, Broyden's
method, damped iteration, with a fallback). By the implicit function theorem, for a loss
:math:`\ell(z^*)`

.. math:: \frac{d\ell}{d\theta} = g^\top \frac{\partial f_\theta(z^*, x)}{\partial\theta},
          \qquad g^\top = g^\top \frac{\partial f_\theta}{\partial z}(z^*, x)
          + \frac{\partial \ell}{\partial z^*},

and the adjoint :math:`g` is itself a fixed point, found by the same root-finder with
vector–Jacobian products. The autograd graph holds one evaluation of :math:`f` at :math:`z^*`,
whatever the number of forward iterations.

Options of the gradient (``gradient=``):

- ``"implicit"`` (default): the adjoint fixed point above.
- ``"phantom"``: the phantom gradient of Z. Geng, X.-Y. Zhang, S. Bai, Y. Wang, Z. Lin,
  *On training implicit models*, NeurIPS 2021, arXiv 2111.05177: ``phantom_steps`` damped steps
  :math:`z \leftarrow (1-\lambda) z + \lambda f_\theta(z, x)` from the (detached) fixed point,
  differentiated by backprop. Cheaper than the adjoint solve, and close to the implicit gradient
  when :math:`f` is contractive and the steps are enough.

Jacobian regularisation (S. Bai, V. Koltun, J. Z. Kolter, *Stabilizing equilibrium models by
Jacobian regularization*, ICML 2021, arXiv 2106.14342): with ``jacobian_probes=k`` each forward
pass in grad mode sets ``self.jacobian_loss``, the Hutchinson estimate
:math:`\frac1d\lVert\partial f/\partial z\rVert_F^2 = \frac1d\mathbb E_\varepsilon\lVert
\varepsilon^\top \partial f/\partial z\rVert^2` (:math:`\varepsilon\sim\mathcal N(0, I)`, ``k``
probes, averaged over the batch; ``d`` the state size of a sample), differentiable in
:math:`\theta`: add a multiple of it to the loss to keep :math:`f` contractive.

```python
import torch
from torch import nn
import torchnde as nde

class Layer(nn.Module):  # f(z, x) = tanh(W z + U x)
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.W, self.U = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim)
        nn.init.normal_(self.W.weight, std=0.3 / dim**0.5)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.W(z) + self.U(x))

torch.manual_seed(0)
deq = nde.models.DEQ(Layer(8), solver="anderson", tol=1e-6)
x = torch.randn(4, 8)
z = deq(x)
assert deq.result.converged and deq.result.residual <= 1e-6
z.square().sum().backward()      # implicit gradient: one adjoint fixed point
print(deq.result.iterations, deq.backward_result.iterations)
```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._names import did_you_mean
from ..solvers.fixed_point import FixedPoint, FixedPointResult

__all__ = ["DEQ"]

GRADIENTS = ("implicit", "phantom")


class DEQ(nn.Module):
    r"""A deep equilibrium model: ``forward(x)`` returns :math:`z^* = f(z^*, x)`.

    **Arguments**

    - ``f``: the layer, called as ``f(z, x)``; it returns a tensor of ``z``'s shape. The leading
      dimension of ``z`` is the batch (each sample has its own residual).
    - ``state_shape``: the shape of one sample's ``z`` (default: that of ``x``); the solve starts
      from zeros unless ``forward`` is given ``z0``.
    - ``solver``: ``"anderson"`` (default), ``"broyden"``, ``"damped"`` or a
      :class:`~torchnde.solvers.FixedPoint` carrying every option of the forward solve;
      ``tol`` (default ``1e-4``, relative residual) and ``max_iter`` (default 50) apply to a name.
    - ``backward_solver``: the same for the adjoint fixed point (default: the forward's).
    - ``gradient``: ``"implicit"`` (default) or ``"phantom"``; ``phantom_steps`` (default 5) and
      ``phantom_damping`` (default 0.5) set the phantom gradient.
    - ``jacobian_probes``: Hutchinson probes of the Jacobian penalty (default 0: none).
    - ``on_failure``: ``"warn"`` (default), ``"raise"`` or ``"ignore"`` when a solve (forward or
      adjoint) does not reach its tolerance; applies to a solver given by name.

    **Attributes** after a call: ``result`` (the forward :class:`~torchnde.solvers.FixedPointResult`:
    ``converged``, ``iterations``, ``residual``, ...), ``backward_result`` (the adjoint solve's,
    after ``backward``; ``None`` before), ``jacobian_loss`` (with ``jacobian_probes > 0``).

    In grad mode with the implicit gradient the output is one more evaluation
    :math:`f(z^*, x)` (its value is :math:`z^*` to the tolerance); without grad it is the
    root-finder's estimate. The graph supports one ``backward`` (no ``create_graph``).

    ```python
    import torch
    from torchnde.models import DEQ

    A = 0.5 * torch.eye(3)
    deq = DEQ(lambda z, x: z @ A + x, tol=1e-8)  # z* = 2x
    x = torch.ones(2, 3, requires_grad=True)
    z = deq(x)
    z.sum().backward()
    assert torch.allclose(z, 2 * x) and torch.allclose(x.grad, torch.full((2, 3), 2.0))
    assert deq.result.converged and deq.backward_result.converged
    ```
    """

    def __init__(
        self,
        f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        state_shape: tuple[int, ...] | None = None,
        solver: str | FixedPoint = "anderson",
        tol: float | None = None,
        max_iter: int | None = None,
        backward_solver: str | FixedPoint | None = None,
        gradient: str = "implicit",
        phantom_steps: int = 5,
        phantom_damping: float = 0.5,
        jacobian_probes: int = 0,
        on_failure: str = "warn",
    ) -> None:
        super().__init__()
        self.f = f
        self.state_shape = None if state_shape is None else tuple(int(s) for s in state_shape)
        self.solver = _resolve(solver, tol, max_iter, on_failure, "solver")
        if backward_solver is None:
            self.backward_solver = self.solver
        elif isinstance(backward_solver, FixedPoint):  # tol and max_iter are the forward's
            self.backward_solver = backward_solver
        else:
            self.backward_solver = _resolve(backward_solver, tol, max_iter, on_failure, "backward_solver")
        if gradient not in GRADIENTS:
            raise ValueError(
                f"DEQ(gradient={gradient!r}): valid gradients are {', '.join(GRADIENTS)}.{did_you_mean(gradient, GRADIENTS)}"
            )
        if not (isinstance(phantom_steps, int) and phantom_steps >= 1):
            raise ValueError(f"DEQ(phantom_steps=...) must be a positive int, got {phantom_steps!r}")
        if not 0 < phantom_damping <= 1:
            raise ValueError(f"DEQ(phantom_damping=...) must lie in (0, 1], got {phantom_damping!r}")
        if not (isinstance(jacobian_probes, int) and jacobian_probes >= 0):
            raise ValueError(f"DEQ(jacobian_probes=...) must be an int >= 0, got {jacobian_probes!r}")
        self.gradient = gradient
        self.phantom_steps = phantom_steps
        self.phantom_damping = phantom_damping
        self.jacobian_probes = jacobian_probes
        self.result: FixedPointResult | None = None
        self.backward_result: FixedPointResult | None = None
        self.jacobian_loss: torch.Tensor | None = None

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        """Zeros of the state's shape for the batch ``x``."""
        shape = x.shape[1:] if self.state_shape is None else self.state_shape
        return x.new_zeros(x.shape[0], *shape)

    def forward(self, x: torch.Tensor, z0: torch.Tensor | None = None) -> torch.Tensor:
        """The equilibrium :math:`z^*` of ``f(., x)``, started from ``z0`` (default zeros)."""
        z0 = self.initial_state(x) if z0 is None else z0
        self.backward_result = None
        self.jacobian_loss = None
        self.result = self.solver.solve(lambda z: self.f(z, x), z0, what="DEQ forward fixed point")
        z_star = self.result.z
        if not torch.is_grad_enabled():
            return z_star
        if self.gradient == "phantom" and not self.jacobian_probes:
            return self._phantom(z_star, x)
        z_in = z_star.detach().requires_grad_()
        out = self.f(z_in, x)
        if self.jacobian_probes:
            self.jacobian_loss = _hutchinson(out, z_in, self.jacobian_probes)
        if self.gradient == "phantom":
            return self._phantom(z_star, x)
        if not out.requires_grad:
            return out
        return _ImplicitGradient.apply(out, self._adjoint(out, z_in))

    def unroll(
        self, x: torch.Tensor, steps: int, z0: torch.Tensor | None = None, damping: float = 1.0
    ) -> torch.Tensor:
        """The weight-tied network: ``steps`` iterations ``z <- (1-damping) z + damping f(z, x)``
        from ``z0`` (default zeros), differentiated by backprop through every step (the memory
        held grows with ``steps``). The baseline a DEQ is the limit of."""
        if not (isinstance(steps, int) and steps >= 0):
            raise ValueError(f"DEQ.unroll: steps must be an int >= 0, got {steps!r}")
        if not 0 < damping <= 1:
            raise ValueError(f"DEQ.unroll: damping must lie in (0, 1], got {damping!r}")
        z = self.initial_state(x) if z0 is None else z0
        for _ in range(steps):
            z = (1 - damping) * z + damping * self.f(z, x) if damping != 1.0 else self.f(z, x)
        return z

    def _phantom(self, z_star: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        lam = self.phantom_damping
        z = z_star.detach()
        for _ in range(self.phantom_steps):
            z = (1 - lam) * z + lam * self.f(z, x)
        return z

    def _adjoint(self, out: torch.Tensor, z_in: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``grad -> g`` with ``g = g J + grad``, ``J = ∂f/∂z`` at the equilibrium: the adjoint
        fixed point, by vector–Jacobian products through the graph of ``out = f(z_in, x)``."""

        def solve(grad: torch.Tensor) -> torch.Tensor:
            def adjoint_map(g: torch.Tensor) -> torch.Tensor:
                (vjp,) = torch.autograd.grad(out, z_in, g, retain_graph=True)
                return vjp + grad

            self.backward_result = self.backward_solver.solve(
                adjoint_map, grad, what="DEQ adjoint (backward) fixed point"
            )
            return self.backward_result.z

        return solve

    def extra_repr(self) -> str:
        return f"solver={self.solver.method}, tol={self.solver.tol:g}, gradient={self.gradient!r}"


class _ImplicitGradient(torch.autograd.Function):
    """The identity on ``out = f(z*, x)`` whose backward replaces the incoming gradient by the
    adjoint fixed point; autograd then carries it through ``out``'s graph to the parameters and
    ``x``. (A custom function, not a tensor hook: nothing refers back to the output, so a forward
    pass without a backward frees its graph at once.)"""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, solve: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        ctx.solve = solve
        return out.view_as(out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.solve(grad), None


def _resolve(solver: Any, tol: float | None, max_iter: int | None, on_failure: str, name: str) -> FixedPoint:
    if isinstance(solver, FixedPoint):
        if tol is not None or max_iter is not None:
            raise ValueError(
                f"DEQ: {name} is a FixedPoint object; set tol and max_iter on it instead of passing them to DEQ"
            )
        return solver
    if not isinstance(solver, str):
        raise TypeError(f"DEQ({name}=...) must be a method name or a FixedPoint, got {type(solver).__name__}")
    options: dict[str, Any] = {"on_failure": on_failure}
    if tol is not None:
        options["tol"] = tol
    if max_iter is not None:
        options["max_iter"] = max_iter
    return FixedPoint(solver, **options)


def _hutchinson(out: torch.Tensor, z: torch.Tensor, probes: int) -> torch.Tensor:
    """The Hutchinson estimate of :math:`\\lVert\\partial out/\\partial z\\rVert_F^2` per state
    element, averaged over ``probes`` Gaussian probes and the batch; differentiable."""
    total = out.new_zeros(())
    for _ in range(probes):
        eps = torch.randn_like(out)
        (vjp,) = torch.autograd.grad(out, z, eps, create_graph=True, retain_graph=True)
        total = total + vjp.square().sum()
    return total / (probes * out.numel())
