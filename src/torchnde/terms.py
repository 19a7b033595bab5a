r"""Terms: the right-hand side of a differential equation, as the loop sees it.

A term says *what* is integrated; a solver says *how*. ``solve(f, ...)`` with a plain callable
integrates the ODE term :math:`\dot y = f(t, y)`; passing a term object states it explicitly::

    sol = nde.solve(nde.ODETerm(f), y0, t_eval)

A term is *lowered* once, when the solve starts, to the plain callable the loop steps with
(:meth:`AbstractTerm.lower`), so that an evaluation inside the loop is a closure call and the
abstraction costs nothing per step. Solvers declare the term types they accept
(``AbstractSolver.terms``); a mismatch is rejected before solving, naming the solvers that
accept the term. Stochastic and controlled equations add their terms on this seam.

**Why one** :class:`SDETerm` **rather than diffrax's** ``MultiTerm(ODETerm, ControlTerm)``. A
stochastic solver is not a generic "vector field times control" stepper: Milstein needs the
derivative of the diffusion along itself, the strong order 1.5 method needs the diffusion apart
from the drift and iterated integrals of the noise, and which formula applies depends on the
noise type and the calculus. One term that names its drift, diffusion, noise type and calculus
gives the solver all of that directly, lets ``solve`` reject an unsupported combination before
any work (naming the solvers that support it), and is the shape torchsde users already write
(``f``, ``g``, ``noise_type``, ``sde_type``), which the ``torchsde`` drop-in maps onto one to
one. Controlled equations (CDEs) get their own term.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import torch

from ._names import did_you_mean
from .brownian import AbstractBrownian
from .interpolation import AbstractPath

__all__ = ["CALCULI", "NOISE_TYPES", "AbstractTerm", "CDETerm", "ODETerm", "SDETerm", "as_term"]

NOISE_TYPES = ("diagonal", "additive", "scalar", "general")
CALCULI = ("ito", "stratonovich")


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


class SDETerm(AbstractTerm):
    r"""The stochastic differential equation

    .. math:: dy = f(t, y)\,dt + g(t, y)\,dW(t)

    in the Itô or the Stratonovich sense (:math:`g(t, y) \circ dW`), driven by a Brownian motion
    :math:`W` (:mod:`torchnde.brownian`).

    **Arguments:**

    - ``drift``: ``f(t, y) -> dy/dt`` shaped like ``y`` (a tensor of any shape).
    - ``diffusion``: ``g(t, y)``; its shape and the Brownian motion's follow ``noise``:

      | ``noise`` | ``g(t, y)`` | :math:`W` | :math:`g\,dW` |
      |---|---|---|---|
      | ``"diagonal"`` | ``y.shape`` | ``y.shape`` | ``g * dW`` (one motion per entry) |
      | ``"scalar"`` | ``(*y.shape, 1)`` | ``(*y.shape[:-1], 1)`` | one motion per row of ``y`` |
      | ``"additive"`` | ``(*y.shape, m)``, independent of ``y`` | ``(*y.shape[:-1], m)`` | ``g @ dW`` |
      | ``"general"`` | ``(*y.shape, m)`` | ``(*y.shape[:-1], m)`` | ``g @ dW`` |

      The leading axes of ``y`` before the last are a batch: each row has its own Brownian
      motion (``y`` of shape ``[batch, d]``, ``g`` of ``[batch, d, m]`` as in torchsde).
    - ``noise``: ``"diagonal"`` (default), ``"additive"``, ``"scalar"`` or ``"general"``.
    - ``calculus``: ``"ito"`` (default) or ``"stratonovich"``.
    - ``brownian``: the Brownian motion (:class:`~torchnde.BrownianInterval`,
      :class:`~torchnde.BrownianPath`), to fix the path (a seed) or share it between solves;
      ``None`` draws a fresh :class:`~torchnde.BrownianPath` per solve from torch's global
      generator (``torch.manual_seed`` reproduces it).
    - ``prior_drift``: a prior drift ``h(t, y)`` shaped like ``y`` (latent SDEs, Li et al.
      2020). The solve then also accumulates the KL path term

      .. math:: \ell(t) = \int_{t_0}^{t} \tfrac12\,\lVert u(s, y(s))\rVert^2\,ds,\qquad
                u = \frac{f - h}{g}\ \text{(diagonal)},\quad u = g^{+}(f - h)\ \text{(other noise)},

      summed over the last axis of ``y`` (one value per row; :math:`g^+` the pseudo-inverse), and
      returns it as ``sol.kl`` of shape ``[len(t_eval), *y.shape[:-1]]``; its mean over paths
      estimates :math:`\mathrm{KL}` between the posterior and prior path measures on
      :math:`[t_0, t]`. The posterior (``drift``) and the prior share the diffusion. This is
      torchsde's ``logqp=True`` (whose per-interval increments are ``sol.kl.diff(dim=0)``).

    Solved with fixed steps (``dt=``) or adaptive ones (``rtol=``, ``atol=``) by the stochastic
    solvers (``nde.solvers.sde_names()``); a solver refuses a noise type or calculus it does not
    support, naming those that do.

    **Tuple states**: ``f`` and ``g`` take the tuple and return one entry per part; the solve is
    that of the parts concatenated (``N`` elements in all). Part ``i`` of ``g`` is shaped like
    ``y[i]`` for diagonal noise (:math:`W` of shape ``(N,)``, one motion per element, in the
    parts' order), and ``(*y[i].shape, m)`` otherwise, every part against one shared :math:`W` of
    shape ``(m,)`` (scalar noise: ``m = 1``).

    **Per-sample mode** (``per_sample=True``, fixed steps): the leading axis is a batch of
    independent problems, each with its own times and step grid; :math:`W` has the batch layout
    (leading axis the batch) and sample ``b`` reads its row ``b``, so a per-sample solve is each
    sample solved alone on its row of the path.

    ```python
    import torch, torchnde as nde
    mu, sigma = 0.5, 0.3                    # geometric Brownian motion, 1,000 paths
    term = nde.SDETerm(lambda t, y: mu * y, lambda t, y: sigma * y, noise="diagonal")
    y0 = torch.ones(1000, 1, dtype=torch.float64)
    sol = nde.solve(term, y0, torch.linspace(0, 1, 5), solver="milstein", dt=0.01)
    sol.ys.shape  # torch.Size([5, 1000, 1])
    ```
    """

    kind = "SDE"
    __slots__ = ("brownian", "calculus", "diffusion", "drift", "noise", "prior_drift")

    def __init__(
        self,
        drift: Callable[[Any, Any], Any],
        diffusion: Callable[[Any, Any], Any],
        noise: str = "diagonal",
        calculus: str = "ito",
        brownian: AbstractBrownian | None = None,
        prior_drift: Callable[[Any, Any], Any] | None = None,
    ):
        for name, fn in (("drift", drift), ("diffusion", diffusion), ("prior_drift", prior_drift)):
            if fn is None and name == "prior_drift":
                continue
            if isinstance(fn, AbstractTerm) or not callable(fn):
                raise TypeError(f"SDETerm needs a callable {name}(t, y), got {type(fn).__name__}")
        if noise not in NOISE_TYPES:
            raise ValueError(
                f"unknown noise type {noise!r}; valid: {', '.join(NOISE_TYPES)}.{did_you_mean(noise, NOISE_TYPES)}"
            )
        if calculus not in CALCULI:
            raise ValueError(
                f"unknown calculus {calculus!r}; valid: {', '.join(CALCULI)}.{did_you_mean(calculus, CALCULI)}"
            )
        if brownian is not None and not isinstance(brownian, AbstractBrownian):
            raise TypeError(
                "brownian must be a torchnde Brownian motion (BrownianInterval, BrownianPath) or None, "
                f"got {type(brownian).__name__}"
            )
        self.drift, self.diffusion = drift, diffusion
        self.noise, self.calculus, self.brownian = noise, calculus, brownian
        self.prior_drift = prior_drift

    def lower(self) -> Callable[[Any, Any], Any]:
        """The drift, which the loop steps with as its vector field; the diffusion and the noise
        are bound to the problem once per solve (``torchnde._loop.sde``)."""
        return self.drift

    @property
    def owner(self) -> Any:
        """What ``Adjoint``/``Reversible`` differentiate by default: the modules of the drift,
        diffusion and prior drift when each is an ``nn.Module`` or a method of one (torchsde's
        ``sde.f``, ``sde.g``), else one callable returning all their values, from which the
        tensors they use are discovered."""
        parts = tuple(p for p in (self.drift, self.diffusion, self.prior_drift) if p is not None)
        modules = [_module_of(p) for p in parts]
        if all(m is not None for m in modules):
            return torch.nn.ModuleList(list({id(m): m for m in modules}.values()))
        return _Joint(parts)

    def __repr__(self) -> str:
        prior = "" if self.prior_drift is None else f", prior_drift={self.prior_drift!r}"
        return (
            f"SDETerm({self.drift!r}, {self.diffusion!r}, noise={self.noise!r}, "
            f"calculus={self.calculus!r}{prior})"
        )


def _module_of(fn: Any) -> Any:
    """``fn`` if it is an ``nn.Module``, the module a bound method belongs to, else ``None``."""
    if isinstance(fn, torch.nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


class _Joint:
    """The callables of an SDE evaluated together, ``(t, y) -> (f, g, ...)``: one evaluation for
    parameter discovery to walk."""

    __slots__ = ("parts",)

    def __init__(self, parts: tuple):
        self.parts = parts

    def __call__(self, t: Any, y: Any) -> tuple:
        return tuple(p(t, y) for p in self.parts)


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
    - ``land_on_knots``: also land on the knots where the path is smooth (the natural cubic
      spline's, ``path.knots``, as ``step_ts``). The spline is :math:`C^2`, but its third
      derivative jumps at every knot, and so does :math:`d^3z/dt^3`: an adaptive step across a
      knot sees a lower-order error, is rejected or cut short, and the next one straddles a knot
      again. Landing on the knots keeps every step on one cubic piece. On the classifier of
      ``benchmarks/cde.py`` (128 knots, dopri5 at ``rtol=1e-4``) that is 129 steps with none
      rejected instead of 282 with 107 rejected, and a final state 12x closer to the exact one.
      Leave it off for fixed steps longer than the knot spacing (each would be cut at every
      knot) and for long, slowly varying series whose adaptive steps span many knots.

    ```python
    import torch, torchnde as nde
    x = torch.randn(8, 20, 3)  # [batch, time, channels]
    path = nde.CubicSplinePath(x)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4 * 3), torch.nn.Tanh())
    term = nde.CDETerm(lambda t, z: net(z).view(*z.shape, 3), path)
    sol = nde.solve(term, torch.zeros(8, 4), torch.tensor([0.0, 19.0]), solver="rk4", dt=0.5)
    sol.ys[-1].shape  # torch.Size([8, 4])
    knots = nde.CDETerm(term.vector_field, path, land_on_knots=True)  # adaptive steps on the knots
    sol = nde.solve(knots, torch.zeros(8, 4), torch.tensor([0.0, 19.0]), rtol=1e-4, atol=1e-6, save_steps=True)
    assert set(range(1, 19)) <= {round(s) for s in sol.step_ts.tolist()}
    ```
    """

    kind = "CDE"
    __slots__ = ("land_on_knots", "path", "vector_field")

    def __init__(
        self, vector_field: Callable[[Any, Any], Any], path: AbstractPath, land_on_knots: bool = False
    ):
        if isinstance(vector_field, AbstractTerm) or not callable(vector_field):
            raise TypeError(f"CDETerm needs a callable f(t, z), got {type(vector_field).__name__}")
        if not isinstance(path, AbstractPath):
            raise TypeError(
                f"CDETerm needs a path (nde.LinearPath, nde.CubicSplinePath, ...) as its control, got "
                f"{type(path).__name__}: build one from the data, e.g. nde.CubicSplinePath(x, t)"
            )
        if not isinstance(land_on_knots, bool):
            raise TypeError(f"land_on_knots must be True or False, got {land_on_knots!r}")
        self.vector_field, self.path, self.land_on_knots = vector_field, path, land_on_knots

    @property
    def step_ts(self) -> Any:  # type: ignore[override]
        if self.land_on_knots and self.path.jump_ts is None:
            return self.path.knots
        return self.path.step_ts

    @property
    def jump_ts(self) -> Any:  # type: ignore[override]
        return self.path.jump_ts

    def lower(self) -> Callable[[Any, Any], Any]:
        """``cde(t, z) = f(t, z) @ dX/dt(t)``. It takes the loop's time as a Python float too
        (``host_time``): a path on one shared grid then finds the piece holding ``t`` on the
        host, without a kernel, and ``f`` still receives a 0-d tensor."""
        derivative, batch = self.path.derivative, self.path.batch_shape
        field, product = self._field_and_product()
        scalar = torch.scalar_tensor

        def cde(t: Any, z: Any) -> Any:
            if t.__class__ is float:  # the global layout's host time
                dx = derivative(t)
                t = scalar(t, dtype=z.dtype, device=z.device)  # what the loop would have passed
            elif t.ndim:  # per sample: [B, 1, ..., 1]
                if t.numel() != batch.numel():
                    raise ValueError(
                        f"a per-sample CDE solve needs one path per sample: the path has batch shape "
                        f"{list(batch)}, the solve {t.shape[0]} samples"
                    )
                dx = derivative(t.reshape(batch))
            else:
                dx = derivative(t)
            return product(field(t, z), dx)

        cde.host_time = True  # type: ignore[attr-defined]
        return cde

    def lower_controlled(self) -> tuple[Callable[[Any, Any], Any], Callable[[float, float], Any], Callable]:
        r"""The equation kept as :math:`dz = f(t, z)\,dX`, for a solver that steps with the
        increments of the control rather than its derivative (reversible Heun): ``(field,
        increment, product)`` with ``field(t, z) = f(t, z)`` (``[*z.shape, channels]``, checked on
        the first call), ``increment(t0, t1) = X(t1) - X(t0)`` for float times, and
        ``product(fz, dx)`` the contraction :math:`f\,\Delta X` (``[*z.shape]``). On a piecewise
        linear path a step between two knots then sees the slope of the piece it crosses, which
        the derivative at either end of the step need not be."""
        evaluate = self.path.evaluate
        field, product = self._field_and_product()

        def increment(t0: float, t1: float) -> Any:
            return evaluate(t1) - evaluate(t0)

        return field, increment, product

    def _field_and_product(self) -> tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]:
        """``f`` with its output's shape checked on the first call, and the contraction
        ``product(fz, dx)`` of ``fz`` (``[*z.shape, channels]``) with a derivative or an increment
        of the path (``[*path.batch_shape, channels]``): what :meth:`lower` and
        :meth:`lower_controlled` share."""
        f = self.vector_field
        batch, channels = self.path.batch_shape, self.path.channels
        n_batch, checked = len(batch), []

        def field(t: Any, z: Any) -> Any:
            fz = f(t, z)
            if not checked:
                _check_cde_shapes(fz, z, batch, channels)
                checked.append(True)
            return fz

        def product(fz: Any, dx: Any) -> Any:
            # a broadcast product and a sum: cheaper than a batch of matrix-vector products,
            # forwards and backwards
            lead = (1,) * (fz.ndim - 1 - n_batch)
            return (fz * dx.reshape(*batch, *lead, channels)).sum(-1)

        return field, product

    @property
    def owner(self) -> Any:
        # the tensors to differentiate are f's and the path's: found from one evaluation
        return self.lower()

    @property
    def controlled_owner(self) -> Any:
        """:attr:`owner` for a solve in the controlled form (:meth:`lower_controlled`), which
        reads the path's values rather than its derivative: one evaluation of ``f`` and of the
        path finds the tensors to differentiate."""
        batch, evaluate = self.path.batch_shape, self.path.evaluate

        def values(t: Any, z: Any) -> Any:
            return evaluate(t.reshape(batch) if isinstance(t, torch.Tensor) and t.ndim else t)

        return _Joint((self.vector_field, values))

    def __repr__(self) -> str:
        knots = ", land_on_knots=True" if self.land_on_knots else ""
        return f"CDETerm({self.vector_field!r}, {self.path!r}{knots})"


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
