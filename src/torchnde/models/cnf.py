r"""Continuous normalising flows: exact and Hutchinson traces on the augmented state.

- R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, *Neural Ordinary Differential
  Equations*, NeurIPS 2018, arXiv 1806.07366, Sec. 4 (the instantaneous change of variables).
- W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, *FFJORD: Free-form
  continuous dynamics for scalable reversible generative models*, ICLR 2019, arXiv 1810.01367
  (Hutchinson's trace estimator, one probe per solve).

A data point :math:`x = z(t_0)` follows :math:`\dot z = f(t, z)` to :math:`z(t_1)`, which is
scored by the base density :math:`\mathcal N(0, I)`. Along a trajectory
:math:`\tfrac{d}{dt}\log p(z(t)) = -\operatorname{tr}\partial_z f(t, z(t))`, so

.. math:: \log p(x) = \log\mathcal N\bigl(z(t_1); 0, I\bigr) + \Delta(t_1),\qquad
          \dot\Delta = \operatorname{tr}\,\partial_z f(t, z),\quad \Delta(t_0) = 0:

:math:`\Delta` is one more channel of the same solve (sign convention: :math:`\Delta` is the
integral of the trace *forwards* in time, added to the base log-density). Sampling runs the
ODE backwards from :math:`z(t_1)\sim\mathcal N(0, I)` to :math:`x = z(t_0)`.

The trace is computed exactly from the :math:`d` rows :math:`e_i^\top\partial_z f` (one
vector–Jacobian product each: cost :math:`O(d^2)` for an MLP of fixed width), or estimated by
Hutchinson's identity :math:`\operatorname{tr} J = \mathbb E[\varepsilon^\top J\varepsilon]`
with one probe :math:`\varepsilon` (Rademacher or standard normal) drawn per solve and held fixed
during it (one vector–Jacobian product: :math:`O(d)`). With :math:`S = (J + J^\top)/2`, the
estimator's variance is :math:`2\lVert S\rVert_F^2` for a Gaussian probe and
:math:`2(\lVert S\rVert_F^2 - \sum_i J_{ii}^2)` for a Rademacher one, never more.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._base import SolveOptions, as_field, check_span, time_grid
from .regularisers import JacobianFrobenius, Regulariser, penalty

__all__ = [
    "CNF",
    "ConcatTimeMLP",
    "exact_trace",
    "hutchinson_trace",
    "probe_like",
    "standard_normal_log_prob",
]

_LOG_2PI = math.log(2 * math.pi)
_TRACES = ("exact", "hutchinson")
_PROBES = ("rademacher", "gaussian")


def probe_like(
    z: torch.Tensor, kind: str = "rademacher", generator: torch.Generator | None = None
) -> torch.Tensor:
    """A Hutchinson probe of ``z``'s shape: entries ±1 with equal odds (``"rademacher"``) or
    standard normal (``"gaussian"``); either has :math:`\\mathbb E[\\varepsilon\\varepsilon^\\top] = I`."""
    if kind == "rademacher":
        signs = torch.randint(0, 2, z.shape, generator=generator, device=z.device)
        return (2 * signs - 1).to(z.dtype)
    if kind == "gaussian":
        return torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    raise ValueError(f"unknown probe {kind!r}; valid: {', '.join(_PROBES)}")


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def exact_trace(
    dz: torch.Tensor, z: torch.Tensor, *, create_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(tr ∂dz/∂z, ‖∂dz/∂z‖_F²)`` per sample, each ``[batch]``, from one vector–Jacobian
    product per state dimension.

    ``dz = f(z)`` must have been computed from ``z`` with a graph (``z.requires_grad``); the
    field must act on each sample separately (row ``i`` of every sample's Jacobian comes from
    one backward pass with the cotangent :math:`e_i` for every sample).

    ```python
    import torch
    from torchnde.models import exact_trace
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    z = torch.randn(5, 2, requires_grad=True)
    trace, frobenius = exact_trace(z @ a.T, z)   # tensor([5., ...]), tensor([30., ...])
    ```
    """
    batch, d = _flat(dz).shape
    # e_i as every sample's cotangent, for each i: contiguous (an expanded view takes a slow
    # path in the backward pass) and never written to (create_graph may keep it)
    cotangents = torch.eye(d, dtype=dz.dtype, device=dz.device).unsqueeze(1).expand(d, batch, d)
    cotangents = cotangents.contiguous().reshape(d, *dz.shape)
    rows = [
        _flat(torch.autograd.grad(dz, z, cotangents[i], create_graph=create_graph, retain_graph=True)[0])
        for i in range(d)
    ]
    jacobian = torch.stack(rows, 1)  # [batch, d, d]: the per-op cost dominates a loop of small ones
    # the Frobenius norm as the sum of the rows' squared norms (row sums first: a fixed order)
    trace, frobenius = jacobian.diagonal(dim1=1, dim2=2).sum(1), jacobian.pow(2).sum(2).sum(1)
    return trace, frobenius


def hutchinson_trace(
    dz: torch.Tensor, z: torch.Tensor, probe: torch.Tensor, *, create_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(εᵀ(∂dz/∂z)ε, ‖εᵀ∂dz/∂z‖²)`` per sample, each ``[batch]``: unbiased estimates of the
    trace and of the squared Frobenius norm from one vector–Jacobian product.

    ```python
    import torch
    from torchnde.models import hutchinson_trace, probe_like
    z = torch.randn(10_000, 3, requires_grad=True)
    estimate, _ = hutchinson_trace(2 * z, z, probe_like(z))
    estimate.mean()   # 6.0 exactly: each εᵀ(2I)ε = 2‖ε‖² = 6 for a ±1 probe
    ```
    """
    (vjp,) = torch.autograd.grad(dz, z, probe, create_graph=create_graph, retain_graph=True)
    return _flat(vjp * probe).sum(1), _flat(vjp).pow(2).sum(1)


class ConcatTimeMLP(nn.Module):
    """An MLP field ``f(t, z)`` whose every layer sees ``[t, h]`` (FFJORD's "concat" layers).

    ``dim`` inputs and outputs, ``hidden`` the widths of the hidden layers, ``activation`` between
    layers (a smooth one: the trace differentiates through it).

    ```python
    import torch
    from torchnde.models import ConcatTimeMLP
    f = ConcatTimeMLP(2, hidden=(32, 32))
    f(torch.tensor(0.5), torch.randn(7, 2)).shape   # torch.Size([7, 2])
    ```
    """

    def __init__(
        self, dim: int, hidden: Sequence[int] = (64, 64, 64), activation: Callable[[], nn.Module] = nn.Tanh
    ) -> None:
        super().__init__()
        if dim < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"ConcatTimeMLP: dim and hidden widths must be >= 1, got {dim}, {tuple(hidden)}")
        sizes = [dim, *hidden, dim]
        self.layers = nn.ModuleList(nn.Linear(a + 1, b) for a, b in itertools.pairwise(sizes))
        self.activation = activation()

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        tt = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(*z.shape[:-1], 1)
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(torch.cat([tt, h], dim=-1))
            if i < len(self.layers) - 1:
                h = self.activation(h)
        return h


class CNF(SolveOptions):
    r"""A continuous normalising flow (Chen et al., NeurIPS 2018; FFJORD, Grathwohl et al., ICLR 2019).

    :math:`x = z(t_0)`, :math:`\dot z = f(t, z)`, and

    .. math:: \log p(x) = \log\mathcal N(z(t_1); 0, I) + \int_{t_0}^{t_1}
              \operatorname{tr}\partial_z f(t, z(t))\,dt,

    the integral carried as a channel :math:`\Delta` of the same solve (the state is the tuple
    ``(z, Δ, r_1, …)``). :meth:`sample` solves backwards from base samples.

    **Arguments:**

    - ``field``: the network ``f``; called as ``field(z)`` if its ``forward`` takes one argument,
      else ``field(t, z)``. It must act on each sample separately. Default (``field=None``): a
      :class:`ConcatTimeMLP` of ``dim`` with hidden widths ``hidden`` (default ``(64, 64, 64)``)
      and tanh.
    - ``dim``: the data dimension (needed with the default field and by :meth:`sample`); for
      a field on other event shapes give ``event_shape`` instead.
    - ``trace``: ``"exact"`` (:math:`d` vector–Jacobian products per evaluation) or
      ``"hutchinson"`` (one, with a probe drawn once per solve: ``probe="rademacher"`` or
      ``"gaussian"``).
    - ``t_span``: ``(t0, t1)``, data at ``t0`` and base at ``t1`` (default ``(0, 1)``).
    - ``regularisers``: :class:`KineticEnergy` / :class:`JacobianFrobenius` integrals in the same
      solve (RNODE, Finlay et al. 2020). The Frobenius norm reuses the trace's products: exact
      with ``trace="exact"``, the probe's estimate with ``"hutchinson"``. After
      :meth:`log_prob`, ``self.regularisation`` is their weighted batch mean and
      ``self.integrals`` the integrals themselves, one ``[batch]`` tensor per regulariser. (The
      penalties per dimension of Finlay et al.'s code, :math:`\lambda_K\lVert f\rVert^2/(2d)`
      and :math:`\lambda_J\lVert\partial f\rVert_F^2/d`, are ``KineticEnergy(λ_K,
      per_dimension=True)`` and ``JacobianFrobenius(λ_J, per_dimension=True)``.)
    - solve options (``solver``, ``rtol``, ``atol``, ``dt``, ``gradient``, ...): see
      :class:`~torchnde.models.SolveOptions`; every gradient strategy of ``solve`` works
      (``"adjoint"`` differentiates the augmented field with this module's parameters).

    ``forward(x)`` is :meth:`log_prob`.

    ```python
    import torch, torchnde as nde
    flow = nde.models.CNF(dim=2, hidden=(32, 32), trace="hutchinson", solver="dopri5", rtol=1e-5, atol=1e-5)
    x = torch.randn(128, 2) * 0.5 + 1.0
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    loss = -flow.log_prob(x).mean()
    loss.backward()
    opt.step()
    samples = flow.sample(16)   # by solving from t1 back to t0
    assert samples.shape == (16, 2) and flow.log_prob(samples).shape == (16,)
    ```
    """

    def __init__(
        self,
        field: Callable[..., Any] | None = None,
        *,
        dim: int | None = None,
        event_shape: Sequence[int] | None = None,
        hidden: Sequence[int] | None = None,
        trace: str = "exact",
        probe: str = "rademacher",
        t_span: tuple[float, float] = (0.0, 1.0),
        regularisers: Sequence[Regulariser] = (),
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if trace not in _TRACES:
            raise ValueError(f"CNF: unknown trace {trace!r}; valid: {', '.join(_TRACES)}")
        if probe not in _PROBES:
            raise ValueError(f"CNF: unknown probe {probe!r}; valid: {', '.join(_PROBES)}")
        if dim is not None and event_shape is not None:
            raise TypeError("CNF: give dim or event_shape, not both (dim=d is event_shape=(d,))")
        if field is None and dim is None:
            raise TypeError("CNF: the default field needs dim=; or pass field=your network")
        if field is not None and hidden is not None:
            raise TypeError(
                "CNF: hidden= sizes the default field only; drop it, or drop field= to use the default"
            )
        for r in regularisers:
            if not isinstance(r, Regulariser):
                raise TypeError(f"regularisers must be KineticEnergy/JacobianFrobenius objects, got {r!r}")
        self.field = ConcatTimeMLP(dim, hidden or (64, 64, 64)) if field is None else field  # type: ignore[arg-type]
        self.event_shape = (dim,) if dim is not None else None if event_shape is None else tuple(event_shape)
        self.trace = trace
        self.probe = probe
        self.t_span = check_span(t_span)
        self.regularisers = tuple(regularisers)
        self.regularisation: torch.Tensor | None = None
        self.integrals: tuple[torch.Tensor, ...] | None = None

    def vector_field(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The field :math:`f(t, z)` this flow integrates."""
        return as_field(self.field)(t, z)

    def augmented_field(
        self, probe: torch.Tensor | None
    ) -> Callable[[torch.Tensor, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]:
        r"""The field on ``(z, Δ, r_1, …)``: ``(f, tr ∂f, rate_1, …)`` with the exact trace
        (``probe=None``) or the Hutchinson estimate with ``probe`` (shape of ``z``, held fixed).

        Called without an enclosing graph (``no_grad``, an adjoint's forward pass) it returns
        detached outputs; with one, the trace keeps its graph for training.
        """
        regularisers = self.regularisers

        def field(t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            z = state[0]
            outer = torch.is_grad_enabled()
            with torch.enable_grad():
                zz = z if z.requires_grad else z.detach().requires_grad_()
                dz = self.vector_field(t, zz)
                if probe is None:
                    trace, frobenius = exact_trace(dz, zz, create_graph=outer)
                else:
                    trace, frobenius = hutchinson_trace(dz, zz, probe, create_graph=outer)
                rates = tuple(
                    r.normalise(frobenius, zz) if isinstance(r, JacobianFrobenius) else r.rate(zz, dz, probe)
                    for r in regularisers
                )
            out = (dz, trace, *rates)
            return out if outer else tuple(o.detach() for o in out)

        return field

    def _check_data(self, x: Any, who: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"CNF.{who}: x must be a tensor [batch, *event_shape], got {type(x).__name__}")
        if x.dim() < 2:
            raise ValueError(
                f"CNF.{who}: x must be a batch [batch, *event_shape], got shape {tuple(x.shape)}; "
                "for one point use x.unsqueeze(0)"
            )
        if self.event_shape is not None and tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"CNF.{who}: this flow's event shape is {self.event_shape}, got points of shape "
                f"{tuple(x.shape[1:])}"
            )
        return x

    def _times(self, like: torch.Tensor, backwards: bool) -> torch.Tensor:
        t0, t1 = self.t_span
        return time_grid((t1, t0) if backwards else (t0, t1), like)

    def flow(
        self, x: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(z(t1), Δ(t1))``: the forward map of ``x`` and :math:`\int_{t_0}^{t_1}\operatorname{tr}
        \partial_z f\,dt` per sample (exact, or Hutchinson with one probe drawn from
        ``generator`` for the whole solve). Sets ``self.regularisation`` and ``self.integrals``."""
        x = self._check_data(x, "flow")
        probe = None if self.trace == "exact" else probe_like(x, self.probe, generator)
        zero = x.new_zeros(x.shape[0])
        state0 = (x, zero, *(zero for _ in self.regularisers))
        final = [s[-1] for s in self._solve(self.augmented_field(probe), state0, self._times(x, False)).ys]
        self.integrals = tuple(final[2:]) if self.regularisers else None
        self.regularisation = penalty(self.regularisers, final[2:]) if self.regularisers else None
        return final[0], final[1]

    def log_prob(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        r""":math:`\log p(x) = \log\mathcal N(z(t_1); 0, I) + \Delta(t_1)` per sample, ``[batch]``."""
        z, delta = self.flow(x, generator=generator)
        return standard_normal_log_prob(z) + delta

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """:meth:`log_prob` of ``x``."""
        return self.log_prob(x, generator=generator)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """The data points ``x = z(t0)`` of base points ``z = z(t1)``: the solve from ``t1`` back
        to ``t0`` (without the trace)."""
        z = self._check_data(z, "inverse")
        return self.trajectory(z, self._times(z, True))[-1]

    def trajectory(self, z: torch.Tensor, t_eval: Any) -> torch.Tensor:
        r"""The states ``[len(t_eval), batch, *event_shape]`` of :math:`\dot z = f(t, z)` started
        from ``z`` at ``t_eval[0]`` (without the trace): from ``t1`` down to ``t0`` the paths that
        carry base points to samples, from ``t0`` up to ``t1`` those of data points to the base.
        ``self.nfe`` is that solve's cost (the sampling cost for ``t_eval = (t1, t0)``).

        ```python
        import torch, torchnde as nde
        flow = nde.models.CNF(dim=2, hidden=(16,), solver="dopri5", rtol=1e-5, atol=1e-5)
        paths = flow.trajectory(torch.randn(50, 2), torch.linspace(1, 0, 11))
        assert paths.shape == (11, 50, 2)   # paths[-1] is flow.inverse of paths[0]
        ```
        """
        z = self._check_data(z, "trajectory")
        return self._solve(self.vector_field, z, time_grid(t_eval, z)).ys

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """``n`` samples ``[n, *event_shape]``: base draws :math:`z(t_1)\\sim\\mathcal N(0, I)` (from
        ``generator``) carried back to :math:`t_0`. The parameters' dtype and device by default."""
        if self.event_shape is None:
            raise TypeError(
                "CNF.sample: this flow does not know its event shape; build it with dim= or event_shape="
            )
        if n < 1:
            raise ValueError(f"CNF.sample: n must be >= 1, got {n}")
        param = next(self.parameters(), None)
        dtype = dtype or (param.dtype if param is not None else torch.get_default_dtype())
        device = device or (param.device if param is not None else None)
        z = torch.randn((n, *self.event_shape), generator=generator, dtype=dtype, device=device)
        return self.inverse(z)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    r""":math:`\log\mathcal N(z; 0, I)` summed over every axis but the first, ``[batch]``."""
    flat = _flat(z)
    return -0.5 * flat.pow(2).sum(1) - 0.5 * flat.shape[1] * _LOG_2PI
