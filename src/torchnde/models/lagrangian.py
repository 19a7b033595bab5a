r"""Lagrangian neural networks: dynamics from the Euler–Lagrange equations of a learned scalar.

M. Cranmer, S. Greydanus, S. Hoyer, P. Battaglia, D. Spergel, S. Ho, *Lagrangian Neural
Networks*, ICLR 2020 Workshop on Integration of Deep Neural Models and Differential Equations,
arXiv:2003.04630.

A network :math:`L_\theta(q, \dot q)` defines the accelerations through the Euler–Lagrange
equations, solved for :math:`\ddot q`:

.. math::

    \ddot q = \big(\nabla_{\dot q}\nabla_{\dot q}^\top L\big)^{-1}
              \big[\nabla_q L - (\nabla_{\dot q}\nabla_q^\top L)\,\dot q\big].

Unlike an HNN it needs no canonical momenta: it works directly in the observed coordinates
``(q, q̇)``, and it conserves the energy :math:`E = \dot q \cdot \partial L/\partial \dot q - L`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._base import SolveOptions, check_span, split_pair, time_grid

__all__ = ["LagrangianNN", "lnn_init_"]

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def lnn_init_(mlp: nn.Module, *, generator: torch.Generator | None = None) -> nn.Module:
    r"""Initialise an MLP's ``nn.Linear`` layers with the LNN repository's scheme, in place.

    Cranmer et al., *Lagrangian Neural Networks*, ICLR 2020 DeepDiffEq workshop,
    arXiv:2003.04630 (``custom_init`` in ``MilesCranmer/lagrangian_nns``): biases zero,
    weights :math:`\mathcal N(0, \sigma^2)` with :math:`\sigma = s / \sqrt{n}`, :math:`n` the
    larger of the layer's two sizes and :math:`s = 2.2` for the first layer, :math:`0.58\,i`
    for the :math:`i`-th hidden layer (0-based) and :math:`n` for the last. The paper reports
    that this scale matters because the network is used through its second derivatives.

    ```python
    from torch import nn
    from torchnde.models.lagrangian import lnn_init_
    net = lnn_init_(nn.Sequential(nn.Linear(4, 128), nn.Softplus(), nn.Linear(128, 128),
                                  nn.Softplus(), nn.Linear(128, 1)))
    ```
    """
    layers = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError("lnn_init_ needs a module with nn.Linear layers")
    last = len(layers) - 1
    with torch.no_grad():
        for i, layer in enumerate(layers):
            n = max(layer.weight.shape)
            scale = 2.2 if i == 0 else (float(n) if i == last else 0.58 * i)
            std = scale / math.sqrt(n)
            noise = torch.randn(layer.weight.shape, generator=generator, dtype=torch.float64)
            layer.weight.copy_(noise * std)
            if layer.bias is not None:
                layer.bias.zero_()
    return mlp


# Modules known to act on each row of a [batch, features] input alone (exact types: a subclass
# may override forward). Dropout is left out: vmap refuses its randomness, so "vmap" would fail.
_ROWWISE = (nn.Sequential, nn.Linear, nn.Identity, nn.Tanh, nn.Softplus, nn.ReLU, nn.LeakyReLU, nn.ELU,
            nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Softsign, nn.Tanhshrink, nn.Hardtanh)  # fmt: skip


def _rowwise(net: Any) -> bool:
    """Whether ``net`` is made only of :data:`_ROWWISE` modules (then its rows are independent)."""
    return isinstance(net, nn.Module) and all(type(m) in _ROWWISE for m in net.modules())


class LagrangianNN(SolveOptions):
    r"""A Lagrangian neural network (LNN): accelerations from the Euler–Lagrange equations.

    Cranmer, Greydanus, Hoyer, Battaglia, Spergel & Ho, *Lagrangian Neural Networks*, ICLR 2020
    DeepDiffEq workshop, arXiv:2003.04630.

    ``lagrangian`` maps ``cat([q, q̇], -1)`` (``[..., 2d]``) to :math:`L(q, \dot q)` (``[..., 1]``
    or ``[...]``). For each state,

    .. math::

        A = \operatorname{sym}\nabla_{\dot q}\nabla_{\dot q}^\top L, \qquad
        b = \nabla_q L - (\nabla_{\dot q}\nabla_q^\top L)\,\dot q, \qquad A\,\ddot q = b .

    The gradient of :math:`L` and the :math:`d` velocity rows of its Hessian stay differentiable
    with respect to the network's parameters. ``derivatives`` chooses how they are batched:

    - ``"vmap"``: ``torch.func`` (``vmap`` over the samples of ``jacrev`` of
      :math:`\partial L/\partial\dot q`, no per-sample Python loop). Correct for any network.
    - ``"autograd"``: plain autograd on the whole batch, one backward pass for the gradient and
      one per velocity row (:math:`d + 1` in all). The derivatives of the batch's sum are each
      sample's own only when the network treats its rows independently (linear layers,
      elementwise activations, fixed feature maps: no batch norm, nothing that mixes samples);
      then it is faster: 1.25–1.6x for a training step (forward and backward), 1.4–2.2x in a
      rollout without gradients (an MLP of width 128, :math:`d = 2`, 8 and 300 samples).
    - ``"auto"`` (default): ``"autograd"`` when the network is built only of ``nn.Sequential``,
      ``nn.Linear`` and elementwise activations (their exact types, so rows are known to be
      independent), else ``"vmap"``. Pass ``"autograd"`` for a network of your own modules that
      you know to act row by row.

    **The linear solve.** :math:`A` is symmetrised, :math:`\tfrac12(A + A^\top)`.

    - ``damping = 0`` (default): an exact LU solve, :math:`\ddot q = A^{-1} b`. Exact for a true
      Lagrangian (tests match analytic equations of motion to float64 precision). Where a learned
      :math:`A` is singular the accelerations of that sample are non-finite (no exception, no
      host synchronisation; a solve then stops with a non-finite-state error): train with
      ``damping > 0``, or start from a well-conditioned :math:`A` (e.g. add
      :math:`\tfrac12 |\dot q|^2` to the network's output).
    - ``damping = δ > 0``: Tikhonov-regularised least squares,
      :math:`\ddot q = \arg\min_x \|A x - b\|^2 + δ\|x\|^2 = (A^2 + δI)^{-1} A\, b`, solved by
      Cholesky (:math:`A^2 + δI` is positive definite). It is defined for *any* symmetric
      :math:`A` (indefinite, e.g. :math:`-L`, which has the same dynamics, or singular), unlike
      a plain Cholesky of :math:`A`, and differs from the exact solve by a relative
      :math:`O(δ / σ_{\min}(A)^2)`. Pick δ well below :math:`σ_{\min}(A)^2` of the system
      (e.g. ``1e-6`` for masses of order one). The LNN repository used a pseudo-inverse instead.

    ``t_span`` (default ``(0, 1)``) is the interval integrated when :meth:`forward` gets no
    ``t_eval`` (it then returns the final state, like :class:`~torchnde.models.NeuralODE`).
    The state is a tuple ``(q, q̇)`` or a tensor ``cat([q, q̇], -1)``, as for
    :class:`~torchnde.models.hamiltonian.HamiltonianNN`; the network is evaluated on one sample
    at a time under ``vmap`` (as a ``[1, 2d]`` batch), so it must not mix samples.
    ``derivatives="autograd"`` is also used under saved-tensor hooks (``gradient="checkpoint"``),
    where ``torch.func`` refuses to run.

    ```python
    import torch
    from torch import nn
    from torchnde.models.lagrangian import LagrangianNN, lnn_init_

    net = lnn_init_(nn.Sequential(nn.Linear(4, 64), nn.Softplus(), nn.Linear(64, 1)))
    lnn = LagrangianNN(net, damping=1e-6, solver="rk4", dt=0.01)
    q, qd = torch.randn(8, 2), torch.randn(8, 2)
    qdd = lnn.accelerations(q, qd)                    # [8, 2]; a plain MLP: batched autograd
    general = LagrangianNN(net, damping=1e-6, derivatives="vmap")  # right for any network
    assert torch.allclose(general.accelerations(q, qd), qdd, atol=1e-4)
    traj = lnn((q, qd), torch.linspace(0.0, 0.1, 11))  # ([11, 8, 2], [11, 8, 2])
    ```
    """

    def __init__(
        self,
        lagrangian: nn.Module,
        *,
        damping: float = 0.0,
        derivatives: str = "auto",
        t_span: tuple[float, float] = (0.0, 1.0),
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if derivatives not in ("auto", "vmap", "autograd"):
            raise ValueError(
                f"derivatives must be 'vmap' (any network), 'autograd' (a network whose rows are "
                f"independent samples, faster) or 'auto' (the default: 'autograd' for a plain MLP), "
                f"got {derivatives!r}"
            )
        if derivatives == "auto":
            derivatives = "autograd" if _rowwise(lagrangian) else "vmap"
        self.t_span = check_span(t_span)
        if not callable(lagrangian):
            raise TypeError(
                f"lagrangian must be a network mapping cat([q, qdot], -1) to L, got {type(lagrangian).__name__}"
            )
        if not isinstance(damping, (int, float)) or not math.isfinite(damping) or damping < 0:
            raise ValueError(f"damping must be a finite float >= 0 (0 = exact solve), got {damping!r}")
        self.lagrangian = lagrangian
        self.damping = float(damping)
        self.derivatives = derivatives

    # -- the Lagrangian and its derivatives ------------------------------------------------------

    def value(self, q: torch.Tensor, qd: torch.Tensor) -> torch.Tensor:
        r"""The learned :math:`L(q, \dot q)`, shape ``[...]`` for ``q, qd`` of ``[..., d]``."""
        q, qd = torch.broadcast_tensors(q, qd)
        out = self.lagrangian(torch.cat([q, qd], -1))
        batch = q.shape[:-1]
        if out.shape == (*batch, 1):
            return out.squeeze(-1)
        if out.shape == batch:
            return out
        raise ValueError(
            f"the lagrangian network must return one scalar per state, shape {(*batch, 1)} or "
            f"{tuple(batch)}; got {tuple(out.shape)}. End the network with nn.Linear(hidden, 1)."
        )

    def _sample_scalar(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lagrangian(x.unsqueeze(0))
        if out.numel() != 1:
            raise ValueError(
                f"the lagrangian network must return one scalar per state, got {out.numel()} values for one "
                "state. End the network with nn.Linear(hidden, 1)."
            )
        return out.reshape(())

    def gradient_and_hessian(self, q: torch.Tensor, qd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(grad, rows)``: :math:`\nabla_x L` (``[..., 2d]``) and the velocity rows of the Hessian,
        :math:`\nabla_x \nabla_{\dot q} L` (``[..., d, 2d]``), with ``x = cat([q, q̇])``.

        Batched with ``torch.func``: ``vmap`` over the samples of ``jacrev`` of
        :math:`\partial L / \partial \dot q` (reverse-over-reverse, ``d`` vector-Jacobian products
        per sample; the ``q`` rows of the Hessian are never needed); with
        ``derivatives="autograd"``, by plain autograd on the batch (see the class docstring).
        """
        q, qd = torch.broadcast_tensors(q, qd)
        d = q.shape[-1]
        batch = q.shape[:-1]
        x = torch.cat([q, qd], -1).reshape(-1, 2 * d)

        grad, rows = self._autograd_rows(x, d) if self.derivatives == "autograd" else self._vmap_rows(x, d)
        return grad.reshape(*batch, 2 * d), rows.reshape(*batch, d, 2 * d)

    def _vmap_rows(self, x: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(grad, rows)`` of ``x`` (``[N, 2d]``) by ``torch.func``, one sample at a time; by
        :meth:`_autograd_rows` under saved-tensor hooks, where ``torch.func`` refuses to run."""

        def velocity_gradient(xi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.func.grad(self._sample_scalar)(xi)
            return g[d:], g

        try:
            rows, grad = torch.func.vmap(torch.func.jacrev(velocity_gradient, has_aux=True))(x)
        except RuntimeError as err:
            if "saved tensor hooks" not in str(err):
                raise
            return self._autograd_rows(x, d)
        return grad, rows

    def _autograd_rows(self, x: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The same derivatives by plain autograd (``derivatives="autograd"``, and under
        saved-tensor hooks, ``gradient="checkpoint"``): rows of ``L`` belong to independent
        samples, so the derivatives of the batch sum are every sample's own; ``d`` extra backward
        passes. Without grad mode outside (a rollout), the results carry no graph."""
        recording = torch.is_grad_enabled()
        with torch.enable_grad():
            x = x if x.requires_grad else x.detach().requires_grad_()
            values = self.lagrangian(x).reshape(-1)
            if values.shape[0] != x.shape[0]:
                self._sample_scalar(x[0])  # raises the shape error
            (grad,) = torch.autograd.grad(values.sum(), x, create_graph=True)
            rows = [
                torch.autograd.grad(grad[:, d + i].sum(), x, create_graph=recording, retain_graph=True)[0]
                for i in range(d)
            ]
        rows = torch.stack(rows, 1)
        return (grad, rows) if recording else (grad.detach(), rows)

    def accelerations(self, q: torch.Tensor, qd: torch.Tensor) -> torch.Tensor:
        r""":math:`\ddot q` from the Euler–Lagrange equations (see the class docstring), ``[..., d]``.

        Differentiable with respect to the network's parameters and the state.
        """
        if q.shape[-1:] != qd.shape[-1:]:
            raise ValueError(
                f"q and qdot must share the last dimension, got {tuple(q.shape)} and {tuple(qd.shape)}"
            )
        q, qd = torch.broadcast_tensors(q, qd)
        d = q.shape[-1]
        grad, rows = self.gradient_and_hessian(q, qd)
        a = rows[..., d:]
        a = 0.5 * (a + a.transpose(-1, -2))
        mixed = rows[..., :d]  # [i, j] = d^2 L / d qd_i d q_j
        b = grad[..., :d] - (mixed @ qd.unsqueeze(-1)).squeeze(-1)
        return self._solve_linear(a, b)

    def _solve_linear(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.damping == 0.0:
            # No error check (no host sync): a singular A gives non-finite accelerations for that
            # sample, which a solve reports as a non-finite state.
            return torch.linalg.solve_ex(a, b.unsqueeze(-1), check_errors=False)[0].squeeze(-1)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        normal = a @ a + self.damping * eye
        chol = torch.linalg.cholesky(normal)
        return torch.cholesky_solve((a @ b.unsqueeze(-1)), chol).squeeze(-1)

    def energy(self, q: torch.Tensor, qd: torch.Tensor) -> torch.Tensor:
        r"""The energy :math:`E = \dot q \cdot \partial L/\partial \dot q - L`, shape ``[...]``.

        Conserved by the exact flow of the learned Lagrangian. Differentiable while gradients are
        recorded; detached under ``torch.no_grad()``.
        """
        recording = torch.is_grad_enabled()
        q, qd = torch.broadcast_tensors(q, qd)
        with torch.enable_grad():
            qdg = qd if (recording and qd.requires_grad) else qd.detach().requires_grad_(True)
            lag = self.value(q, qdg)
            (dl_dqd,) = torch.autograd.grad(lag.sum(), qdg, create_graph=recording)
            e = (qdg * dl_dqd).sum(-1) - lag
        return e if recording else e.detach()

    # -- the ODE ---------------------------------------------------------------------------------

    def vector_field(self, t: Any, y: State) -> State:
        r"""``f(t, y) = (q̇, q̈)`` for :func:`torchnde.solve`, in the form of ``y`` (tuple or tensor)."""
        q, qd, was_tuple = split_pair(y, f"{type(self).__name__}.vector_field", ("q", "qdot"))
        qdd = self.accelerations(q, qd)
        return (qd, qdd) if was_tuple else torch.cat([qd, qdd], -1)

    def forward(self, y0: State, t_eval: Any = None) -> State:
        r"""Integrate the Euler–Lagrange equations from ``y0``: the trajectory at ``t_eval``, or the
        state at ``t_span[1]`` when ``t_eval`` is None.

        ``y0``: a tuple ``(q0, q̇0)`` (each ``[..., d]``) or a tensor ``cat([q0, q̇0], -1)``.
        Returns the same form (with ``t_eval``: time first).
        """
        q0, qd0, was_tuple = split_pair(y0, f"{type(self).__name__}.forward", ("q", "qdot"))
        t = time_grid(self.t_span if t_eval is None else t_eval, q0)

        def field(s: Any, y: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return y[1], self.accelerations(y[0], y[1])

        qs, qds = self._solve(field, (q0, qd0), t).ys
        if t_eval is None:
            qs, qds = qs[-1], qds[-1]
        return (qs, qds) if was_tuple else torch.cat([qs, qds], -1)
