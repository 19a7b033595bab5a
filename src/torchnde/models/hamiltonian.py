r"""Hamiltonian neural networks: a learned scalar energy whose symplectic gradient is the dynamics.

S. Greydanus, M. Dzamba, J. Yosinski, *Hamiltonian Neural Networks*, NeurIPS 2019,
arXiv:1906.01563.

A network :math:`H_\theta(q, p)` is trained so that the vector field

.. math::

    \frac{dq}{dt} = \frac{\partial H_\theta}{\partial p}, \qquad
    \frac{dp}{dt} = -\frac{\partial H_\theta}{\partial q} \;(+\, G(q)\, u(t))

matches observed time derivatives (or observed trajectories, by differentiating through the
solve). The field is divergence-free and conserves :math:`H_\theta` exactly, so rollouts keep
their energy where an unconstrained network's drift.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ._base import SolveOptions, check_span, split_pair, time_grid

__all__ = ["HamiltonianNN", "SeparableHamiltonianNN"]

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def _scalar_output(out: torch.Tensor, batch: torch.Size, who: str) -> torch.Tensor:
    """A network's output ``[..., 1]`` or ``[...]`` as ``[...]``."""
    if out.shape == (*batch, 1):
        return out.squeeze(-1)
    if out.shape == batch:
        return out
    raise ValueError(
        f"{who} must return one scalar per state, shape {(*batch, 1)} or {tuple(batch)}; got "
        f"{tuple(out.shape)}. End the network with nn.Linear(hidden, 1)."
    )


def _needs_grad(x: torch.Tensor, recording: bool) -> torch.Tensor:
    """``x`` itself when its graph is wanted, else a detached leaf that tracks gradients."""
    if recording and x.requires_grad:
        return x
    return x.detach().requires_grad_(True)


class HamiltonianNN(SolveOptions):
    r"""A Hamiltonian neural network (HNN): dynamics from the symplectic gradient of a scalar net.

    Greydanus, Dzamba & Yosinski, *Hamiltonian Neural Networks*, NeurIPS 2019,
    arXiv:1906.01563.

    The network ``hamiltonian`` maps ``cat([q, p], -1)`` (shape ``[..., 2d]``) to the energy
    :math:`H(q, p)` (shape ``[..., 1]`` or ``[...]``). The vector field is obtained by
    automatic differentiation,

    .. math::

        \dot q = \partial H / \partial p, \qquad
        \dot p = -\partial H / \partial q + G(q)\, u(t),

    where the optional control term uses ``control``, a network mapping ``q`` (``[..., d]``) to
    the input matrix :math:`G(q)` of shape ``[..., d, m]``, and an input ``u`` passed to
    :meth:`forward` / :meth:`derivatives` either as a tensor ``[..., m]`` (constant in time,
    broadcast against the state) or as a callable ``u(t) -> [..., m]``. Without a control term
    the flow conserves :math:`H` exactly; with it, :math:`dH/dt = \dot q^\top G(q) u`.

    **Arguments:**

    - ``hamiltonian``: the scalar network :math:`H_\theta`. It is called on a whole batch at
      once and differentiated with ``H.sum()``, so it must treat the samples independently
      (no batch normalisation).
    - ``control``: optional network :math:`q \mapsto G(q)` (``[..., d, m]``).
    - ``t_span``: the interval integrated when :meth:`forward` gets no ``t_eval`` (default
      ``(0, 1)``; the model then returns the final state, like
      :class:`~torchnde.models.NeuralODE`).
    - solve options (``solver``, ``rtol``, ``atol``, ``dt``, ``gradient``, ...): see
      :class:`~torchnde.models._base.SolveOptions`. Adaptive solvers (``"tsit5"``, the default)
      work as they are; the symplectic ``solver="leapfrog"`` / ``"yoshida4"`` need ``dt=``.
      They are exactly symplectic only for a *separable* :math:`H = T(p) + V(q)` (see
      :class:`SeparableHamiltonianNN`); for a general network :math:`H(q, p)` they remain
      consistent explicit integrators but lose that guarantee.

    **Use.** For derivative matching, call :meth:`derivatives` (or :meth:`vector_field`) on
    observed states: while gradients are recorded the autograd graph is kept
    (``create_graph=True``), so a loss on the derivatives trains :math:`\theta`. Under
    ``torch.no_grad()`` (rollouts, evaluation) gradients are enabled locally to differentiate
    :math:`H` and the results are detached. :meth:`forward` integrates from ``y0`` (a tuple
    ``(q, p)`` or a tensor ``cat([q, p], -1)``) and returns the trajectory at ``t_eval`` in the
    same form, time first.

    ```python
    import torch, torchnde as nde
    from torch import nn
    from torchnde.models.hamiltonian import HamiltonianNN

    net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 1))
    hnn = HamiltonianNN(net, solver="leapfrog", dt=0.05)
    x = torch.randn(16, 2)                         # states cat([q, p], -1)
    dx = hnn.vector_field(0.0, x)                  # [16, 2], differentiable w.r.t. net
    traj = hnn(x, torch.linspace(0.0, 1.0, 11))    # [11, 16, 2]
    ```
    """

    def __init__(
        self,
        hamiltonian: nn.Module,
        *,
        control: nn.Module | None = None,
        t_span: tuple[float, float] = (0.0, 1.0),
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.t_span = check_span(t_span)
        if not callable(hamiltonian):
            raise TypeError(
                f"hamiltonian must be a network mapping cat([q, p], -1) to H, got {type(hamiltonian).__name__}"
            )
        if control is not None and not callable(control):
            raise TypeError(
                f"control must be a network mapping q to G(q) [..., d, m], got {type(control).__name__}"
            )
        self.hamiltonian = hamiltonian
        self.control = control

    # -- the energy and its gradient ------------------------------------------------------------

    def energy(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        r"""The learned energy :math:`H_\theta(q, p)`, shape ``[...]`` for ``q, p`` of ``[..., d]``."""
        q, p = torch.broadcast_tensors(q, p)
        out = self.hamiltonian(torch.cat([q, p], -1))
        return _scalar_output(out, q.shape[:-1], f"{type(self).__name__}'s hamiltonian network")

    def _input(self, t: Any, u: Any, like: torch.Tensor) -> torch.Tensor:
        value = u(t) if callable(u) else u
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"the control input u must be a tensor [..., m] or a callable u(t) returning one, got "
                f"{type(value).__name__}"
            )
        return value.to(like.dtype)

    def derivatives(
        self, q: torch.Tensor, p: torch.Tensor, *, t: Any = None, u: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(dq/dt, dp/dt) = (∂H/∂p, -∂H/∂q + G(q) u(t))`` at the states ``(q, p)``.

        Differentiable with respect to the network's parameters (and ``q``, ``p``) while
        gradients are recorded; detached under ``torch.no_grad()``. ``u`` (a tensor ``[..., m]``
        or a callable ``u(t)``) is needed exactly when the model has a ``control`` network; ``t``
        is only used to call ``u(t)``.
        """
        if self.control is None and u is not None:
            raise ValueError(
                f"{type(self).__name__} has no control network: build it with control=... to use u"
            )
        if self.control is not None and u is None:
            raise ValueError(f"{type(self).__name__} has a control term G(q) u: pass the input u=...")
        recording = torch.is_grad_enabled()
        q, p = torch.broadcast_tensors(q, p)
        with torch.enable_grad():
            qg, pg = _needs_grad(q, recording), _needs_grad(p, recording)
            h = self.energy(qg, pg)
            dh_dq, dh_dp = torch.autograd.grad(h.sum(), (qg, pg), create_graph=recording, allow_unused=True)
            dh_dq = torch.zeros_like(q) if dh_dq is None else dh_dq
            dh_dp = torch.zeros_like(p) if dh_dp is None else dh_dp
            dq, dp = dh_dp, -dh_dq
            if self.control is not None:
                gain = self.control(qg if recording else q)
                d = q.shape[-1]
                if gain.ndim < 2 or gain.shape[-2] != d:
                    raise ValueError(
                        f"the control network must return G(q) of shape [..., {d}, m], got {tuple(gain.shape)}"
                    )
                force = self._input(t, u, q)
                if force.shape[-1:] != gain.shape[-1:]:
                    raise ValueError(
                        f"u has {force.shape[-1]} channels but G(q) has m = {gain.shape[-1]} columns"
                    )
                dp = dp + (gain @ force.unsqueeze(-1)).squeeze(-1)
        if not recording:
            dq, dp = dq.detach(), dp.detach()
        return dq, dp

    def vector_field(self, t: Any, y: State, u: Any = None) -> State:
        r"""The field ``f(t, y)`` for :func:`torchnde.solve`, in the form of ``y``.

        ``y`` is a tuple ``(q, p)`` (returns ``(dq/dt, dp/dt)``) or a tensor ``cat([q, p], -1)``
        (returns ``cat([dq/dt, dp/dt], -1)``).
        """
        q, p, was_tuple = split_pair(y, f"{type(self).__name__}.vector_field")
        dq, dp = self.derivatives(q, p, t=t, u=u)
        return (dq, dp) if was_tuple else torch.cat([dq, dp], -1)

    def forward(self, y0: State, t_eval: Any = None, u: Any = None) -> State:
        r"""Integrate Hamilton's equations from ``y0``: the trajectory at ``t_eval``, or the state at
        ``t_span[1]`` when ``t_eval`` is None.

        ``y0``: a tuple ``(q0, p0)`` (each ``[..., d]``) or a tensor ``cat([q0, p0], -1)``.
        Returns the same form: with ``t_eval``, time first (``(qs, ps)`` of
        ``[len(t_eval), ..., d]`` or a tensor ``[len(t_eval), ..., 2d]``). ``u``: the control input
        (see the class docstring).
        """
        q0, p0, was_tuple = split_pair(y0, f"{type(self).__name__}.forward")
        t = time_grid(self.t_span if t_eval is None else t_eval, q0)

        def field(s: Any, y: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return self.derivatives(y[0], y[1], t=s, u=u)

        qs, ps = self._solve(field, (q0, p0), t).ys
        if t_eval is None:
            qs, ps = qs[-1], ps[-1]
        return (qs, ps) if was_tuple else torch.cat([qs, ps], -1)


_EPS = 1e-3  # floor of the Cholesky factor's diagonal: eigenvalues of M(q) are at least ~_EPS**2


def _inverse_softplus(x: float) -> float:
    return float(torch.log(torch.expm1(torch.tensor(x, dtype=torch.float64))))


def _tril_from_flat(flat: torch.Tensor, d: int) -> torch.Tensor:
    """A lower-triangular ``[..., d, d]`` with a positive diagonal from ``d(d+1)/2`` raw entries."""
    rows, cols = torch.tril_indices(d, d, device=flat.device)
    on_diagonal = rows == cols
    entries = torch.where(on_diagonal, F.softplus(flat) + _EPS, flat)
    square = flat.new_zeros((*flat.shape[:-1], d * d)).index_copy(-1, rows * d + cols, entries)
    return square.reshape(*flat.shape[:-1], d, d)


class _ConstantCholesky(nn.Module):
    """A constant Cholesky factor ``L`` (``M = L L^T``), initialised to the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        n = dim * (dim + 1) // 2
        raw = torch.zeros(n)
        rows, cols = torch.tril_indices(dim, dim)
        raw[rows == cols] = _inverse_softplus(1.0 - _EPS)
        self.raw = nn.Parameter(raw)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return _tril_from_flat(self.raw.to(q.dtype), self.dim)


class _NetworkCholesky(nn.Module):
    """``q -> L(q)`` from a network with ``d(d+1)/2`` outputs (``M(q) = L(q) L(q)^T``)."""

    def __init__(self, dim: int, net: nn.Module) -> None:
        super().__init__()
        self.dim = dim
        self.net = net

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        flat = self.net(q)
        n = self.dim * (self.dim + 1) // 2
        if flat.shape != (*q.shape[:-1], n):
            raise ValueError(
                f"the mass network must map q [..., {self.dim}] to the {n} entries of a Cholesky "
                f"factor, shape {(*q.shape[:-1], n)}; got {tuple(flat.shape)}"
            )
        return _tril_from_flat(flat, self.dim)


def _default_mass_network(dim: int, hidden: int) -> nn.Module:
    n = dim * (dim + 1) // 2
    last = nn.Linear(hidden, n)
    with torch.no_grad():
        last.weight.zero_()  # start at M(q) = I
        last.bias.zero_()
        rows, cols = torch.tril_indices(dim, dim)
        last.bias[rows == cols] = _inverse_softplus(1.0 - _EPS)
    return nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), last)


class _MassPotentialHamiltonian(nn.Module):
    """``H(q, p) = p^T M(q)^{-1} p / 2 + V(q)`` on ``cat([q, p], -1)``."""

    def __init__(self, potential: nn.Module, cholesky: nn.Module, dim: int) -> None:
        super().__init__()
        self.potential = potential
        self.cholesky = cholesky
        self.dim = dim

    def kinetic(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        lower = self.cholesky(q)
        lower = lower.expand(*p.shape[:-1], self.dim, self.dim)
        z = torch.linalg.solve_triangular(lower, p.unsqueeze(-1), upper=False).squeeze(-1)  # L^{-1} p
        return 0.5 * z.square().sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, p = x[..., : self.dim], x[..., self.dim :]
        v = _scalar_output(self.potential(q), q.shape[:-1], "SeparableHamiltonianNN's potential network")
        return self.kinetic(q, p) + v


class SeparableHamiltonianNN(HamiltonianNN):
    r"""An HNN with the mechanical form :math:`H = \tfrac12 p^\top M(q)^{-1} p + V_\theta(q)`.

    Greydanus, Dzamba & Yosinski, *Hamiltonian Neural Networks*, NeurIPS 2019,
    arXiv:1906.01563 (structured variant: learned potential and positive-definite mass).

    ``potential`` maps ``q`` (``[..., d]``) to :math:`V(q)` (``[..., 1]`` or ``[...]``). The mass
    matrix is :math:`M = L L^\top` with :math:`L` lower triangular and a diagonal
    ``softplus(.) + 1e-3``, so it is symmetric positive definite by construction:

    - ``mass="constant"`` (default): one learned :math:`L`, initialised to :math:`M = I`. Then
      :math:`H = T(p) + V(q)` is **separable**: :math:`\dot q = M^{-1} p` depends on ``p`` only
      and :math:`\dot p = -\nabla V(q)` on ``q`` only, so ``solver="leapfrog"`` (Störmer–Verlet)
      or ``"yoshida4"`` is exactly symplectic for the learned system and its energy error stays
      bounded over long rollouts.
    - ``mass="learned"``: :math:`L(q)` from a network ``d -> mass_hidden -> mass_hidden ->
      d(d+1)/2`` (tanh), initialised to :math:`M(q) = I`. The Hamiltonian is then no longer
      separable; the symplectic solvers are no longer exactly symplectic for it (use an
      adaptive solver for accuracy).
    - ``mass=`` an ``nn.Module`` mapping ``q`` to the ``d(d+1)/2`` raw entries of :math:`L(q)`
      (row-major lower triangle; the diagonal entries go through ``softplus(.) + 1e-3``).

    Other arguments as :class:`HamiltonianNN` (``control``, ``t_span``, solve options).

    ```python
    import torch
    from torch import nn
    from torchnde.models.hamiltonian import SeparableHamiltonianNN

    V = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1))
    hnn = SeparableHamiltonianNN(V, 1, solver="leapfrog", dt=0.1)
    q0, p0 = torch.ones(4, 1), torch.zeros(4, 1)
    qs, ps = hnn((q0, p0), torch.linspace(0, 10, 101))   # [101, 4, 1] each
    ```
    """

    def __init__(
        self,
        potential: nn.Module,
        dim: int,
        *,
        mass: str | nn.Module = "constant",
        mass_hidden: int = 64,
        control: nn.Module | None = None,
        t_span: tuple[float, float] = (0.0, 1.0),
        **options: Any,
    ) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be the positive number of coordinates q, got {dim!r}")
        if not callable(potential):
            raise TypeError(f"potential must be a network mapping q to V(q), got {type(potential).__name__}")
        if isinstance(mass, nn.Module):
            cholesky: nn.Module = _NetworkCholesky(dim, mass)
        elif mass == "constant":
            cholesky = _ConstantCholesky(dim)
        elif mass == "learned":
            cholesky = _NetworkCholesky(dim, _default_mass_network(dim, mass_hidden))
        else:
            raise ValueError(f"mass must be 'constant', 'learned' or an nn.Module, got {mass!r}")
        super().__init__(
            _MassPotentialHamiltonian(potential, cholesky, dim), control=control, t_span=t_span, **options
        )
        self.dim = dim
        self.mass_kind = mass if isinstance(mass, str) else "network"

    @property
    def separable(self) -> bool:
        """True when the mass is constant, so that leapfrog is exactly symplectic for ``H``."""
        return self.mass_kind == "constant"

    def mass_matrix(self, q: torch.Tensor) -> torch.Tensor:
        r"""The mass matrix :math:`M(q) = L(q) L(q)^\top`, shape ``[..., d, d]`` (``[d, d]`` if constant)."""
        lower = self.hamiltonian.cholesky(q)
        return lower @ lower.transpose(-1, -2)

    def potential_energy(self, q: torch.Tensor) -> torch.Tensor:
        """The learned potential :math:`V(q)`, shape ``[...]``."""
        return _scalar_output(self.hamiltonian.potential(q), q.shape[:-1], "the potential network")

    def kinetic_energy(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        r""":math:`T = \tfrac12 p^\top M(q)^{-1} p`, shape ``[...]``."""
        q, p = torch.broadcast_tensors(q, p)
        return self.hamiltonian.kinetic(q, p)

    def _check_dim(self, q: torch.Tensor) -> None:
        if q.shape[-1] != self.dim:
            raise ValueError(f"this model has dim={self.dim} coordinates, got q of shape {tuple(q.shape)}")

    def energy(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        r""":math:`H = \tfrac12 p^\top M(q)^{-1} p + V(q)`, shape ``[...]``."""
        self._check_dim(q)
        return super().energy(q, p)
