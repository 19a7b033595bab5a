r"""Drop-in replacements for ``torchsde`` 0.2.6: ``sdeint``, ``sdeint_adjoint``, the Brownian
motions ``BrownianInterval``, ``BrownianPath``, ``BrownianTree``, and the ``BaseSDE`` helpers.

Change ``import torchsde`` to ``import torchnde.compat.torchsde as torchsde`` and nothing else:
the same ``sde`` object (an ``nn.Module`` or any object with ``f``, ``g``, ``noise_type``,
``sde_type``; or ``f_and_g``, ``g_prod``, ``f_and_g_prod``; ``h`` for the prior drift), the same
arguments, method names, defaults, errors (same exception types and messages) and fixed-step
semantics: steps of ``dt`` from ``ts[0]``, the last one shortened to land on ``ts[-1]``, outputs
between steps interpolated linearly. The SDE becomes an :class:`~torchnde.SDETerm` solved by
``torchnde.solve`` with torchnde's stochastic solvers, which agree with torchsde's same methods
on the same Brownian increments (``tests/test_compat_torchsde.py``).

The Brownian motions here take torchsde's constructor arguments and are called as torchsde's
are (``bm(ta, tb)``, ``return_U=True`` for the space-time Lévy area's :math:`U = \int_{t_a}^{t_b}
W(t_a, s)\,ds`); they are torchnde Brownian motions underneath (the same path whatever the order
of the queries). ``bm=`` also takes torchsde's own Brownian objects, or any object with their
interface.

What differs, on purpose: an unknown keyword argument, option or ``names`` key is an error
(torchsde warns or ignores it); time is handled in float64; ``BrownianPath`` is not limited to
``[t0, t0 + 1]``; ``sdeint_adjoint``'s Itô adjoint methods solve the backward SDE in Stratonovich
form (see :func:`sdeint_adjoint`); ``adjoint_reversible_heun`` lands on the output times. Not
supported yet (each raises ``NotImplementedError`` saying so): ``adjoint_adaptive=True`` (the
stochastic adjoint steps back on a fixed grid), ``method="log_ode"`` (it needs Davie's or
Foster's approximation of the full Lévy area).

``adaptive=True`` steps as torchsde does (step doubling, torchsde's step-size rule, ``dt`` the
first step; :mod:`torchnde.compat._torchsde_adaptive`), on a ``BrownianInterval`` (a
``BrownianPath`` is refused), with one deliberate difference at ``dt_min``: torchsde accepts the
step just taken whatever its size and error once the next would fall below ``dt_min``; here only
steps of at most ``dt_min`` are accepted above tolerance (a longer one is retried at ``dt_min``),
and one warning per solve gives their count.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from .._names import did_you_mean
from .._solve import solve
from ..brownian import AbstractBrownian
from ..brownian import BrownianInterval as _Interval
from ..brownian import BrownianPath as _Path
from ..controllers import ConstantStep
from ..gradients import Adjoint, Reversible
from ..solvers import Milstein, StepDoubling, StepResult, StochasticReversibleHeun, resolve_solver
from ..solvers.stochastic import ReversibleHeunState
from ..terms import SDETerm
from ._torchsde_adaptive import TorchsdeDoubling, TorchsdeSteps

__all__ = [
    "BaseSDE",
    "BrownianInterval",
    "BrownianPath",
    "BrownianTree",
    "SDEIto",
    "SDEStratonovich",
    "brownian_interval_like",
    "sdeint",
    "sdeint_adjoint",
]

# torchsde 0.2.6's names, printed as it prints them (sorted lists)
_METHODS = sorted(
    ["euler", "milstein", "srk", "midpoint", "reversible_heun", "adjoint_reversible_heun", "heun",
     "log_ode", "euler_heun"]
)  # fmt: skip
_NOISE_TYPES = sorted(["general", "diagonal", "scalar", "additive"])
_SDE_TYPES = sorted(["ito", "stratonovich"])
_LEVY = sorted(["none", "space-time", "davie", "foster"])
_ALL_NOISES = ("general", "diagonal", "scalar", "additive")
# method -> (calculus, noise types) as torchsde's solver classes declare them
_SUPPORT = {
    "euler": ("ito", _ALL_NOISES),
    "srk": ("ito", ("additive", "diagonal", "scalar")),
    "milstein": (None, ("additive", "diagonal", "scalar")),  # Itô and Stratonovich
    "midpoint": ("stratonovich", _ALL_NOISES),
    "heun": ("stratonovich", _ALL_NOISES),
    "euler_heun": ("stratonovich", _ALL_NOISES),
    "reversible_heun": ("stratonovich", _ALL_NOISES),
    "log_ode": ("stratonovich", _ALL_NOISES),
}
_NAMES = (
    "drift",
    "diffusion",
    "prior_drift",
    "diffusion_prod",
    "drift_and_diffusion",
    "drift_and_diffusion_prod",
)
_ATTRS = {"drift": "f", "diffusion": "g", "prior_drift": "h", "diffusion_prod": "g_prod",
          "drift_and_diffusion": "f_and_g", "drift_and_diffusion_prod": "f_and_g_prod"}  # fmt: skip
_OPTIONS = {"milstein": ("grad_free",)}


# ---------------------------------------------------------------------------------------------
# SDE base classes


class BaseSDE(torch.nn.Module):
    """torchsde's base class: an ``nn.Module`` with validated ``noise_type`` and ``sde_type``.

    ```python
    import torch
    import torchnde.compat.torchsde as torchsde

    class OU(torchsde.SDEIto):
        def __init__(self):
            super().__init__(noise_type="diagonal")

        def f(self, t, y):
            return -y

        def g(self, t, y):
            return 0.2 * torch.ones_like(y)

    ys = torchsde.sdeint(OU(), torch.ones(4, 1), torch.linspace(0, 1, 3), dt=0.1)
    assert ys.shape == (3, 4, 1)
    ```
    """

    def __init__(self, noise_type: str, sde_type: str):
        super().__init__()
        if noise_type not in _NOISE_TYPES:
            raise ValueError(f"Expected noise type in {_NOISE_TYPES}, but found {noise_type}")
        if sde_type not in _SDE_TYPES:
            raise ValueError(f"Expected sde type in {_SDE_TYPES}, but found {sde_type}")
        self.noise_type = noise_type
        self.sde_type = sde_type


class SDEIto(BaseSDE):
    """An Itô SDE: ``BaseSDE(noise_type, "ito")``."""

    def __init__(self, noise_type: str):
        super().__init__(noise_type=noise_type, sde_type="ito")


class SDEStratonovich(BaseSDE):
    """A Stratonovich SDE: ``BaseSDE(noise_type, "stratonovich")``."""

    def __init__(self, noise_type: str):
        super().__init__(noise_type=noise_type, sde_type="stratonovich")


# ---------------------------------------------------------------------------------------------
# Brownian motions


def _entropy() -> int:
    """torchsde draws a missing ``entropy`` from numpy's global generator (``np.random.seed``
    reproduces it); so do these classes."""
    return int(np.random.randint(0, 2**31 - 1))


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (float, int)) or (isinstance(x, torch.Tensor) and x.numel() == 1)


def _tensor_info(
    w: Any, h: Any, size: Any, dtype: Any, device: Any
) -> tuple[tuple, torch.dtype, torch.device]:
    """torchsde's rules for ``size``/``dtype``/``device`` given or implied by ``W``/``H``."""
    tensors = [x for x in (w, h) if isinstance(x, torch.Tensor)]
    if dtype is None and not tensors:
        dtype = torch.get_default_dtype()
    if device is None and not tensors:
        device = torch.device("cpu")
    sizes = ([] if size is None else [tuple(size)]) + [tuple(x.shape) for x in tensors]
    dtypes = ([] if dtype is None else [dtype]) + [x.dtype for x in tensors]
    devices = ([] if device is None else [torch.device(device)]) + [x.device for x in tensors]
    if not sizes:
        raise ValueError("Must either specify `size` or pass in `W` or `H` to implicitly define the size.")
    if any(s != sizes[0] for s in sizes):
        raise ValueError("Multiple sizes found. Make sure `size` and `W` or `H` are consistent.")
    if any(d != dtypes[0] for d in dtypes):
        raise ValueError("Multiple dtypes found. Make sure `dtype` and `W` or `H` are consistent.")
    if any(d != devices[0] for d in devices):
        raise ValueError("Multiple devices found. Make sure `device` and `W` or `H` are consistent.")
    return sizes[0], dtypes[0], devices[0]


class _TorchsdeCalls:
    """torchsde's call convention over a torchnde Brownian motion: ``bm(ta, tb)`` the increment,
    ``bm(t)`` the value :math:`W(t) - W(t_0)` (plus ``w0`` for the path and the tree),
    ``return_U``/``return_A`` for the Lévy areas, out-of-range times clamped with a warning."""

    _levy_area_approximation: str
    _w0: torch.Tensor | None = None

    @property
    def levy_area_approximation(self) -> str:
        """torchsde's name for the Lévy area kept: ``"none"``, ``"space-time"``, ``"davie"`` or
        ``"foster"`` (the last two provide the space-time Lévy area here; ``return_A`` raises)."""
        return self._levy_area_approximation

    def size(self) -> torch.Size:
        return self.shape  # type: ignore[attr-defined]

    def _clamp(self, t: float, name: str) -> float:
        t0, t1 = self.t0, self.t1  # type: ignore[attr-defined]
        if t < t0:
            warnings.warn(f"Should have {name}>=t0 but got {name}={t} and t0={t0}.", stacklevel=3)
            return t0
        if t > t1:
            warnings.warn(f"Should have {name}<=t1 but got {name}={t} and t1={t1}.", stacklevel=3)
            return t1
        return t

    def __call__(self, ta: Any, tb: Any = None, return_U: bool = False, return_A: bool = False) -> Any:
        """``W(tb) - W(ta)`` (``bm(t)``: the value at ``t``); with ``return_U`` also
        :math:`U = (t_b - t_a)(W/2 + H)` (``None`` without Lévy area), as torchsde returns them."""
        point = tb is None
        if point:
            ta, tb = self.t0, ta  # type: ignore[attr-defined]
        ta, tb = self._clamp(float(ta), "ta"), self._clamp(float(tb), "ta" if point else "tb")
        if ta > tb:
            raise RuntimeError(f"Query times ta={ta:.3f} and tb={tb:.3f} must respect ta <= tb.")
        if return_A and self._levy_area_approximation in ("davie", "foster"):
            raise NotImplementedError(
                "return_A (Davie's or Foster's approximation of the Lévy area, for torchsde's 'log_ode' "
                "method) is not supported by torchnde.compat.torchsde: use a solver that does not need it"
            )
        u = None
        if return_U and self.levy_area:  # type: ignore[attr-defined]
            w, hh = self.levy(ta, tb)  # type: ignore[attr-defined]
            u = (tb - ta) * (0.5 * w + hh)
        else:
            w = self.increment(ta, tb)  # type: ignore[attr-defined]
        if point and self._w0 is not None and not return_U and not return_A:
            w = w + self._w0
        if return_U:
            return (w, u, None) if return_A else (w, u)
        return (w, None) if return_A else w


class BrownianInterval(_TorchsdeCalls, _Interval):
    r"""torchsde's ``BrownianInterval`` (same arguments), on torchnde's
    :class:`~torchnde.BrownianInterval`: increments and space-time Lévy areas over any interval of
    ``[t0, t1]``, the same path whatever the order of the queries (torchsde needs
    ``halfway_tree=True`` for that), reproducible from ``entropy``, memory bounded by
    ``cache_size``.

    - ``size``, ``dtype``, ``device``: of a sample (or implied by ``W``/``H``).
    - ``entropy``: the seed (``None``: drawn from numpy's global generator, as torchsde does).
    - ``levy_area_approximation``: ``"none"``, or ``"space-time"`` for ``srk``; ``"davie"`` and
      ``"foster"`` are accepted and keep the space-time Lévy area (``return_A`` raises).
    - ``tol``: the leaf length of the tree (``0``: the default, ``(t1 - t0) * 2**-20``).
    - ``cache_size``: how many tree nodes to keep (``None``: unbounded; at least 4).
    - ``W``, ``H``: the increment and space-time Lévy area over ``[t0, t1]`` to condition on.
    - ``dt``, ``pool_size``, ``halfway_tree``: accepted and checked as torchsde checks them; the
      tree here is dyadic and order-independent whatever they are.

    ```python
    import torch
    import torchnde.compat.torchsde as torchsde
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(4, 2), entropy=0,
                                   levy_area_approximation="space-time")
    w, u = bm(0.25, 0.5, return_U=True)
    assert torch.allclose(bm(0.0, 0.5), bm(0.0, 0.25) + w)
    ```
    """

    def __init__(
        self,
        t0: Any = 0.0,
        t1: Any = 1.0,
        size: tuple[int, ...] | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        entropy: int | None = None,
        dt: Any = None,
        tol: float = 0.0,
        pool_size: int = 8,
        cache_size: int | None = 45,
        halfway_tree: bool = False,
        levy_area_approximation: str = "none",
        W: torch.Tensor | None = None,
        H: torch.Tensor | None = None,
    ):
        if not _is_scalar(t0):
            raise ValueError("Initial time t0 should be a float or 0-d torch.Tensor.")
        if not _is_scalar(t1):
            raise ValueError("Terminal time t1 should be a float or 0-d torch.Tensor.")
        if dt is not None and not _is_scalar(dt):
            raise ValueError("Expected average time step dt should be a float or 0-d torch.Tensor.")
        if t0 > t1:
            raise ValueError(f"Initial time {t0} should be less than terminal time {t1}.")
        if halfway_tree:
            if tol <= 0.0:
                raise ValueError("`tol` should be positive.")
            if dt is not None:
                raise ValueError("`dt` is not used and should be set to `None` if `halfway_tree` is True.")
        elif tol < 0.0:
            raise ValueError("`tol` should be non-negative.")
        size, dtype, device = _tensor_info(W, H, size, dtype, device)
        if levy_area_approximation not in _LEVY:
            raise ValueError(
                f"`levy_area_approximation` must be one of {_LEVY}, but got '{levy_area_approximation}'."
            )
        entropy = _entropy() if entropy is None else int(entropy)
        cache = 2**62 if cache_size is None else max(4, int(cache_size))
        super().__init__(float(t0), float(t1), size, dtype=dtype, device=device, seed=entropy,
                         levy_area=levy_area_approximation != "none", tol=float(tol) or None,
                         cache_size=cache)  # fmt: skip
        self._levy_area_approximation = levy_area_approximation
        self.entropy = entropy
        if W is not None or H is not None:  # condition the whole tree on the given root
            w, hh = self._root
            self._root = (w if W is None else W, hh if (H is None or hh is None) else H)


class BrownianTree(BrownianInterval):
    """torchsde's ``BrownianTree(t0, w0, t1=None, w1=None, entropy=None, tol=1e-6, ...)``: a
    Brownian motion started at ``w0`` (``bm(t)`` returns ``w0 + W(t)``), ending at ``w1`` if given,
    on ``[t0, t1]`` (``t1 = t0 + 1`` by default), independent of the order of the queries.
    ``pool_size``, ``cache_depth`` and ``safety`` are accepted and unused (as in torchsde).

    ```python
    import torch
    import torchnde.compat.torchsde as torchsde
    bm = torchsde.BrownianTree(t0=0.0, w0=torch.zeros(3, 1), t1=2.0, w1=torch.ones(3, 1), entropy=1)
    assert torch.allclose(bm(2.0), torch.ones(3, 1))
    ```
    """

    def __init__(
        self,
        t0: Any,
        w0: torch.Tensor,
        t1: Any = None,
        w1: torch.Tensor | None = None,
        entropy: int | None = None,
        tol: float = 1e-6,
        pool_size: int = 24,
        cache_depth: int = 9,
        safety: float | None = None,
    ):
        t1 = t0 + 1 if t1 is None else t1
        super().__init__(t0=t0, t1=t1, size=w0.shape, dtype=w0.dtype, device=w0.device, entropy=entropy,
                         tol=tol, pool_size=pool_size, halfway_tree=True,
                         W=None if w1 is None else w1 - w0)  # fmt: skip
        self._w0 = w0


class BrownianPath(_TorchsdeCalls, _Path):
    """torchsde's ``BrownianPath(t0, w0, window_size=8)``: a Brownian motion started at ``w0``
    (``bm(t)`` returns ``w0 + W(t)``), storing every point asked for (the cheap path for fixed
    steps), on torchnde's :class:`~torchnde.BrownianPath`. Its seed is drawn from numpy's global
    generator. Unlike torchsde's (whose path ends at ``t0 + 1``) it extends past ``t0 + 1``.
    ``window_size`` is accepted and unused (as in torchsde).

    ```python
    import torch
    import torchnde.compat.torchsde as torchsde
    bm = torchsde.BrownianPath(t0=0.0, w0=torch.zeros(2, 1))
    assert torch.allclose(bm(0.0, 0.5) + bm(0.5, 1.0), bm(0.0, 1.0))
    ```
    """

    def __init__(self, t0: Any, w0: torch.Tensor, window_size: int = 8):
        super().__init__(float(t0), w0.shape, dtype=w0.dtype, device=w0.device, seed=_entropy())
        self._w0 = w0
        self._levy_area_approximation = "none"


def brownian_interval_like(
    y: torch.Tensor, t0: Any = 0.0, t1: Any = 1.0, size: tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None, device: Any = None, **kwargs: Any,
) -> BrownianInterval:  # fmt: skip
    """A :class:`BrownianInterval` with the size, dtype and device of ``y`` (torchsde's helper)."""
    return BrownianInterval(t0=t0, t1=t1, size=y.shape if size is None else size,
                            dtype=y.dtype if dtype is None else dtype,
                            device=y.device if device is None else device, **kwargs)  # fmt: skip


class _Foreign(AbstractBrownian):
    """Any Brownian object with torchsde's interface (``bm(ta, tb, return_U=...)``, ``shape``,
    ``dtype``, ``device``, ``levy_area_approximation``), torchsde's own included, as a torchnde
    Brownian motion. The times are not range-checked here: the object checks them itself."""

    def __init__(self, bm: Any):
        self.bm = bm
        self.t0, self.t1 = -math.inf, math.inf
        self._init(tuple(bm.shape), bm.dtype, bm.device, _levy_name(bm) != "none")

    def _point(self, t: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError("a foreign Brownian motion is queried by interval only")

    def increment(self, s: Any, t: Any) -> torch.Tensor:
        s, t = float(s), float(t)
        return self.bm(s, t) if s <= t else -self.bm(t, s)

    def levy(self, s: Any, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = float(s), float(t)
        lo, hi = (s, t) if s <= t else (t, s)
        w, u = self.bm(lo, hi, return_U=True)
        hh = u / (hi - lo) - 0.5 * w if hi > lo else torch.zeros_like(w)
        return (w if s <= t else -w), hh


class _WithoutLast(AbstractBrownian):
    """A Brownian motion without its last channel: under ``logqp=True`` and diagonal noise
    torchsde's Brownian motion carries one channel for the KL term (whose diffusion is zero);
    torchnde's KL term adds its own zero channel."""

    def __init__(self, bm: AbstractBrownian):
        self.bm = bm
        self.t0, self.t1 = bm.t0, bm.t1
        self.any_order = bm.any_order
        self._init((*bm.shape[:-1], bm.shape[-1] - 1), bm.dtype, bm.device, bm.levy_area)

    def _point(self, t: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        w, a = self.bm._point(t)
        return w[..., :-1], None if a is None else a[..., :-1]

    def increment(self, s: Any, t: Any) -> torch.Tensor:
        return self.bm.increment(s, t)[..., :-1]

    def levy(self, s: Any, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        w, hh = self.bm.levy(s, t)
        return w[..., :-1], hh[..., :-1]


# ---------------------------------------------------------------------------------------------
# the SDE object as drift and diffusion


class _Renamed:
    """The SDE's methods under torchsde's standard names after ``names`` (torchsde's
    ``RenameMethodsSDE``): ``f``, ``g``, ``h``, ``g_prod``, ``f_and_g``, ``f_and_g_prod``, each
    ``None`` when the object lacks it."""

    def __init__(self, sde: Any, names: dict[str, str] | None):
        if names is not None:
            if not isinstance(names, dict):
                raise TypeError(f"names must be a dict, got {type(names).__name__}")
            unknown = sorted(set(names) - set(_NAMES))
            if unknown:
                raise ValueError(
                    f"unknown key(s) {unknown} in names; valid: {', '.join(_NAMES)}.{did_you_mean(unknown, _NAMES)}"
                )
        names = names or {}
        for key, attr in _ATTRS.items():
            setattr(self, attr, getattr(sde, names.get(key, attr), None))
        self.noise_type = sde.noise_type
        self.sde_type = sde.sde_type


def _check_contract(sde: Any, y0: Any, ts: Any, bm: Any, method: Any, names: Any, logqp: bool) -> tuple:
    """torchsde 0.2.6's ``check_contract``: the same checks, in the same order, with the same
    errors. Returns ``(renamed sde, ts, method, noise size)``."""
    if not hasattr(sde, "noise_type"):
        raise ValueError("sde does not have the attribute noise_type.")
    if sde.noise_type not in _NOISE_TYPES:
        raise ValueError(f"Expected noise type in {_NOISE_TYPES}, but found {sde.noise_type}.")
    if not hasattr(sde, "sde_type"):
        raise ValueError("sde does not have the attribute sde_type.")
    if sde.sde_type not in _SDE_TYPES:
        raise ValueError(f"Expected sde type in {_SDE_TYPES}, but found {sde.sde_type}.")
    sde = _Renamed(sde, names)
    if not torch.is_tensor(y0):
        raise ValueError("`y0` must be a torch.Tensor.")
    if y0.dim() != 2:
        raise ValueError("`y0` must be a 2-dimensional tensor of shape (batch, channels).")
    if logqp and (sde.f is None or sde.g is None or sde.h is None):
        raise AttributeError("If using logqp then drift, diffusion and prior drift must all be specified.")
    if method is None:
        general = sde.noise_type == "general"
        method = ("euler" if general else "srk") if sde.sde_type == "ito" else "midpoint"
    if method not in _METHODS:
        raise ValueError(f"Expected method in {_METHODS}, but found {method}.")
    if not torch.is_tensor(ts):
        if not isinstance(ts, (tuple, list)) or not all(isinstance(t, (float, int)) for t in ts):
            raise ValueError("Evaluation times `ts` must be a 1-D Tensor or list/tuple of floats.")
        ts = torch.tensor(ts, dtype=y0.dtype, device=y0.device)
    if not all(a < b for a, b in zip(ts[:-1].tolist(), ts[1:].tolist())):
        raise ValueError("Evaluation times `ts` must be strictly increasing.")
    return sde, ts, method, _sizes(sde, y0, ts, bm, logqp)


def _sizes(sde: _Renamed, y0: torch.Tensor, ts: torch.Tensor, bm: Any, logqp: bool) -> int:
    """torchsde's shape checks on one evaluation of each function at ``(ts[0], y0)``; returns
    the number of Brownian motions. With ``logqp`` and diagonal noise, torchsde's diffusion has
    one more (zero) entry for the KL channel, so its Brownian motion has one more channel too; the
    count returned is the SDE's own."""
    kl = 1 if logqp and sde.noise_type == "diagonal" else 0
    batch, state, noise = [y0.size(0)], [y0.size(1)], []
    if bm is not None:
        if len(bm.shape) != 2:
            raise ValueError("`bm` must be of shape (batch, noise_channels).")
        batch.append(bm.shape[0])
        noise.append(bm.shape[1])

    def check_2d(name: str, shape: tuple) -> None:
        if len(shape) != 2:
            raise ValueError(f"{name} must be of shape (batch, state_channels), but got {shape}.")
        batch.append(shape[0])
        state.append(shape[1])

    def check_2d_or_3d(name: str, shape: tuple) -> None:
        if sde.noise_type == "diagonal":
            check_2d(name, shape)
            noise.append(shape[1] + kl)
            return
        if len(shape) != 3:
            raise ValueError(
                f"{name} must be of shape (batch, state_channels, noise_channels), but got {shape}."
            )
        batch.append(shape[0])
        state.append(shape[1])
        noise.append(shape[2])

    def probe() -> torch.Tensor:
        if not noise:
            raise ValueError(
                "Cannot infer noise size (i.e. number of Brownian motion channels). Either pass `bm` "
                "explicitly, or specify one of the `g`, `f_and_g` functions.`"
            )
        return torch.ones(batch[0], noise[0], dtype=y0.dtype, device=y0.device)

    t0 = ts[0]
    with torch.no_grad():
        if sde.f is not None:
            check_2d("Drift", tuple(sde.f(t0, y0).size()))
        if sde.g is not None:
            check_2d_or_3d("Diffusion", tuple(sde.g(t0, y0).size()))
        if sde.f_and_g is not None:
            f, g = sde.f_and_g(t0, y0)
            check_2d("Drift", tuple(f.size()))
            check_2d_or_3d("Diffusion", tuple(g.size()))
        if sde.g_prod is not None:
            check_2d(
                "Diffusion-vector product", tuple(sde.g_prod(t0, y0, probe()[:, : noise[0] - kl]).size())
            )
        if sde.f_and_g_prod is not None:
            f, gv = sde.f_and_g_prod(t0, y0, probe()[:, : noise[0] - kl])
            check_2d("Drift", tuple(f.size()))
            check_2d("Diffusion-vector product", tuple(gv.size()))
    if sde.f is None and sde.f_and_g is None and sde.f_and_g_prod is None:
        raise ValueError(
            "sde must define at least one of `f`, `f_and_g`, or `f_and_g_prod`. (Or possibly more "
            "depending on the method chosen.)"
        )
    if sde.g is None and sde.f_and_g is None and sde.g_prod is None and sde.f_and_g_prod is None:
        raise ValueError(
            "sde must define at least one of `g`, `f_and_g`, `g_prod` or `f_and_g_prod`. (Or possibly "
            "more depending on the method chosen.)"
        )
    for sizes, what in ((batch, "Batch"), (state, "State"), (noise, "Noise")):
        if any(s != sizes[0] for s in sizes[1:]):
            raise ValueError(f"{what} sizes not consistent.")
    if sde.noise_type == "scalar" and noise[0] != 1:
        raise ValueError(
            f"Scalar noise must have only one channel; the diffusion has {noise[0]} noise channels."
        )
    return noise[0] - kl


class _Paired:
    """Drift and diffusion from one ``f_and_g``: the drift's call keeps its diffusion, which the
    diffusion's next call at the same state (the same tensor) and time returns instead of calling
    ``f_and_g`` again (every solver evaluates the drift first). Times are compared as host floats,
    so the reuse is on CPU states only."""

    def __init__(self, f_and_g: Callable):
        self.f_and_g = f_and_g
        self.kept: tuple | None = None

    @staticmethod
    def _time(t: Any) -> float | None:
        if isinstance(t, torch.Tensor):
            return float(t) if t.device.type == "cpu" else None
        return float(t)

    def drift(self, t: Any, y: torch.Tensor) -> torch.Tensor:
        f, g = self.f_and_g(t, y)
        key = self._time(t)
        self.kept = None if key is None else (y, key, g)
        return f

    def diffusion(self, t: Any, y: torch.Tensor) -> torch.Tensor:
        kept = self.kept
        if kept is not None and kept[0] is y and kept[1] == self._time(t):
            self.kept = None
            return kept[2]
        return self.f_and_g(t, y)[1]


def _from_products(g_prod: Callable, noise: str, m: int) -> Callable:
    """The diffusion matrix from a diffusion-vector product ``g_prod(t, y, v)`` (linear in
    ``v``): ``g_prod`` at ``v = 1`` for diagonal and scalar noise, at the ``m`` unit vectors
    otherwise (``m`` products per evaluation)."""

    def diffusion(t: Any, y: torch.Tensor) -> torch.Tensor:
        if noise in ("diagonal", "scalar"):
            cols = y.shape[-1] if noise == "diagonal" else 1
            g = g_prod(t, y, y.new_ones(y.shape[0], cols))
            return g if noise == "diagonal" else g.unsqueeze(-1)
        eye = torch.eye(m, dtype=y.dtype, device=y.device)
        return torch.stack([g_prod(t, y, eye[k].expand(y.shape[0], m)) for k in range(m)], dim=-1)

    return diffusion


def _fields(sde: _Renamed, m: int) -> tuple[Callable, Callable]:
    """``(drift, diffusion)`` for the :class:`~torchnde.SDETerm`: the SDE's own ``f`` and ``g``
    when it has them (no wrapper), else from ``f_and_g``, ``g_prod`` or ``f_and_g_prod``."""
    paired = _Paired(sde.f_and_g) if sde.f_and_g is not None else None
    if sde.f is not None:
        drift = sde.f
    elif paired is not None:
        drift = paired.drift
    else:
        fgp = sde.f_and_g_prod

        def drift(t: Any, y: torch.Tensor) -> torch.Tensor:
            return fgp(t, y, y.new_zeros(y.shape[0], m))[0]

    if sde.g is not None:
        diffusion = sde.g
    elif paired is not None:
        diffusion = paired.diffusion
    elif sde.g_prod is not None:
        diffusion = _from_products(sde.g_prod, sde.noise_type, m)
    else:
        fgp = sde.f_and_g_prod
        diffusion = _from_products(lambda t, y, v: fgp(t, y, v)[1], sde.noise_type, m)
    return drift, diffusion


# ---------------------------------------------------------------------------------------------
# solvers


class _MilsteinGradFree(Milstein):
    r"""torchsde's derivative-free Milstein (``options={"grad_free": True}``). Its Itô form is
    torchnde's ``Milstein(derivative_free=True)``; its Stratonovich form takes the support value
    :math:`\bar y = y_0 + g\sqrt h` and the correction :math:`(g(\bar y) - g)\,\Delta W^2 /
    (2\sqrt h)`, where torchnde's uses :math:`\bar y = y_0 + f h + g\,\Delta W` and
    :math:`(g(\bar y) - g)\,\Delta W / 2` (no bias from the mean of :math:`\Delta W^2`)."""

    def __init__(self) -> None:
        super().__init__(derivative_free=True)

    def step(self, func: Any, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = False,
             state: Any = None) -> StepResult:  # fmt: skip
        sde = func.sde
        if sde.calculus == "ito" or sde.noise == "additive":
            return super().step(func, t0, y0, f0, dt, need_error, state)
        dw = sde.increment(t0, dt)
        g = sde.diffusion(t0, y0)
        scalar = sde.noise == "scalar"
        col = g.squeeze(-1) if scalar else g
        root = dt**0.5
        diff = sde.diffusion(t0, torch.add(y0, col, alpha=root)) - g
        y1 = (
            torch.add(y0, f0, alpha=dt)
            + col * dw
            + (diff.squeeze(-1) if scalar else diff) * (dw * dw / (2 * root))
        )
        return StepResult(y1, (), (), None)


class _ReversibleHeun(StochasticReversibleHeun):
    """Reversible Heun that starts from torchsde's ``extra_solver_state`` ``(f, g, z)`` when given
    and keeps its last state, for ``extra=True``. It steps like torchsde's: on the ``dt`` grid from
    ``ts[0]`` with outputs interpolated between steps (not the reversible loop's landing on
    output times)."""

    reversible: ClassVar[bool] = False

    def __init__(self, initial: tuple | None):
        self.initial = None if initial is None else ReversibleHeunState(initial[2], initial[0], initial[1])
        self.last: ReversibleHeunState | None = None

    def step(self, func: Any, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = False,
             state: Any = None) -> StepResult:  # fmt: skip
        result = super().step(func, t0, y0, f0, dt, need_error, self.initial if state is None else state)
        self.last = result.state
        return result


def _solver(method: str, sde: _Renamed, options: dict, extra_solver_state: Any) -> Any:
    """The torchnde solver for torchsde's ``method``, after torchsde's checks of the method
    against the SDE's type and noise type."""
    if method == "adjoint_reversible_heun":
        raise ValueError("adjoint_reversible_heun can only be used for adjoint_method.")
    calculus, noises = _SUPPORT[method]
    if calculus is not None and sde.sde_type != calculus:
        raise ValueError(f"SDE is of type {sde.sde_type} but solver is for type {calculus}")
    if sde.noise_type not in noises:
        raise ValueError(f"SDE has noise type {sde.noise_type} but solver only supports noise types {noises}")
    if method == "log_ode":
        raise NotImplementedError(
            "method='log_ode' is not supported by torchnde.compat.torchsde: it needs Davie's or Foster's "
            "approximation of the Lévy area, which torchnde's Brownian motions do not provide; for a "
            "Stratonovich SDE use method='midpoint', 'heun' or 'reversible_heun'"
        )
    valid = _OPTIONS.get(method, ())
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for method {method!r}; valid: {', '.join(valid) or 'none'}."
            f"{did_you_mean(unknown, valid)}"
        )
    if method == "milstein":
        return _MilsteinGradFree() if options.get("grad_free", False) else Milstein()
    if method == "reversible_heun":
        return _ReversibleHeun(extra_solver_state)
    return method


def _levy_name(bm: Any) -> str:
    """torchsde's name of the Lévy area a Brownian object provides (a plain torchnde one too)."""
    if isinstance(bm, AbstractBrownian) and not hasattr(bm, "levy_area_approximation"):
        return "space-time" if bm.levy_area else "none"
    return bm.levy_area_approximation


def _brownian(
    bm: Any, method: str, ts: torch.Tensor, y0: torch.Tensor, m: int, noise: str, logqp: bool,
    adaptive: bool = False,
) -> AbstractBrownian:  # fmt: skip
    """The Brownian motion to solve with: the given one (wrapped when it is not torchnde's), or
    a fresh path over ``[ts[0], ts[-1]]`` with Lévy area for ``srk``, seeded from numpy's global
    generator as torchsde's default is. torchsde makes a ``BrownianInterval``, and so does this for
    adaptive steps; for fixed steps it makes the cheaper stored path (:class:`~torchnde.BrownianPath`: one Gaussian draw per step, where the
    interval's tree descends one level per draw to the leaf of a time off its dyadic grid), which the caller
    never sees."""
    if bm is None and adaptive:  # steps of any size, rejected ones revisited: torchsde's interval
        return _Interval(float(ts[0]), float(ts[-1]), (y0.size(0), m), dtype=y0.dtype, device=y0.device,
                         seed=_entropy(), levy_area=method == "srk")  # fmt: skip
    if bm is None:
        levy = method == "srk"
        return _Path(float(ts[0]), (y0.size(0), m), dtype=y0.dtype, device=y0.device, seed=_entropy(),
                     levy_area=levy, t1=float(ts[-1]))  # fmt: skip
    if method == "srk" and _levy_name(bm) not in ("space-time", "davie", "foster"):
        raise ValueError(
            "SDE solver requires one of ('space-time', 'davie', 'foster') set as the "
            "`levy_area_approximation` on the Brownian motion."
        )
    if noise == "scalar" and math.prod(bm.shape[1:]) != 1:
        raise ValueError("The Brownian motion for scalar SDEs must of dimension 1.")
    bm = bm if isinstance(bm, AbstractBrownian) else _Foreign(bm)
    return _WithoutLast(bm) if logqp and noise == "diagonal" else bm


def _no_grad(**values: Any) -> None:
    for name, value in values.items():
        if torch.is_tensor(value) and value.requires_grad:
            raise ValueError(f"Argument {name} must not require gradient.")


def _unknown(kwargs: dict, fn: str, valid: tuple[str, ...]) -> None:
    if kwargs:
        raise TypeError(
            f"{fn}() got unexpected keyword argument(s) {sorted(kwargs)} (torchsde warns and ignores "
            f"them; torchnde refuses them).{did_you_mean(sorted(kwargs), valid)}"
        )


_SDEINT_ARGS = ("bm", "method", "dt", "adaptive", "rtol", "atol", "dt_min", "options", "names", "logqp",
                "extra", "extra_solver_state")  # fmt: skip


def _prepare(sde: Any, y0: Any, ts: Any, bm: Any, method: Any, dt: Any, adaptive: bool, options: Any,
             names: Any, logqp: bool, extra_solver_state: Any, no_grad: dict[str, Any]) -> tuple:  # fmt: skip
    """Everything ``sdeint`` and ``sdeint_adjoint`` check before solving, in torchsde's order
    (``logqp=True`` is checked, not refused, here); returns ``(term, ts, solver, sde, method)``."""
    sde, ts, method, m = _check_contract(sde, y0, ts, bm, method, names, logqp)
    _no_grad(ts=ts, dt=dt, **no_grad)
    options = {} if options is None else dict(options)
    solver = _solver(method, sde, options, extra_solver_state)
    brownian = _brownian(bm, method, ts, y0, m, sde.noise_type, logqp, adaptive)
    for name, value in (("dt", dt), *((k, no_grad[k]) for k in ("rtol", "atol", "dt_min") if adaptive)):
        if not (_is_scalar(value) and float(value) > 0):
            raise ValueError(f"{name} must be a positive float, got {value!r}")
    drift, diffusion = _fields(sde, m)
    term = SDETerm(
        drift, diffusion, sde.noise_type, sde.sde_type, brownian, prior_drift=sde.h if logqp else None
    )
    if not adaptive:
        return term, ts, solver, sde, method, ConstantStep(float(dt))
    inner = resolve_solver(solver, term) if isinstance(solver, str) else solver
    doubling = TorchsdeDoubling(inner, float(no_grad["rtol"]), float(no_grad["atol"]))
    return term, ts, doubling, sde, method, TorchsdeSteps(float(dt), float(no_grad["dt_min"]))


def _integrate(term: SDETerm, y0: torch.Tensor, ts: torch.Tensor, solver: Any, steps: Any, extra: bool,
               logqp: bool, gradient: Any = "backprop") -> Any:  # fmt: skip
    """Solve with the step-size controller ``steps``, and return what torchsde returns: ``ys``;
    with ``logqp`` ``(ys, log_ratio)``, the KL path term's increments over each output interval
    (``[len(ts) - 1, batch]``); with ``extra`` the solver's final state last."""
    span = float(ts[-1]) - float(ts[0])
    smallest = steps.dtmin if isinstance(steps, TorchsdeSteps) else steps.dt
    most = math.ceil(span / smallest * (1 + 1e-12)) + 2 * len(ts)  # the reversible loop: + one per output
    if isinstance(steps, TorchsdeSteps):  # torchsde has no limit: every step at dt_min, and rejections
        most = 3 * most
    sol = solve(term, y0, ts, solver=solver, controller=steps, max_steps=max(most, 10), gradient=gradient)
    out: tuple = (sol.ys, sol.kl.diff(dim=0)) if logqp else (sol.ys,)
    if extra:
        inner = solver.solver if isinstance(solver, StepDoubling) else solver
        last = inner.last if isinstance(inner, _ReversibleHeun) else None
        out = (*out, () if last is None else (last[1], last[2], last[0]))
    return out if len(out) > 1 else out[0]


def sdeint(
    sde: Any,
    y0: torch.Tensor,
    ts: Any,
    bm: Any = None,
    method: str | None = None,
    dt: Any = 1e-3,
    adaptive: bool = False,
    rtol: Any = 1e-5,
    atol: Any = 1e-4,
    dt_min: Any = 1e-5,
    options: dict[str, Any] | None = None,
    names: dict[str, str] | None = None,
    logqp: bool = False,
    extra: bool = False,
    extra_solver_state: tuple[torch.Tensor, ...] | None = None,
    **unused_kwargs: Any,
) -> Any:
    r"""Solve the SDE ``sde`` from ``y0`` at the times ``ts``: torchsde 0.2.6's ``sdeint``.

    - ``sde``: drift ``f(t, y)`` (``[batch, d]``) and diffusion ``g(t, y)`` (``[batch, d]`` for
      diagonal noise, ``[batch, d, m]`` otherwise), or ``f_and_g``, ``g_prod(t, y, v)``,
      ``f_and_g_prod``; attributes ``noise_type`` (``"diagonal"``, ``"additive"``, ``"scalar"``,
      ``"general"``) and ``sde_type`` (``"ito"``, ``"stratonovich"``).
    - ``y0``: ``[batch, d]``; ``ts``: strictly increasing times (a tensor, list or tuple).
    - ``bm``: the Brownian motion (this module's, torchsde's, or any object with its interface),
      of shape ``[batch, m]``; default a fresh :class:`BrownianInterval` over ``[ts[0], ts[-1]]``
      seeded from numpy's global generator.
    - ``method``: ``euler``, ``milstein`` (option ``grad_free``), ``srk`` (Itô);
      ``midpoint``, ``heun``, ``euler_heun``, ``reversible_heun`` (Stratonovich), and
      ``milstein`` for Stratonovich too. Default as torchsde's: ``srk`` for Itô (``euler`` for
      general noise), ``midpoint`` for Stratonovich.
    - ``dt``: the step (with ``adaptive=True``, the first step); ``adaptive``, ``rtol``,
      ``atol``, ``dt_min``: adaptive steps by step doubling as torchsde takes them (module
      docstring): the error of one step against two half steps on the same Brownian path,
      accepted when its RMS over ``atol + rtol * |y|`` is at most 1; steps above tolerance are
      accepted at ``dt_min`` with one ``RuntimeWarning`` giving their count.
    - ``names``: the SDE's method names for ``drift``, ``diffusion``, ``prior_drift``,
      ``diffusion_prod``, ``drift_and_diffusion``, ``drift_and_diffusion_prod``.
    - ``logqp``: also return the log-ratio increments :math:`\int_{t_{i-1}}^{t_i} \tfrac12
      \lVert u\rVert^2\,dt` with :math:`u = (f - h)/g` (:math:`g^+(f - h)` for other noise types),
      of shape ``[len(ts) - 1, batch]``: the KL path term of :class:`~torchnde.SDETerm`'s
      ``prior_drift=h``. As in torchsde, under diagonal noise an explicit ``bm`` has one more
      channel (the KL term's; its diffusion is zero, so its increments are unused).
    - ``extra``: also return the solver's final extra state (``reversible_heun``: ``(f, g, z)``;
      the other methods: ``()``); ``extra_solver_state`` starts ``reversible_heun`` from it.

    Returns ``ys`` of shape ``[len(ts), batch, d]`` (then the log-ratio with ``logqp=True``, then
    the extra state with ``extra=True``).
    Gradients flow by backpropagation through the solver.

    ```python
    import torch
    import torchnde.compat.torchsde as torchsde  # instead of: import torchsde

    class GBM(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return 0.5 * y

        def g(self, t, y):
            return 0.3 * y

    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(64, 1), dtype=torch.float64, entropy=0,
                                   levy_area_approximation="space-time")
    ys = torchsde.sdeint(GBM(), torch.ones(64, 1, dtype=torch.float64), [0.0, 0.5, 1.0], bm=bm,
                         method="srk", dt=2**-6)
    exact = torch.exp((0.5 - 0.3**2 / 2) + 0.3 * bm(0.0, 1.0))
    assert (ys[-1] - exact).abs().max() < 1e-3
    ```
    """
    _unknown(unused_kwargs, "sdeint", _SDEINT_ARGS)
    term, ts, solver, _, _, steps = _prepare(sde, y0, ts, bm, method, dt, adaptive, options, names, logqp,
                                             extra_solver_state, dict(rtol=rtol, atol=atol, dt_min=dt_min))  # fmt: skip
    return _integrate(term, y0, ts, solver, steps, extra, logqp)


_ADJOINT_ARGS = (*_SDEINT_ARGS, "adjoint_method", "adjoint_adaptive", "adjoint_rtol", "adjoint_atol",
                 "adjoint_options", "adjoint_params")  # fmt: skip


def _default_adjoint_method(sde: _Renamed, method: str) -> str:
    """torchsde's default ``adjoint_method`` for the forward ``method``."""
    if method == "reversible_heun":
        return "adjoint_reversible_heun"
    if sde.sde_type == "stratonovich":
        return "midpoint"
    return "milstein" if sde.noise_type == "diagonal" else "euler"


def sdeint_adjoint(
    sde: torch.nn.Module,
    y0: torch.Tensor,
    ts: Any,
    bm: Any = None,
    method: str | None = None,
    adjoint_method: str | None = None,
    dt: Any = 1e-3,
    adaptive: bool = False,
    adjoint_adaptive: bool = False,
    rtol: Any = 1e-5,
    adjoint_rtol: Any = 1e-5,
    atol: Any = 1e-4,
    adjoint_atol: Any = 1e-4,
    dt_min: Any = 1e-5,
    options: dict[str, Any] | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Any = None,
    names: dict[str, str] | None = None,
    logqp: bool = False,
    extra: bool = False,
    extra_solver_state: tuple[torch.Tensor, ...] | None = None,
    **unused_kwargs: Any,
) -> Any:
    """torchsde 0.2.6's ``sdeint_adjoint``: ``sdeint`` whose backward pass is the stochastic
    adjoint (``adjoint_method`` defaults as torchsde's: ``adjoint_reversible_heun`` after
    ``reversible_heun``, ``midpoint`` for Stratonovich, ``milstein`` for diagonal Itô noise,
    ``euler`` otherwise).

    The forward pass is ``sdeint``'s without a graph; the backward pass solves the adjoint SDE
    backwards on the same Brownian path (torchnde's ``gradient=Adjoint(solver=..., params=...,
    dt=dt)``): from each output time to the previous one in steps of ``dt``, restarting the state
    from the forward's output and adding that output's gradient, as torchsde does. Gradients flow
    to ``y0`` and to ``adjoint_params`` (default: the module's parameters), those requiring grad.

    - ``adjoint_method="midpoint"`` or ``"heun"`` (Stratonovich SDEs): the same discretisation of
      the same backward SDE as torchsde's, so the same gradients to rounding when the output times
      are on the ``dt`` grid from ``ts[0]`` (off it, torchsde's backward steps run ``dt`` back from
      each output time and torchnde's ``dt`` forward from the previous one).
    - ``euler_heun``, ``reversible_heun`` (backward Heun) and ``milstein`` (backward midpoint):
      torchnde's nearest method; the Itô methods ``euler``, ``milstein``, ``srk`` (for Itô SDEs):
      the backward SDE in Stratonovich form by the midpoint method, where torchsde solves its Itô
      form by the Itô method. Those differ from torchsde's gradients by the discretisation error
      (both approach backprop's as ``dt`` falls). Itô general noise is refused (use Stratonovich).
    - ``adjoint_reversible_heun`` (after ``method="reversible_heun"``): torchnde's
      :class:`~torchnde.Reversible`, the exact gradients of the discretisation at O(1) memory.
      The steps of ``dt`` run from each output time and land on the next (torchsde steps on one
      grid from ``ts[0]`` and interpolates; the two agree when the output times are on that grid,
      where torchsde's reverse is exact too, and otherwise torchsde warns that its gradients are
      not those of its forward pass; torchnde's are). ``extra_solver_state`` is refused here.
    - ``adaptive=True`` takes the forward steps as ``sdeint`` does; the backward steps take
      ``dt``. ``adjoint_adaptive=True`` raises ``NotImplementedError``; ``adjoint_options`` are checked as
      the adjoint method's options; ``adjoint_rtol``, ``adjoint_atol`` are unused (fixed steps).
    - ``logqp=True`` returns ``(ys, log_ratio)`` as ``sdeint`` does, its gradients by the adjoint.

    ```python
    import torch
    import torchnde.compat.torchsde as torchsde

    class SDE(torch.nn.Module):
        noise_type, sde_type = "diagonal", "stratonovich"

        def __init__(self):
            super().__init__()
            self.theta = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

        def f(self, t, y):
            return -self.theta * y

        def g(self, t, y):
            return 0.2 * torch.ones_like(y)

    sde = SDE()
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(8, 1), dtype=torch.float64, entropy=0)
    y0 = torch.ones(8, 1, dtype=torch.float64)
    ys = torchsde.sdeint_adjoint(sde, y0, [0.0, 1.0], bm=bm, dt=2**-6)
    ys[-1].sum().backward()
    # y(1) = exp(-theta) y0 + noise: d sum y(1) / d theta = -8 exp(-theta) + a noise term
    assert abs(sde.theta.grad.item() - (-8 * torch.exp(torch.tensor(-0.5)).item())) < 0.5
    ```
    """
    _unknown(unused_kwargs, "sdeint_adjoint", _ADJOINT_ARGS)
    if adjoint_params is None and not isinstance(sde, torch.nn.Module):
        raise ValueError(
            "`sde` must be an instance of nn.Module to specify the adjoint parameters; alternatively they "
            "can be specified explicitly via the `adjoint_params` argument. If there are no parameters "
            "then it is allowable to set `adjoint_params=()`."
        )
    no_grad = dict(rtol=rtol, adjoint_rtol=adjoint_rtol, atol=atol, adjoint_atol=adjoint_atol, dt_min=dt_min)
    term, ts, solver, renamed, method, steps = _prepare(sde, y0, ts, bm, method, dt, adaptive, options, names,
                                                logqp, extra_solver_state, no_grad)  # fmt: skip
    adjoint_method = _default_adjoint_method(renamed, method) if adjoint_method is None else adjoint_method
    if adjoint_method not in _METHODS:
        raise ValueError(f"Expected method in {_METHODS}, but found {adjoint_method}.")
    if method == "reversible_heun" and adjoint_method != "adjoint_reversible_heun":
        warnings.warn(
            "method='reversible_heun', but adjoint_method!='adjoint_reversible_heun'.", stacklevel=2
        )
    if adjoint_adaptive:
        raise NotImplementedError(
            "adjoint_adaptive=True is not supported by torchnde.compat.torchsde yet: torchnde's stochastic "
            "solvers have no error estimate"
        )
    adjoint_options = {} if adjoint_options is None else dict(adjoint_options)
    backward = _adjoint_solver(adjoint_method, method, renamed, adjoint_options)
    params = tuple(sde.parameters()) if adjoint_params is None else tuple(adjoint_params)
    params = tuple(p for p in params if p.requires_grad)
    if backward is None:  # the reversible loop and its exact algebraic reverse
        if extra_solver_state is not None:
            raise NotImplementedError(
                "extra_solver_state with adjoint_method='adjoint_reversible_heun' is not supported by "
                "torchnde.compat.torchsde: the exact reverse starts from the forward's own initial state; "
                "drop extra_solver_state, or use sdeint"
            )
        if adaptive:
            raise NotImplementedError(
                "adaptive=True with adjoint_method='adjoint_reversible_heun' is not supported by "
                "torchnde.compat.torchsde: the exact reverse steps on a fixed grid; pass adaptive=False, or "
                "another adjoint_method (its backward steps take dt)"
            )
        solver, gradient = _ReversibleLoop(), Reversible(params=params)
    else:
        gradient = Adjoint(solver=backward, params=params, dt=float(dt))
    return _integrate(term, y0, ts, solver, steps, extra, logqp, gradient)


class _ReversibleLoop(_ReversibleHeun):
    """Reversible Heun on the reversible loop (steps of ``dt`` from each output time, landing on
    it), for ``adjoint_method="adjoint_reversible_heun"``: exact gradients of the discretisation
    by :class:`~torchnde.Reversible`."""

    reversible: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__(None)


def _adjoint_solver(adjoint_method: str, method: str, sde: _Renamed, options: dict) -> str | None:
    """torchnde's backward Stratonovich method for torchsde's ``adjoint_method`` (``None``:
    the exact reverse of reversible Heun), after torchsde's checks of the method against the SDE
    (torchsde's Itô adjoint is checked against the Itô SDE, its Stratonovich one against the
    Stratonovich SDE) and of its options. ``midpoint`` and ``heun`` are the same discretisation as
    torchsde's of the same backward SDE; the others become the nearest one torchnde has:
    ``heun`` for ``euler_heun`` and ``reversible_heun``, ``midpoint`` for the Itô methods (the
    backward SDE in Stratonovich form) and ``milstein``."""
    if adjoint_method == "adjoint_reversible_heun":
        if method != "reversible_heun":
            raise ValueError(
                f"adjoint_method='adjoint_reversible_heun' reverses method='reversible_heun' exactly; got "
                f"method={method!r}: pass method='reversible_heun', or another adjoint_method"
            )
        _solver("reversible_heun", sde, options, None)  # the checks: Stratonovich, no options
        return None
    _solver(adjoint_method, sde, options, None)
    return "heun" if adjoint_method in ("heun", "euler_heun", "reversible_heun") else "midpoint"
