r"""Drop-in replacements for ``torchcde`` 0.2.5: the coefficient functions
``linear_interpolation_coeffs``, ``natural_cubic_coeffs`` (and the deprecated
``natural_cubic_spline_coeffs``), ``hermite_cubic_coefficients_with_backward_differences``, the
paths ``LinearInterpolation`` and ``CubicSpline`` (and the deprecated ``NaturalCubicSpline``),
their abstract base ``InterpolationBase`` (subclassed for a path of one's own), ``TupleControl``
(one control per part of a tuple state), ``cdeint``, and ``logsig_windows`` (and the deprecated
``logsignature_windows``).

Change ``import torchcde`` to ``import torchnde.compat.torchcde as torchcde`` and nothing else:
the same arguments, defaults and coefficient tensors. The coefficients are torchcde's layouts,
so coefficients made by torchcde work with the classes here and the other way round:

- linear: the (filled) values ``[..., length, channels]``; with ``rectilinear=i`` torchcde's
  interleaved values ``[..., 2 length - 1, channels]`` (time channel ``i`` moving first), used
  with the default times ``0, 1, ..., 2 length - 2``;
- cubic (natural or Hermite): ``[..., length - 1, 4 channels]``, the concatenation of
  :math:`a, b, 2c, 3d` of each piece :math:`a + b s + c s^2 + d s^3`, :math:`s = t - t_i`.

Underneath, the paths are torchnde's (:class:`~torchnde.LinearPath`, the piecewise cubic of
:class:`~torchnde.CubicSplinePath`/:class:`~torchnde.HermitePath`; NaN handling as torchcde's:
per channel, linear in time for the linear and Hermite coefficients, the spline through each
channel's own observations for the natural cubic) and ``cdeint`` is ``torchnde``'s
:class:`~torchnde.CDETerm` product solved by :mod:`torchnde.compat.torchdiffeq`'s ``odeint``
/ ``odeint_adjoint`` (so ``method``, ``options``, ``rtol``/``atol`` and the ``adjoint_*``
arguments are torchdiffeq 0.2.5's, stepped as 0.2.5 steps them, on ``torchnde.solve``).

What differs, on purpose:

- with an adaptive method, ``cdeint`` lands on the knots where the path is only piecewise
  smooth (``jump_t`` for the linear path, ``step_t`` for the Hermite cubic) unless ``options``
  names ``jump_t``/``step_t`` itself (every control's, for a :class:`TupleControl`);
  torchcde asks the user to pass ``jump_t=X.grid_points``. The natural cubic spline needs no
  stops, and its solves take 0.2.5's steps to round-off where the step sequence is well
  conditioned. Across its knots it is not: the spline's third derivative jumps there, and at
  a loose tolerance the accept/reject sequence amplifies round-off (about tenfold every five
  steps on ``benchmarks/cde.py``'s classifier, float64 included), so the two solves end with
  different step counts (dopri5 at the default tolerances: 1,215 evaluations with the drop-in,
  1,245 with torchcde, which itself takes 1,305 with ``z0`` moved by one ulp) and agree to the
  tolerance. With ``options=dict(step_t=X.grid_points)`` (landing on the knots) they take the
  same steps: in float64 to round-off; in float32 0.2.5 adds times in the state's dtype, the
  drop-in in float64, so the step sizes differ by round-off.
- the linear path's derivative at a knot is the slope of the piece *starting* there (torchcde
  takes the piece ending there); between knots the two agree.
- ``backend="torchsde"`` is not supported (torchcde reduces the CDE to an ODE there as well; use
  the default ``backend="torchdiffeq"``).
- :class:`TupleControl` also accepts controls whose grids differ in length (torchcde fails to
  compare them); its ``grid_points`` then raises, as torchcde's does for differing grids.
- ``logsig_windows`` needs no ``signatory``: torchnde's log-signatures of depth 1 to 3
  (:func:`torchnde.logsignature_windows`, signatory's default Lyndon-words layout).
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..interpolation import (
    HermitePath,
    _check_times,
    _check_values,
    _fill_linear,
    _natural_cubic,
    _PiecewisePolynomial,
    _rectilinear,
)
from ..log_ode import logsignature_windows as _logsignature_windows
from ..terms import CDETerm
from .torchdiffeq import _ADAPTIVE, _restarts_as_025, odeint, odeint_adjoint

__all__ = [
    "CubicSpline",
    "InterpolationBase",
    "LinearInterpolation",
    "NaturalCubicSpline",
    "TupleControl",
    "cdeint",
    "hermite_cubic_coefficients_with_backward_differences",
    "linear_interpolation_coeffs",
    "logsig_windows",
    "logsignature_windows",
    "natural_cubic_coeffs",
    "natural_cubic_spline_coeffs",
]


# ---------------------------------------------------------------------------------------------
# coefficients


def linear_interpolation_coeffs(
    x: torch.Tensor, t: torch.Tensor | None = None, rectilinear: int | None = None
) -> torch.Tensor:
    """The coefficients of the linear interpolation of ``x`` ``[..., length, channels]`` (NaN
    where missing) at the times ``t`` (default ``0, ..., length - 1``): the values, each
    channel's NaNs filled linearly in time (ends: the first/last observation; a channel never
    observed: zero). With ``rectilinear=i`` (the index of the time channel, which must be in
    ``x``), torchcde's rectilinear values: forward-filled, interleaved so that time moves first,
    ``[..., 2 length - 1, channels]``, used with the default times (``t`` then has that length).

    ```python
    import math, torch
    import torchnde.compat.torchcde as torchcde
    x = torch.tensor([[0.0], [math.nan], [2.0]])
    torchcde.linear_interpolation_coeffs(x)[:, 0]  # tensor([0., 1., 2.])
    ```
    """
    x = _check_values(x)
    if rectilinear is not None:
        if bool(torch.isnan(x[..., 0, :]).any()):
            warnings.warn(
                "The data `x` begins with missing values in some channels: the path backward-fills the "
                "first observed value there, which is not causal. Fill the start of each channel (e.g. "
                "with the channel's mean) if you need causality.",
                stacklevel=2,
            )
        if (
            isinstance(rectilinear, bool)
            or not isinstance(rectilinear, int)
            or not 0 <= rectilinear < x.shape[-1]
        ):
            raise ValueError(
                f"rectilinear must be the index of the time channel in [0, {x.shape[-1]}), got {rectilinear!r}"
            )
        if bool(torch.isnan(x[..., rectilinear]).any()):
            raise ValueError("the time channel has NaN: forward-fill the final time over the padding")
        index = torch.arange(x.shape[-2], dtype=x.dtype, device=x.device)
        x, _ = _rectilinear(x, index, rectilinear)
    t = _check_times(x, t)
    return _fill_linear(x, t) if bool(torch.isnan(x).any()) else x


def _torchcde_layout(coeffs: torch.Tensor) -> torch.Tensor:
    """torchnde's pieces ``[..., pieces, 4, C]`` (powers of s) as torchcde's ``[..., pieces, 4C]``."""
    a, b, c, d = coeffs.unbind(-2)
    return torch.cat([a, b, 2 * c, 3 * d], dim=-1)


def _torchnde_layout(coeffs: torch.Tensor) -> torch.Tensor:
    channels = coeffs.shape[-1] // 4
    if channels * 4 != coeffs.shape[-1] or coeffs.ndim < 2:
        raise ValueError(
            f"cubic coefficients must be [..., length - 1, 4 * channels] (from natural_cubic_coeffs or "
            f"hermite_cubic_coefficients_with_backward_differences), got shape {tuple(coeffs.shape)}"
        )
    a, b, two_c, three_d = coeffs.split(channels, dim=-1)
    return torch.stack([a, b, two_c / 2, three_d / 3], dim=-2)


def natural_cubic_coeffs(x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """The coefficients ``[..., length - 1, 4 channels]`` of the natural cubic spline through
    each channel's observations of ``x`` ``[..., length, channels]`` (NaN where missing; leading
    and trailing NaNs take the first and last observation), for :class:`CubicSpline`.

    ```python
    import torch
    import torchnde.compat.torchcde as torchcde
    coeffs = torchcde.natural_cubic_coeffs(torch.randn(2, 7, 3))
    coeffs.shape  # torch.Size([2, 6, 12])
    ```
    """
    x = _check_values(x)
    return _torchcde_layout(_natural_cubic(x, _check_times(x, t)))


def natural_cubic_spline_coeffs(x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """torchcde's deprecated :func:`natural_cubic_coeffs`: only the first and last time take
    the first and last observation of a channel that starts or ends missing (the times between
    stay missing), as torchcde 0.2.5 keeps it for backward compatibility."""
    x = _check_values(x)
    t = _check_times(x, t)
    if bool(torch.isnan(x).any()):
        ends = _fill_linear(x, t)  # leading/trailing NaNs hold the first/last observation
        index = torch.arange(x.shape[-2], device=x.device).unsqueeze(-1)
        end = (index == 0) | (index == x.shape[-2] - 1)
        x = torch.where(end & torch.isnan(x), ends, x)
    return _torchcde_layout(_natural_cubic(x, t))


def hermite_cubic_coefficients_with_backward_differences(
    x: torch.Tensor, t: torch.Tensor | None = None
) -> torch.Tensor:
    """The coefficients ``[..., length - 1, 4 channels]`` of the cubic Hermite interpolation
    with backward differences (causal at the knots, :math:`C^1`; :class:`~torchnde.HermitePath`)
    of ``x`` (NaN filled as :func:`linear_interpolation_coeffs`), for :class:`CubicSpline`.

    ```python
    import torch
    import torchnde.compat.torchcde as torchcde
    coeffs = torchcde.hermite_cubic_coefficients_with_backward_differences(torch.randn(5, 3))
    torchcde.CubicSpline(coeffs).derivative(torch.tensor(1.5)).shape  # torch.Size([3])
    ```
    """
    values = linear_interpolation_coeffs(x, t)
    return _torchcde_layout(HermitePath(values, t).coeffs)


# ---------------------------------------------------------------------------------------------
# paths


class _Pieces(_PiecewisePolynomial):
    """A piecewise polynomial from given pieces; ``smoothness`` as the data says."""

    def __init__(self, times: torch.Tensor, coeffs: torch.Tensor, smoothness: int):
        super().__init__(times, coeffs)
        self.smoothness = smoothness


class InterpolationBase(torch.nn.Module, metaclass=abc.ABCMeta):
    r"""The interface of a control path, as torchcde 0.2.5's: subclass it for a path of your own
    and pass it to :func:`cdeint` as ``X``. A subclass implements the properties
    ``grid_points`` (the times where the path is only piecewise smooth, a 1-D tensor) and
    ``interval`` (``tensor([t_first, t_last])``), and the methods ``evaluate(t)``
    (:math:`X(t)`, ``[..., channels]`` for a 0-d ``t``) and ``derivative(t)``
    (:math:`dX/dt(t)`, the same shape; what :func:`cdeint` calls, with a 0-d tensor ``t``).
    :class:`LinearInterpolation` and :class:`CubicSpline` are subclasses. It is an
    ``nn.Module``: a path with parameters or buffers takes part in ``.to()``, ``.parameters()``
    and the adjoint's warning about inputs needing gradients.

    ```python
    import math, torch
    import torchnde.compat.torchcde as torchcde

    class Sine(torchcde.InterpolationBase):  # X(t) = [t, sin t], one sample
        def __init__(self):
            super().__init__()
            self.register_buffer("_t", torch.linspace(0.0, 6.0, 7))

        @property
        def grid_points(self):
            return self._t

        @property
        def interval(self):
            return self._t[[0, -1]]

        def evaluate(self, t):
            return torch.stack([t, torch.sin(t)], -1)

        def derivative(self, t):
            return torch.stack([torch.ones_like(t), torch.cos(t)], -1)

    X = Sine()
    func = lambda t, z: torch.ones(*z.shape, 2)  # dz = dX_1 + dX_2: z(t) = t + sin t
    z = torchcde.cdeint(X, func, torch.zeros(1), X.interval, adjoint=False, method="rk4", options=dict(step_size=0.1))
    assert isinstance(X, torch.nn.Module) and abs(float(z[-1]) - (6.0 + math.sin(6.0))) < 1e-5
    ```
    """

    @property
    @abc.abstractmethod
    def grid_points(self) -> torch.Tensor:
        """The knots, a 1-D tensor of times."""

    @property
    @abc.abstractmethod
    def interval(self) -> torch.Tensor:
        """``tensor([t_first, t_last])``."""

    @abc.abstractmethod
    def evaluate(self, t: Any) -> torch.Tensor:
        """:math:`X(t)`, ``[..., channels]``."""

    @abc.abstractmethod
    def derivative(self, t: Any) -> torch.Tensor:
        """:math:`dX/dt(t)`, ``[..., channels]``."""


class _Interpolation(InterpolationBase):
    """torchcde's path interface over a torchnde path: ``evaluate``, ``derivative``,
    ``grid_points``, ``interval``; the data as buffers."""

    path: _PiecewisePolynomial

    @property
    def grid_points(self) -> torch.Tensor:
        """The knots ``t``."""
        return self._t

    @property
    def interval(self) -> torch.Tensor:
        """``tensor([t_first, t_last])``."""
        return torch.stack([self._t[0], self._t[-1]])

    def evaluate(self, t: Any) -> torch.Tensor:
        """:math:`X(t)`: ``[..., channels]`` for a scalar ``t``, ``[..., len(t), channels]`` for a 1-D one."""
        return self._at(t, derivative=False)

    def derivative(self, t: Any) -> torch.Tensor:
        """:math:`dX/dt(t)`, shaped as :meth:`evaluate`."""
        return self._at(t, derivative=True)

    def _at(self, t: Any, derivative: bool) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=self.path.dtype, device=self.path.device)
        if t.ndim == 1:
            return self.path.values(t, derivative=derivative)
        if t.ndim:
            raise ValueError(f"t must be a scalar or a 1-D tensor of times, got shape {tuple(t.shape)}")
        return self.path.derivative(t) if derivative else self.path.evaluate(t)


def _default_times(t: Any, length: int, like: torch.Tensor) -> torch.Tensor:
    if t is None:
        return torch.linspace(0, length - 1, length, dtype=like.dtype, device=like.device)
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim != 1 or t.shape[0] != length:
        raise ValueError(
            f"t must be the 1-D times the coefficients were made at, of length {length}, got shape {tuple(t.shape)}"
        )
    return t


class LinearInterpolation(_Interpolation):
    """The linear interpolation of the coefficients of :func:`linear_interpolation_coeffs`
    (``t``: the times passed there, default ``0, 1, ...``), a :class:`~torchnde.LinearPath`.

    ```python
    import torch
    import torchnde.compat.torchcde as torchcde
    X = torchcde.LinearInterpolation(torchcde.linear_interpolation_coeffs(torch.tensor([[0.0], [2.0], [3.0]])))
    X.evaluate(torch.tensor(0.5)), X.derivative(torch.tensor(1.5))  # (tensor([1.]), tensor([1.]))
    ```
    """

    def __init__(self, coeffs: torch.Tensor, t: torch.Tensor | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        coeffs = _check_values(coeffs, "coeffs")
        t = _default_times(t, coeffs.shape[-2], coeffs)
        self.register_buffer("_t", t)
        self.register_buffer("_coeffs", coeffs)
        t = _check_times(coeffs, t)
        slopes = (coeffs[..., 1:, :] - coeffs[..., :-1, :]) / (t[1:] - t[:-1]).unsqueeze(-1)
        self.path = _Pieces(t, torch.stack([coeffs[..., :-1, :], slopes], dim=-2), smoothness=0)


class CubicSpline(_Interpolation):
    """The piecewise cubic of the coefficients of :func:`natural_cubic_coeffs` or
    :func:`hermite_cubic_coefficients_with_backward_differences` (``t``: the times passed there,
    default ``0, 1, ...``). Whether the second derivative jumps at the knots (Hermite) is read
    from the coefficients once, so that ``cdeint``'s adaptive solves land on the knots only then.

    ```python
    import torch
    import torchnde.compat.torchcde as torchcde
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    X = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(torch.stack([2 * t, 1 - t], -1), t), t)
    X.derivative(torch.tensor(0.3))  # tensor([ 2., -1.]): lines are reproduced
    ```
    """

    def __init__(self, coeffs: torch.Tensor, t: torch.Tensor | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        coeffs = _check_values(coeffs, "coeffs")
        pieces = _torchnde_layout(coeffs)
        t = _default_times(t, coeffs.shape[-2] + 1, coeffs)
        self.register_buffer("_t", t)
        self.register_buffer("_coeffs", coeffs)
        t = _check_times(coeffs.new_empty(t.shape[0], 1), t)
        self.path = _Pieces(t, pieces, smoothness=2 if _second_derivative_continuous(pieces, t) else 1)


NaturalCubicSpline = CubicSpline  # torchcde 0.2.5's deprecated name


def _second_derivative_continuous(pieces: torch.Tensor, t: torch.Tensor) -> bool:
    if pieces.shape[-3] < 2:
        return True
    h = (t[1:-1] - t[:-2]).unsqueeze(-1)
    c, d = pieces[..., :-1, 2, :], pieces[..., :-1, 3, :]
    end = 2 * c + 6 * d * h  # X'' at the right end of each piece but the last
    start = 2 * pieces[..., 1:, 2, :]
    scale = end.abs().amax().clamp(min=1.0)
    return bool(((end - start).abs() <= 1e-6 * scale).all())  # one host read, when the path is built


class TupleControl(torch.nn.Module):
    r"""Several controls over one interval, for a tuple state (torchcde 0.2.5's): ``evaluate(t)``
    and ``derivative(t)`` return one tensor per control, in order. With ``z0`` a tuple of as
    many tensors and ``func`` returning as many matrices, :func:`cdeint` solves each part
    against its own control:

    .. math:: \frac{dz_i}{dt} = f_i(t, z)\,\frac{dX_i}{dt}(t), \quad
              f(t, z) = (f_1, \dots, f_n), \ z = (z_1, \dots, z_n),

    where every :math:`f_i` may read the whole state. ``interval`` is the controls' common
    interval; ``grid_points`` their common knots (a ``RuntimeError`` if they differ).

    **Arguments:** ``*controls``: one or more paths (:class:`LinearInterpolation`,
    :class:`CubicSpline`, a subclass of :class:`InterpolationBase`), each an ``nn.Module`` with
    ``interval``, ``grid_points``, ``evaluate`` and ``derivative``, all over the same interval
    (their batch shapes and channels may differ).

    ```python
    import torch
    import torchnde.compat.torchcde as torchcde
    t = torch.linspace(0, 4, 5)
    X = torchcde.TupleControl(
        torchcde.CubicSpline(torchcde.natural_cubic_coeffs(torch.randn(8, 5, 3), t), t),
        torchcde.LinearInterpolation(torchcde.linear_interpolation_coeffs(torch.randn(8, 3, 2), t[::2]), t[::2]),
    )
    a, b = torch.nn.Linear(6, 4 * 3), torch.nn.Linear(6, 2 * 2)

    def func(t, z):  # both parts read the whole state
        both = torch.cat(z, -1)
        return torch.tanh(a(both)).view(8, 4, 3), torch.tanh(b(both)).view(8, 2, 2)

    z0 = (torch.zeros(8, 4), torch.zeros(8, 2))
    z = torchcde.cdeint(X, func, z0, X.interval, adjoint=False, method="rk4", options=dict(step_size=0.5))
    assert z[0].shape == (8, 2, 4) and z[1].shape == (8, 2, 2)
    ```
    """

    def __init__(self, *controls: torch.nn.Module):
        super().__init__()
        if not controls:
            raise ValueError("TupleControl needs one or more controls: TupleControl(X1, X2, ...)")
        for i, control in enumerate(controls):
            missing = [
                a for a in ("interval", "grid_points", "evaluate", "derivative") if not hasattr(control, a)
            ]
            if not isinstance(control, torch.nn.Module) or missing:
                raise TypeError(
                    f"control {i} of TupleControl must be a path (an nn.Module with interval, grid_points, "
                    f"evaluate and derivative: LinearInterpolation, CubicSpline or an InterpolationBase "
                    f"subclass), got {type(control).__name__}"
                )
        interval = controls[0].interval
        for i, control in enumerate(controls[1:], start=1):
            if not _same_tensor(control.interval, interval):
                raise ValueError(
                    f"TupleControl's controls must share one interval: control 0 spans {_span(interval)}, "
                    f"control {i} {_span(control.interval)}; build them from times with the same first "
                    "and last value"
                )
        grid = controls[0].grid_points
        same = all(_same_tensor(control.grid_points, grid) for control in controls[1:])
        self._interval, self._grid_points = interval, (grid if same else None)
        self.controls = torch.nn.ModuleList(controls)

    @property
    def interval(self) -> torch.Tensor:
        """The controls' common interval ``tensor([t_first, t_last])``."""
        return self._interval

    @property
    def grid_points(self) -> torch.Tensor:
        """The controls' common knots; a ``RuntimeError`` when they differ (as torchcde)."""
        if self._grid_points is None:
            raise RuntimeError(
                "the controls of this TupleControl have different grid points: read each control's own, "
                "X.controls[i].grid_points"
            )
        return self._grid_points

    def evaluate(self, t: Any) -> tuple[torch.Tensor, ...]:
        r""":math:`(X_1(t), \dots, X_n(t))`."""
        return tuple(control.evaluate(t) for control in self.controls)

    def derivative(self, t: Any) -> tuple[torch.Tensor, ...]:
        r""":math:`(dX_1/dt(t), \dots, dX_n/dt(t))`."""
        return tuple(control.derivative(t) for control in self.controls)


def _span(interval: Any) -> str:
    first, last = torch.as_tensor(interval).tolist()
    return f"[{first:g}, {last:g}]"


def _same_tensor(a: Any, b: Any) -> bool:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return a.shape == b.shape and torch.equal(a, b.to(a))


# ---------------------------------------------------------------------------------------------
# cdeint


class _VectorField(torch.nn.Module):
    """``f(t, z) dX/dt(t)`` for torchdiffeq's ``func(t, y)``; an ``nn.Module`` so that the
    adjoint finds ``func``'s parameters."""

    def __init__(self, X: Any, func: Callable, product: Callable):
        super().__init__()
        self.X, self.func, self.product = X, func, product
        # torchnde's product takes the loop's float time itself (``CDETerm.lower``)
        self.host_time = bool(getattr(product, "host_time", False))

    def forward(self, t: torch.Tensor, z: Any) -> Any:
        return self.product(t, z)


def _product(X: Any, func: Callable, z0: Any) -> Callable:
    prod = getattr(func, "prod", None)
    if callable(prod):  # torchcde: func.prod(t, z, dX/dt) computes the product itself
        return lambda t, z: prod(t, z, X.derivative(t))
    if isinstance(z0, tuple):  # torchcde's tuple states: part i is f_i @ dX_i/dt

        def parts(t: torch.Tensor, z: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            return tuple((f @ dx.unsqueeze(-1)).squeeze(-1) for f, dx in zip(func(t, z), X.derivative(t)))

        return parts
    path = getattr(X, "path", None)
    if isinstance(path, _PiecewisePolynomial) and path.batch_shape == z0.shape[:-1]:
        return CDETerm(func, path).lower()  # torchnde's product, shapes checked once

    def generic(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # any X with a derivative
        return (func(t, z) @ X.derivative(t).unsqueeze(-1)).squeeze(-1)

    return generic


def _check(X: Any, func: Callable, z0: Any, t: Any) -> None:
    """torchcde's checks of ``cdeint``'s inputs (one evaluation of ``X.derivative`` and of
    ``func`` or ``func.prod``), for a tensor state or a tuple state part by part."""
    if not callable(getattr(X, "derivative", None)):
        raise ValueError(
            "X must have a 'derivative' method: build it with LinearInterpolation or CubicSpline (TupleControl "
            "for a tuple state), or subclass InterpolationBase"
        )
    if not isinstance(t, torch.Tensor) or t.ndim != 1:
        raise ValueError("t must be a 1-D tensor of output times, as in torchcde")
    is_tuple = isinstance(z0, tuple)
    parts = z0 if is_tuple else (z0,)
    if not parts or not all(isinstance(z, torch.Tensor) and z.ndim >= 1 for z in parts):
        raise ValueError(
            "z0 must be a tensor [..., hidden_channels], or a tuple of them with X a TupleControl of one "
            "control per part"
        )
    dx = X.derivative(t[0].detach())
    dxs = _parts(
        dx, is_tuple, len(parts), "X.derivative(t)", "combine the controls with TupleControl(X1, X2, ...)"
    )
    for i, (d, z) in enumerate(zip(dxs, parts)):
        if d.shape[:-1] != z.shape[:-1]:
            raise ValueError(
                f"{_part(i, is_tuple)}X.derivative returned shape {tuple(d.shape)} and z0 has shape {tuple(z.shape)}: they "
                "must have the same batch dimensions"
            )
    if callable(getattr(func, "prod", None)):
        outs = _parts(
            func.prod(t[0], z0, dx), is_tuple, len(parts), "func.prod(t, z, dXdt)", "return one per part"
        )
        for i, (out, z) in enumerate(zip(outs, parts)):
            if out.shape != z.shape:
                raise ValueError(
                    f"{_part(i, is_tuple)}func.prod returned shape {tuple(out.shape)}, z0 has "
                    f"shape {tuple(z.shape)}: they must match"
                )
        return
    fzs = _parts(func(t[0], z0), is_tuple, len(parts), "func(t, z)", "return one matrix per part")
    for i, (fz, d, z) in enumerate(zip(fzs, dxs, parts)):
        expected = (*z.shape, d.shape[-1])
        if tuple(fz.shape) != expected:
            raise ValueError(
                f"{_part(i, is_tuple)}func(t, z) must return [..., hidden_channels, "
                f"input_channels] = {list(expected)}, got {list(fz.shape)}"
            )


def _part(i: int, is_tuple: bool) -> str:
    return f"part {i}: " if is_tuple else ""


def _parts(value: Any, is_tuple: bool, n: int, name: str, fix: str) -> tuple[torch.Tensor, ...]:
    """``value`` as a tuple of ``n`` tensors (one tensor when the state is one), or the error."""
    if not is_tuple:
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"z0 is a tensor, so {name} must return one tensor, got {type(value).__name__}: for a tuple "
                "of controls pass z0 as a tuple of as many tensors"
            )
        return (value,)
    if not isinstance(value, (tuple, list)) or len(value) != n:
        got = f"{len(value)} parts" if isinstance(value, (tuple, list)) else type(value).__name__
        raise ValueError(
            f"z0 is a tuple of {n} tensors, so {name} must return a tuple of {n}, got {got}: {fix}"
        )
    if not all(isinstance(v, torch.Tensor) for v in value):
        raise ValueError(f"{name} must return a tuple of tensors, got {[type(v).__name__ for v in value]}")
    return tuple(value)


def cdeint(
    X: Any,
    func: Callable[[torch.Tensor, Any], Any],
    z0: torch.Tensor | tuple[torch.Tensor, ...],
    t: torch.Tensor,
    adjoint: bool = True,
    backend: str = "torchdiffeq",
    **kwargs: Any,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    r"""Solve the controlled differential equation :math:`z_t = z_{t_0} + \int_{t_0}^t f(s,
    z_s)\,dX_s` and return :math:`z` at the times ``t``, ``[..., len(t), hidden_channels]``
    (time second to last, as torchcde); for a tuple state, a tuple of such tensors.

    **Arguments** (torchcde 0.2.5's):

    - ``X``: the control, a :class:`LinearInterpolation` or :class:`CubicSpline`, a subclass of
      :class:`InterpolationBase` (any object with ``derivative(t)`` returning
      ``[..., input_channels]`` works), or a :class:`TupleControl` for a tuple state.
    - ``func``: ``f(t, z)`` returning ``[..., hidden_channels, input_channels]`` (an
      ``nn.Module`` when ``adjoint=True``, unless ``adjoint_params`` is passed); if it has a
      method ``prod(t, z, dXdt)``, that computes the product instead. For a tuple state it
      takes the tuple ``z`` and returns one matrix per part: :math:`dz_i/dt = f_i(t, z)\,
      dX_i/dt(t)` (``prod`` takes and returns tuples).
    - ``z0``: ``[..., hidden_channels]``, or a tuple of them (one per control of a
      :class:`TupleControl`, each with its own batch and channels); ``t``: the 1-D output times.
    - ``adjoint``: backpropagate by the continuous adjoint (default, as torchcde) or through
      the solver's operations.
    - ``**kwargs``: :func:`torchnde.compat.torchdiffeq.odeint`'s (``method``, ``rtol``,
      ``atol``, ``options``) and with ``adjoint=True`` ``odeint_adjoint``'s (``adjoint_params``,
      ``adjoint_rtol``, ...). Defaults: ``atol=1e-6``, ``rtol=1e-4``, the adjoint's the same.
      With the adjoint, the data's gradient needs its coefficients in ``adjoint_params`` (a
      warning says so, as torchcde's).

    ```python
    import torch
    import torchnde.compat.torchcde as torchcde
    X = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(torch.randn(8, 20, 3)))
    net = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.Tanh(), torch.nn.Unflatten(-1, (4, 3)))
    func = lambda t, z: net(z)
    z = torchcde.cdeint(X, func, torch.zeros(8, 4), X.interval, adjoint=False, method="rk4", options=dict(step_size=0.5))
    z.shape  # torch.Size([8, 2, 4])
    ```
    """
    if backend != "torchdiffeq":
        raise ValueError(
            f"backend={backend!r} is not supported by torchnde's cdeint: use backend='torchdiffeq' "
            "(torchcde's torchsde backend solves the same ODE)"
        )
    if isinstance(z0, list):
        z0 = tuple(z0)
    _check(X, func, z0, t)
    kwargs.setdefault("atol", 1e-6)
    kwargs.setdefault("rtol", 1e-4)
    if adjoint:
        kwargs.setdefault("adjoint_atol", kwargs["atol"])
        kwargs.setdefault("adjoint_rtol", kwargs["rtol"])
        if "adjoint_params" not in kwargs and any(b.requires_grad for b in _buffers(X)):
            warnings.warn(
                "One of the inputs to the control path X requires gradients but `adjoint_params` has "
                "not been passed: these inputs will get no gradient from the adjoint. Pass "
                "adjoint_params=tuple(func.parameters()) + (coeffs,) to cdeint.",
                stacklevel=2,
            )
        elif "adjoint_params" in kwargs:
            kwargs["adjoint_params"] = _through_path(X, tuple(kwargs["adjoint_params"]))
    _knots(X, kwargs)
    vector_field = _VectorField(X, func, _product(X, func, z0))
    with _restarts_as_025():  # torchcde's gradients to 1e-6 need 0.2.5's adjoint steps
        out = (odeint_adjoint if adjoint else odeint)(vector_field, z0, t, **kwargs)
    if isinstance(out, tuple):
        return tuple(part.movedim(0, -2) for part in out)
    return out.movedim(0, -2)


def _buffers(X: Any) -> list[torch.Tensor]:
    return list(X.buffers()) if isinstance(X, torch.nn.Module) else []


def _paths(X: Any) -> list[_PiecewisePolynomial]:
    """torchnde's paths underneath ``X`` (each control's, for a :class:`TupleControl`)."""
    controls = X.controls if isinstance(X, TupleControl) else (X,)
    paths = (getattr(control, "path", None) for control in controls)
    return [path for path in paths if isinstance(path, _PiecewisePolynomial)]


def _through_path(X: Any, params: tuple) -> tuple:
    """``adjoint_params`` with the tensors the paths were built from (their coefficients, the
    data) replaced by the paths' own coefficients, which the vector field reads: the adjoint's
    gradient reaches them, and autograd carries it on to the coefficients and the data."""
    upstream, read = [False] * len(params), []
    for dc in (path._dc for path in _paths(X) if path._dc.requires_grad):
        nodes, leaves = _graph(dc)
        hits = [
            isinstance(p, torch.Tensor) and (id(p) in leaves if p.grad_fn is None else p.grad_fn in nodes)
            for p in params
        ]
        if any(hits):
            upstream, read = [u or h for u, h in zip(upstream, hits)], [*read, dc]
    if not read:
        return params
    return (*(p for p, up in zip(params, upstream) if not up), *read)


def _graph(out: torch.Tensor) -> tuple[set, set]:
    """The autograd nodes ``out`` depends on, and the ids of the leaf tensors among them."""
    nodes, leaves, todo = set(), set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in nodes:
            continue
        nodes.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            leaves.add(id(variable))
        todo.extend(next_node for next_node, _ in node.next_functions)
    return nodes, leaves


def _knots(X: Any, kwargs: dict[str, Any]) -> None:
    """Adaptive methods land on the paths' knots where they are only piecewise smooth (every
    control's, for a :class:`TupleControl`), unless the options name their own
    ``jump_t``/``step_t``."""
    paths = _paths(X)
    method = kwargs.get("method") or "dopri5"
    options = dict(kwargs.get("options") or {})
    if not paths or method not in _ADAPTIVE or "jump_t" in options or "step_t" in options:
        return
    jumps = [path.jump_ts for path in paths if path.jump_ts is not None]
    steps = [path.step_ts for path in paths if path.step_ts is not None]
    if jumps:
        options["jump_t"] = torch.unique(torch.cat(jumps))
    if steps:
        step_t = torch.unique(torch.cat(steps))
        if jumps:  # torchdiffeq: no time in both
            step_t = step_t[~torch.isin(step_t, options["jump_t"])]
        if len(step_t):
            options["step_t"] = step_t
    if jumps or steps:
        kwargs["options"] = options


# ---------------------------------------------------------------------------------------------
# log-signatures


def logsig_windows(
    x: torch.Tensor, depth: int, window_length: float, t: torch.Tensor | None = None
) -> torch.Tensor:
    """The path of the log-ODE method, as torchcde 0.2.5's (signatory's default layout, the
    Lyndon words): ``[..., windows + 1, logsignature_channels]``, its first point ``x_0`` padded
    with zeros, each next one the previous plus the log-signature of the linear interpolation
    of ``x`` over one window of length ``window_length``; use it with the times ``0, 1, ...``
    (e.g. ``natural_cubic_coeffs(logsig_windows(x, 2, 10.0))``). Depth 1 to 3 (torchnde's
    log-signatures, no ``signatory``).

    ```python
    import torch
    import torchnde.compat.torchcde as torchcde
    torchcde.logsig_windows(torch.randn(4, 101, 3), depth=2, window_length=10.0).shape  # torch.Size([4, 11, 6])
    ```
    """
    logsigs, _ = _logsignature_windows(x, t, depth=depth, window=float(window_length))
    return _cumulative(x, t, logsigs)


def logsignature_windows(
    x: torch.Tensor, depth: int, window_length: float, t: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchcde's deprecated :func:`logsig_windows`: each window's log-signature scaled by the
    window's length, and the window ends returned with the values: ``(values, times)``."""
    logsigs, r = _logsignature_windows(x, t, depth=depth, window=float(window_length))
    return _cumulative(x, t, logsigs * (r[1:] - r[:-1]).unsqueeze(-1)), r


def _cumulative(x: torch.Tensor, t: Any, logsigs: torch.Tensor) -> torch.Tensor:
    first = x[..., 0, :]
    if bool(torch.isnan(first).any()):
        first = _fill_linear(x, _check_times(x, t))[..., 0, :]
    start = torch.cat([first, first.new_zeros(*first.shape[:-1], logsigs.shape[-1] - first.shape[-1])], -1)
    return torch.cat([start.unsqueeze(-2), logsigs], dim=-2).cumsum(-2)
