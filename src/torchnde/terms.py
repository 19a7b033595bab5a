r"""Terms: the right-hand side of a differential equation, as the loop sees it.

A term says *what* is integrated; a solver says *how*. ``solve(f, ...)`` with a plain callable
integrates the ODE term :math:`\dot y = f(t, y)`; passing a term object states it explicitly::

    sol = nde.solve(nde.ODETerm(f), y0, t_eval)

A term is *lowered* once, when the solve starts, to the plain callable the loop steps with
(:meth:`AbstractTerm.lower`), so that an evaluation inside the loop is a closure call and the
abstraction costs nothing per step. Solvers declare the term types they accept
(``AbstractSolver.terms``); a mismatch is rejected before solving, naming the solvers that
accept the term. Stochastic and controlled equations add their terms on this seam.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import torch

from .interpolation import AbstractPath

__all__ = ["AbstractTerm", "CDETerm", "ODETerm", "as_term"]


class AbstractTerm(abc.ABC):
    """The base of every term. A concrete term knows its user-facing callable(s) and lowers
    them to the callable the loop integrates.

    ``kind`` is a short name used in error messages (``"ODE"``, ``"SDE"``, ``"CDE"``).
    ``step_ts`` and ``jump_ts`` are times the lowered field is not smooth at (a kink of a
    control: the solver lands there) or jumps at (it lands there and restarts after), as sorted
    1-D tensors or ``None``; ``solve`` adds them to the controller's.
    """

    kind: str = "term"
    step_ts: Any = None
    jump_ts: Any = None

    @abc.abstractmethod
    def lower(self) -> Callable[[Any, Any], Any]:
        """The vector field ``g(t, y) -> dy/dt`` (torchdiffeq's convention, user layout) that
        the loop steps with. Called once per solve."""

    @property
    def owner(self) -> Any:
        """The object whose parameters are differentiated by default (an ``nn.Module`` when the
        vector field is one); the adjoint falls back to discovering what the field uses."""
        return None


class ODETerm(AbstractTerm):
    r"""The ordinary differential equation :math:`\dot y = f(t, y)`.

    **Arguments:**

    - ``vector_field``: ``f(t, y) -> dy/dt``, with ``y`` a tensor of any shape or a tuple of
      tensors, returning the same structure.

    ```python
    import torch, torchnde as nde
    term = nde.ODETerm(lambda t, y: -y)
    sol = nde.solve(term, torch.ones(2), torch.linspace(0, 1, 5))
    ```
    """

    kind = "ODE"
    __slots__ = ("vector_field",)

    def __init__(self, vector_field: Callable[[Any, Any], Any]):
        if isinstance(vector_field, AbstractTerm) or not callable(vector_field):
            raise TypeError(f"ODETerm needs a callable f(t, y), got {type(vector_field).__name__}")
        self.vector_field = vector_field

    def lower(self) -> Callable[[Any, Any], Any]:
        return self.vector_field

    @property
    def owner(self) -> Any:
        return self.vector_field

    def __repr__(self) -> str:
        return f"ODETerm({self.vector_field!r})"


def as_term(f: Any) -> AbstractTerm:
    """``f`` itself if it is a term, else the ODE term of the callable ``f``."""
    if isinstance(f, AbstractTerm):
        return f
    if not callable(f):
        raise TypeError(f"f must be callable as f(t, y) or a torchnde term, got {type(f).__name__}")
    return ODETerm(f)


class CDETerm(AbstractTerm):
    r"""The controlled differential equation :math:`dz = f(t, z)\,dX(t)`, driven by a path
    :math:`X` built from data (:mod:`torchnde.interpolation`), integrated as the ODE

    .. math:: \frac{dz}{dt} = f(t, z)\,\frac{dX}{dt}(t)

    (Kidger, Morrill, Foster & Lyons, *Neural controlled differential equations for irregular
    time series*, NeurIPS 2020). The solve lands on the path's knots where it is only piecewise
    smooth (its ``step_ts``/``jump_ts``, added to the controller's): every solver, controller,
    gradient strategy and per-sample solves work unchanged. Gradients reach the data the path
    was built from, ``z0`` and ``f``'s parameters.

    **Arguments:**

    - ``vector_field``: ``f(t, z)`` returning ``[*z.shape, channels]``: one column per channel
      of the path. ``z`` is ``[*path.batch_shape, ...]``; with ``per_sample=True``, ``t`` is
      ``[B, 1, ..., 1]`` and sample ``b`` of the path is evaluated at its own time.
    - ``path``: an :class:`~torchnde.interpolation.AbstractPath` (:class:`LinearPath`,
      :class:`RectilinearPath`, :class:`HermitePath`, :class:`CubicSplinePath`).

    ```python
    import torch, torchnde as nde
    x = torch.randn(8, 20, 3)  # [batch, time, channels]
    path = nde.CubicSplinePath(x)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4 * 3), torch.nn.Tanh())
    term = nde.CDETerm(lambda t, z: net(z).view(*z.shape, 3), path)
    sol = nde.solve(term, torch.zeros(8, 4), torch.tensor([0.0, 19.0]), solver="rk4", dt=0.5)
    sol.ys[-1].shape  # torch.Size([8, 4])
    ```
    """

    kind = "CDE"
    __slots__ = ("path", "vector_field")

    def __init__(self, vector_field: Callable[[Any, Any], Any], path: AbstractPath):
        if isinstance(vector_field, AbstractTerm) or not callable(vector_field):
            raise TypeError(f"CDETerm needs a callable f(t, z), got {type(vector_field).__name__}")
        if not isinstance(path, AbstractPath):
            raise TypeError(
                f"CDETerm needs a path (nde.LinearPath, nde.CubicSplinePath, ...) as its control, got "
                f"{type(path).__name__}: build one from the data, e.g. nde.CubicSplinePath(x, t)"
            )
        self.vector_field, self.path = vector_field, path

    @property
    def step_ts(self) -> Any:  # type: ignore[override]
        return self.path.step_ts

    @property
    def jump_ts(self) -> Any:  # type: ignore[override]
        return self.path.jump_ts

    def lower(self) -> Callable[[Any, Any], Any]:
        f, derivative = self.vector_field, self.path.derivative
        batch, channels = self.path.batch_shape, self.path.channels
        n_batch, checked = len(batch), []

        def cde(t: Any, z: Any) -> Any:
            if t.ndim:  # per sample: [B, 1, ..., 1]
                if t.numel() != batch.numel():
                    raise ValueError(
                        f"a per-sample CDE solve needs one path per sample: the path has batch shape "
                        f"{list(batch)}, the solve {t.shape[0]} samples"
                    )
                dx = derivative(t.reshape(batch))
            else:
                dx = derivative(t)
            fz = f(t, z)
            if not checked:
                _check_cde_shapes(fz, z, batch, channels)
                checked.append(True)
            if z.ndim == n_batch:  # one scalar state per sample
                return (fz * dx).sum(-1)
            lead = (1,) * (z.ndim - n_batch - 1)
            return (fz @ dx.reshape(*batch, *lead, channels, 1)).squeeze(-1)

        return cde

    @property
    def owner(self) -> Any:
        # the tensors to differentiate are f's and the path's: found from one evaluation
        return self.lower()

    def __repr__(self) -> str:
        return f"CDETerm({self.vector_field!r}, {self.path!r})"


def _check_cde_shapes(fz: Any, z: Any, batch: Any, channels: int) -> None:
    if not isinstance(z, torch.Tensor):
        raise TypeError("a CDE state must be one tensor [*batch, ...], not a tuple")
    if tuple(z.shape[: len(batch)]) != tuple(batch):
        raise ValueError(
            f"the CDE state must start with the path's batch shape {list(batch)}, got z of shape "
            f"{list(z.shape)}"
        )
    if not isinstance(fz, torch.Tensor) or fz.shape != (*z.shape, channels):
        got = list(fz.shape) if isinstance(fz, torch.Tensor) else type(fz).__name__
        raise ValueError(
            f"a CDE vector field f(t, z) must return [*z.shape, channels] = {[*z.shape, channels]} "
            f"(one column per channel of the path), got {got}"
        )
