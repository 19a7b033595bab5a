r"""Physics-informed neural networks (PINNs): a contrast to the neural differential equations.

M. Raissi, P. Perdikaris, G. E. Karniadakis, *Physics-informed neural networks: A deep
learning framework for solving forward and inverse problems involving nonlinear partial
differential equations*, Journal of Computational Physics 378, 686-707 (2019),
arXiv:1711.10561 (and its companion arXiv:1711.10566).

**A different goal from the rest of :mod:`torchnde.models`.** In a neural ODE the network is a
*vector field* and the solution comes out of an ODE solver. In a PINN the network *is the
solution*: a coordinate network :math:`u_\theta(t, x)` trained so that a differential operator
applied to it (by automatic differentiation) vanishes at scattered collocation points while it
matches initial, boundary or observed values. No solver runs, so this module does not derive
from :class:`~torchnde.models._base.SolveOptions` and takes no solve options. For a PDE

.. math::

    \mathcal N[u](t, x) = 0 \ \text{in the domain}, \qquad u = g \ \text{on the data points},

the training loss is

.. math::

    L(\theta) = w_u\,\frac{1}{N_u}\sum_{i=1}^{N_u} |u_\theta(z^i_u) - g^i|^2
              + w_f\,\frac{1}{N_f}\sum_{j=1}^{N_f} |\mathcal N[u_\theta](z^j_f)|^2 .

Unknown coefficients of :math:`\mathcal N` (the inverse problem) are parameters of the
residual module and are trained with :math:`\theta` (:class:`BurgersResidual` with
``trainable=True``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["PINN", "BurgersResidual", "Partials", "burgers_residual", "tanh_network"]

Residual = Callable[[torch.Tensor, torch.Tensor, "Partials"], Any]


def tanh_network(sizes: Sequence[int], *, dtype: torch.dtype | None = None) -> nn.Sequential:
    r"""A fully connected tanh network with Xavier-normal weights and zero biases (Raissi's net).

    ``sizes = [n_in, h_1, ..., h_k, n_out]`` gives ``len(sizes) - 1`` linear layers with tanh
    between them (none after the last): :math:`z_{l+1} = \tanh(W_l z_l + b_l)`, and the output
    :math:`W_k z_k + b_k`. Weights are drawn :math:`\mathcal N(0, 2/(n_l + n_{l+1}))` (Glorot &
    Bengio 2010), biases start at 0, as in Raissi, Perdikaris & Karniadakis, *Physics-informed
    neural networks*, J. Comput. Phys. 378 (2019), arXiv:1711.10561. Their Burgers network,
    "9 layers, 20 neurons per hidden layer", is ``[2] + [20] * 8 + [1]``.

    ```python
    from torchnde.models.pinn import tanh_network
    net = tanh_network([2] + [20] * 8 + [1])   # 3,021 parameters
    ```
    """
    sizes = list(sizes)
    if len(sizes) < 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"sizes must be at least two positive integers [n_in, ..., n_out], got {sizes!r}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(n_in, n_out, dtype=dtype)
        nn.init.xavier_normal_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class Partials:
    r"""The partial derivatives of a PINN's output, computed on demand by autograd and cached.

    ``d[key]`` is the partial derivative named by ``key``, a string of variable names: with
    variables ``("t", "x")``, ``d["t"]`` is :math:`u_t`, ``d["xx"]`` is :math:`u_{xx}`,
    ``d["tx"]`` (= ``d["xt"]``, mixed partials commute) is :math:`u_{tx}`, and ``d[""]`` is
    :math:`u` itself. Each value has the shape of :math:`u`, ``[N, m]`` (one column per output).

    An order-:math:`k` partial costs one backward pass per output column through the graph of
    the order-:math:`(k-1)` one, whose full gradient is cached (asking for ``"xx"`` also caches
    ``"tx"``). Gradients are taken with ``create_graph=True``, so a loss built from them trains
    the network (Raissi, Perdikaris & Karniadakis, *Physics-informed neural networks*, J. Comput.
    Phys. 378, 2019, arXiv:1711.10561). When created under ``torch.no_grad()`` the returned
    values are detached.

    ```python
    import torch
    from torchnde.models.pinn import PINN, burgers_residual, tanh_network
    pinn = PINN(tanh_network([2, 20, 1]), burgers_residual(0.01 / torch.pi))
    u, d = pinn.partials(torch.rand(5, 2))
    u_t, u_xx = d["t"], d["xx"]
    ```
    """

    def __init__(self, u: torch.Tensor, coords: torch.Tensor, variables: Sequence[str], keep_graph: bool):
        if not coords.requires_grad:
            raise ValueError("Partials needs the coordinates u was computed from, with requires_grad=True")
        self.u = u
        self.coords = coords
        self.variables = tuple(variables)
        self._index = {v: i for i, v in enumerate(self.variables)}
        self._keep_graph = keep_graph
        self._cache: dict[str, torch.Tensor] = {"": u}

    def _canonical(self, key: str) -> str:
        if not isinstance(key, str):
            raise TypeError(f"a partial derivative is named by a string such as 'x' or 'xx', got {key!r}")
        unknown = sorted(set(key) - set(self._index))
        if unknown:
            raise KeyError(
                f"unknown variable(s) {unknown} in {key!r}; the variables are {list(self.variables)} "
                "(name them at PINN(..., variables=...))"
            )
        return "".join(sorted(key, key=self._index.__getitem__))

    def _compute(self, key: str) -> torch.Tensor:
        if key in self._cache:
            return self._cache[key]
        with torch.enable_grad():  # also around the stacking and slicing, which must stay in the graph
            parent = self._compute(key[:-1])
            columns = []
            for j in range(parent.shape[-1]):
                g = None
                if parent.requires_grad:  # else parent is constant in coords: its derivatives are 0
                    (g,) = torch.autograd.grad(
                        parent[..., j].sum(), self.coords, create_graph=True, allow_unused=True
                    )
                columns.append(torch.zeros_like(self.coords) if g is None else g)
            grads = torch.stack(columns, dim=-1)  # [N, d, m]
            for v, i in self._index.items():
                self._cache.setdefault(self._canonical(key[:-1] + v), grads[..., i, :])
        return self._cache[key]

    def __getitem__(self, key: str) -> torch.Tensor:
        value = self._compute(self._canonical(key))
        return value if self._keep_graph else value.detach()


class PINN(nn.Module):
    r"""A physics-informed neural network: a coordinate network trained on a PDE residual.

    Raissi, Perdikaris & Karniadakis, *Physics-informed neural networks: A deep learning
    framework for solving forward and inverse problems involving nonlinear partial differential
    equations*, J. Comput. Phys. 378, 686-707 (2019), arXiv:1711.10561.

    The model is the solution itself, :math:`u_\theta(z)` at coordinates
    :math:`z = (t, x, \dots)`; there is no ODE solve (see the module docstring for how this
    differs from the neural differential equations of this library). The network sees the
    coordinates mapped affinely to :math:`[-1, 1]` per variable,

    .. math::

        \hat z = 2\,\frac{z - z_{\rm low}}{z_{\rm high} - z_{\rm low}} - 1,

    as Raissi et al. do (tanh networks train badly on unscaled inputs), and every derivative is
    taken with respect to the original :math:`z` (autograd goes through the scaling).

    **Arguments:**

    - ``network``: an ``nn.Module`` mapping ``[N, d]`` scaled coordinates to ``[N, m]``
      outputs. It must treat rows independently (derivatives are taken through
      ``u.sum()``), and be twice differentiable for second-order PDEs (tanh, not ReLU).
    - ``residual``: the PDE operator, ``residual(coords, u, d) -> r``, where ``coords`` is
      ``[N, d]``, ``u`` is ``[N, m]`` and ``d`` a :class:`Partials` (``d["x"]``,
      ``d["xx"]``, ...); ``r`` is a tensor, or a tuple of tensors for a system, that vanishes
      for the exact solution. If it is an ``nn.Module`` its parameters (unknown PDE
      coefficients) become parameters of the PINN. :func:`burgers_residual` is ready made.
    - ``domain``: one ``(low, high)`` pair per variable for the input scaling, e.g.
      ``[(0, 1), (-1, 1)]``; ``None`` feeds the raw coordinates to the network.
    - ``variables``: one single-character name per coordinate column, default ``("t", "x")``.

    **Methods:** ``forward(coords)`` is :math:`u`; :meth:`partials` returns ``u`` and a
    :class:`Partials`; :meth:`derivatives` returns named partials as a tuple; :meth:`residual`
    evaluates the PDE residual; :meth:`loss` (and :meth:`loss_terms`) is the PINN loss above.

    ```python
    import torch
    from torchnde.models.pinn import PINN, burgers_residual, tanh_network
    from torchnde.datasets.burgers import collocation_points, initial_boundary_points
    pinn = PINN(tanh_network([2] + [20] * 8 + [1], dtype=torch.float64),
                burgers_residual(0.01 / torch.pi), domain=[(0, 1), (-1, 1)])
    coords_u, u_data = initial_boundary_points(100, seed=0)
    coords_f = collocation_points(2000, seed=0)
    loss = pinn.loss(coords_f, coords_u, u_data)
    loss.backward()
    u, u_t, u_x, u_xx = pinn.derivatives(coords_f[:5], "t", "x", "xx")
    ```
    """

    def __init__(
        self,
        network: nn.Module,
        residual: Residual,
        *,
        domain: Sequence[tuple[float, float]] | None = None,
        variables: Sequence[str] = ("t", "x"),
    ) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(
                f"network must be an nn.Module mapping [N, d] coordinates to [N, m], got {network!r}"
            )
        if not callable(residual):
            raise TypeError(
                "residual must be a callable residual(coords, u, d); see burgers_residual for one"
            )
        variables = tuple(variables)
        if (
            not variables
            or any(not isinstance(v, str) or len(v) != 1 for v in variables)
            or len(set(variables)) != len(variables)
        ):
            raise ValueError(
                f"variables must be distinct single-character names, one per coordinate column, e.g. "
                f"('t', 'x'); got {variables!r}"
            )
        self.network = network
        self.pde = residual  # an nn.Module residual is registered, so its coefficients train too
        self.variables = variables
        if domain is None:
            self.register_buffer("low", None)
            self.register_buffer("high", None)
        else:
            bounds = [tuple(b) for b in domain]
            if len(bounds) != len(variables) or any(len(b) != 2 for b in bounds):
                raise ValueError(
                    f"domain needs one (low, high) pair per variable {list(variables)}, got {domain!r}"
                )
            low = torch.tensor([float(b[0]) for b in bounds], dtype=torch.float64)
            high = torch.tensor([float(b[1]) for b in bounds], dtype=torch.float64)
            if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (high > low).all()):
                raise ValueError(f"each domain pair must be finite with low < high, got {domain!r}")
            self.register_buffer("low", low)
            self.register_buffer("high", high)

    def _check_coords(self, coords: Any, name: str = "coords") -> torch.Tensor:
        if not isinstance(coords, torch.Tensor):
            raise TypeError(
                f"{name} must be a tensor [N, {len(self.variables)}], got {type(coords).__name__}"
            )
        if coords.ndim != 2 or coords.shape[1] != len(self.variables):
            raise ValueError(
                f"{name} must have shape [N, {len(self.variables)}] (columns {list(self.variables)}), "
                f"got {tuple(coords.shape)}"
            )
        if not coords.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {coords.dtype}")
        return coords

    def scale(self, coords: torch.Tensor) -> torch.Tensor:
        r"""The network's input: ``coords`` mapped to :math:`[-1, 1]` per variable (identity without ``domain``)."""
        if self.low is None:
            return coords
        low = self.low.to(coords.dtype)
        high = self.high.to(coords.dtype)
        return 2.0 * (coords - low) / (high - low) - 1.0

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        r"""The solution :math:`u_\theta` at ``coords`` (``[N, d]``), shape ``[N, m]``."""
        coords = self._check_coords(coords)
        u = self.network(self.scale(coords))
        if not isinstance(u, torch.Tensor) or u.ndim != 2 or u.shape[0] != coords.shape[0]:
            shape = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
            raise ValueError(
                f"the network must return [N, m] for [N, d] coordinates, got {shape} for N = "
                f"{coords.shape[0]}; end it with nn.Linear(hidden, m)"
            )
        return u

    def partials(self, coords: torch.Tensor) -> tuple[torch.Tensor, Partials]:
        r"""``(u, d)``: the solution at ``coords`` and a :class:`Partials` for its derivatives.

        ``coords`` is used as is if it already requires gradients (so derivatives with respect
        to it stay connected); otherwise a detached copy that requires them is made. Under
        ``torch.no_grad()`` gradients are enabled locally and the results are detached.
        """
        coords = self._check_coords(coords)
        keep = torch.is_grad_enabled()
        if not (keep and coords.requires_grad):
            coords = coords.detach().requires_grad_(True)
        with torch.enable_grad():
            u = self(coords)
        d = Partials(u, coords, self.variables, keep_graph=keep)
        return (u if keep else u.detach()), d

    def derivatives(self, coords: torch.Tensor, *keys: str) -> tuple[torch.Tensor, ...]:
        r"""``(u, d[k_1], d[k_2], ...)``: e.g. ``derivatives(z, "t", "x", "xx")`` gives
        :math:`(u, u_t, u_x, u_{xx})`, each ``[N, m]``, differentiable (``create_graph``)."""
        u, d = self.partials(coords)
        return (u, *(d[k] for k in keys))

    def residual(self, coords: torch.Tensor) -> Any:
        r"""The PDE residual :math:`\mathcal N[u_\theta]` at ``coords`` (a tensor, or a tuple for systems)."""
        u, d = self.partials(coords)
        return self.pde(d.coords, u, d)

    def loss_terms(
        self,
        collocation: torch.Tensor,
        data_coords: torch.Tensor | None = None,
        data_values: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(data_mse, residual_mse)``: the two terms of the PINN loss, unweighted.

        ``data_mse`` is :math:`\frac{1}{N_u}\sum |u_\theta(z_u) - g|^2` (mean over every entry;
        zero when no data is given); ``residual_mse`` is the mean square of the residual at the
        collocation points (summed over the components of a tuple residual).
        """
        self._check_coords(collocation, "collocation")
        if (data_coords is None) != (data_values is None):
            raise ValueError("give both data_coords and data_values, or neither")
        r = self.residual(collocation)
        parts = r if isinstance(r, (tuple, list)) else (r,)
        if not parts or not all(isinstance(p, torch.Tensor) for p in parts):
            raise TypeError("the residual must return a tensor or a tuple of tensors")
        residual_mse = sum(p.square().mean() for p in parts)
        if data_coords is None:
            data_mse = residual_mse.new_zeros(())
        else:
            u = self(self._check_coords(data_coords, "data_coords"))
            if data_values.shape != u.shape:
                raise ValueError(
                    f"data_values must match the network output's shape {tuple(u.shape)}, got "
                    f"{tuple(data_values.shape)}; reshape it to [N, m]"
                )
            data_mse = (u - data_values).square().mean()
        return data_mse, residual_mse

    def loss(
        self,
        collocation: torch.Tensor,
        data_coords: torch.Tensor | None = None,
        data_values: torch.Tensor | None = None,
        *,
        weights: tuple[float, float] = (1.0, 1.0),
    ) -> torch.Tensor:
        r"""The PINN loss :math:`w_u\,\mathrm{MSE}_u + w_f\,\mathrm{MSE}_f` (see :meth:`loss_terms`).

        ``weights = (w_u, w_f)``, both 1 in Raissi et al.
        """
        if len(weights) != 2 or any(float(w) < 0 for w in weights):
            raise ValueError(
                f"weights must be two non-negative numbers (w_data, w_residual), got {weights!r}"
            )
        data_mse, residual_mse = self.loss_terms(collocation, data_coords, data_values)
        return float(weights[0]) * data_mse + float(weights[1]) * residual_mse


class BurgersResidual(nn.Module):
    r"""The Burgers residual :math:`u_t + \lambda_1 u u_x - \lambda_2 u_{xx}`, optionally trainable.

    Raissi, Perdikaris & Karniadakis, *Physics-informed neural networks*, J. Comput. Phys. 378
    (2019), arXiv:1711.10561: section 3.1 (forward problem, :math:`\lambda_1 = 1`,
    :math:`\lambda_2 = \nu = 0.01/\pi`) and section 4.1 (identification of
    :math:`\lambda_1, \lambda_2` from scattered data). Variables must include ``"t"`` and
    ``"x"``.

    With ``trainable=True`` both coefficients are parameters, :math:`\lambda_1` directly and
    :math:`\lambda_2 = \exp(s)` through its logarithm (positive, as a viscosity must be; Raissi
    et al.'s code does the same), starting from the values given. With ``trainable=False`` they
    are fixed buffers.

    ```python
    import torch
    from torchnde.models.pinn import PINN, BurgersResidual, tanh_network
    inverse = PINN(tanh_network([2, 20, 20, 1]), BurgersResidual(0.0, 1e-3, trainable=True))
    [name for name, _ in inverse.named_parameters()][-2:]   # ['pde.lambda1', 'pde.log_lambda2']
    ```
    """

    def __init__(self, lambda1: float = 1.0, lambda2: float = 0.01 / torch.pi, *, trainable: bool = False):
        super().__init__()
        if not (isinstance(lambda2, (int, float)) and lambda2 > 0):
            raise ValueError(f"lambda2 (the viscosity) must be a positive number, got {lambda2!r}")
        l1 = torch.tensor(float(lambda1), dtype=torch.float64)
        log_l2 = torch.tensor(float(lambda2), dtype=torch.float64).log()
        self.trainable = bool(trainable)
        if self.trainable:
            self.lambda1 = nn.Parameter(l1)
            self.log_lambda2 = nn.Parameter(log_l2)
        else:
            self.register_buffer("lambda1", l1)
            self.register_buffer("log_lambda2", log_l2)

    @property
    def lambda2(self) -> torch.Tensor:
        r""":math:`\lambda_2 = \exp(\log\lambda_2)`, the viscosity."""
        return self.log_lambda2.exp()

    def forward(self, coords: torch.Tensor, u: torch.Tensor, d: Partials) -> torch.Tensor:
        r""":math:`u_t + \lambda_1 u u_x - \lambda_2 u_{xx}`, shape of ``u``."""
        l1 = self.lambda1.to(u.dtype)
        l2 = self.lambda2.to(u.dtype)
        return d["t"] + l1 * u * d["x"] - l2 * d["xx"]

    def extra_repr(self) -> str:
        return (
            f"lambda1={self.lambda1.item():.6g}, lambda2={self.lambda2.item():.6g}, "
            f"trainable={self.trainable}"
        )


def burgers_residual(nu: float) -> BurgersResidual:
    r"""The forward-problem Burgers residual :math:`u_t + u u_x - \nu u_{xx}` (fixed :math:`\nu`).

    Raissi, Perdikaris & Karniadakis, *Physics-informed neural networks*, J. Comput. Phys. 378
    (2019), arXiv:1711.10561, eq. (3) with :math:`\nu = 0.01/\pi`.

    ```python
    import torch
    from torchnde.models.pinn import burgers_residual
    f = burgers_residual(0.01 / torch.pi)   # f(coords, u, d) = d["t"] + u * d["x"] - nu * d["xx"]
    ```
    """
    if not (isinstance(nu, (int, float)) and nu > 0):
        raise ValueError(f"nu must be a positive viscosity, got {nu!r}")
    return BurgersResidual(1.0, float(nu), trainable=False)
