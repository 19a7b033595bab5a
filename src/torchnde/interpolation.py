r"""Paths from data: continuous controls :math:`X(t)` built from irregular, partly missing
observations, for controlled differential equations (:class:`torchnde.CDETerm`).

Data is ``x`` of shape ``[*batch, time, channels]`` observed at times ``t``: one shared grid
``[time]`` (the default ``0, 1, ..., time - 1``), or one grid per sample ``[*batch, time]``.
Missing values are NaN, per channel. Every path is a piecewise polynomial in the local time
:math:`s = t - t_i` on each interval :math:`[t_i, t_{i+1}]`, computed once from the data
(differentiably with respect to it), so that evaluating :math:`X(t)` or :math:`dX/dt(t)` is a
search for the interval and a Horner step:

| path | pieces | smoothness | the loop steps onto the knots | missing values |
|---|---|---|---|---|
| :class:`LinearPath` | linear | :math:`C^0` | as jumps of ``f`` (``jump_ts``) | linear in time between observations |
| :class:`RectilinearPath` | linear, time first | :math:`C^0` | as jumps | forward-filled (causal) |
| :class:`HermitePath` | cubic Hermite, backward differences | :math:`C^1` | as steps (``step_ts``) | linear, then Hermite |
| :class:`CubicSplinePath` | natural cubic spline | :math:`C^2` | not needed | the spline through each channel's observations |

Leading and trailing NaNs of a channel take its first and last observed value; a channel never
observed is zero (torchcde 0.2.5's conventions). Which knots the solver must step onto is read
by :func:`torchnde.solve` from the term, so a CDE solve never straddles a kink of the control.

Helpers for the usual preprocessing: :func:`with_time_channel` (time as a channel, which makes
the CDE see the time between observations), :func:`with_observation_counts` (cumulative
observation counts, which make it see *which* values were observed) and :func:`forward_fill`.

??? cite "References"
    P. Kidger, J. Morrill, J. Foster, T. Lyons, Neural controlled differential equations for
    irregular time series, *NeurIPS* 2020.
    J. Morrill, P. Kidger, L. Yang, T. Lyons, On the choice of interpolation scheme for neural
    CDEs, *TMLR* 2022 (rectilinear and Hermite with backward differences).
"""

from __future__ import annotations

import abc
import bisect
import math
from typing import Any

import torch

__all__ = [
    "AbstractPath",
    "CubicSplinePath",
    "HermitePath",
    "LinearPath",
    "RectilinearPath",
    "forward_fill",
    "with_observation_counts",
    "with_time_channel",
]


# ---------------------------------------------------------------------------------------------
# input checks


def _check_values(x: Any, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor [*batch, time, channels], got {_describe(x)}")
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape [*batch, time, channels], got shape {tuple(x.shape)}: "
            "add a channel axis with x.unsqueeze(-1)"
        )
    return x


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor"
    return type(x).__name__


def _check_times(x: torch.Tensor, t: Any) -> torch.Tensor:
    """``t`` as a tensor of ``x``'s dtype: ``[time]`` or ``[*batch, time]``, finite and strictly
    increasing (one host read); the default ``0, 1, ..., time - 1``."""
    length = x.shape[-2]
    if length < 2:
        raise ValueError(f"a path needs at least two observations, got time length {length}")
    if t is None:
        return torch.arange(length, dtype=x.dtype, device=x.device)
    t = torch.as_tensor(t, device=x.device)
    if t.is_complex():
        raise TypeError(f"t must be real, got {t.dtype}")
    t = t.to(x.dtype)
    if t.shape != (length,) and t.shape != x.shape[:-1]:
        raise ValueError(
            f"t must have shape [time] = {[length]} (one grid for every sample) or [*batch, time] = "
            f"{list(x.shape[:-1])} (one grid per sample), got {list(t.shape)}"
        )
    ok = torch.isfinite(t).all() & (t[..., 1:] > t[..., :-1]).all()
    if not bool(ok):
        raise ValueError(
            "t must be finite and strictly increasing along time; mark a missing observation with NaN "
            "in x, not by repeating a time"
        )
    return t


# ---------------------------------------------------------------------------------------------
# preprocessing helpers


def with_time_channel(x: torch.Tensor, t: Any = None) -> torch.Tensor:
    r"""``x`` with the observation times prepended as channel 0: ``[*batch, time, 1 + channels]``.

    A CDE is invariant to reparametrising time; with time as a channel, the path (and so the
    solution) sees *when* each observation was made.

    **Arguments:**

    - ``x``: ``[*batch, time, channels]``, NaN where missing.
    - ``t``: ``[time]`` or ``[*batch, time]`` (default ``0, 1, ..., time - 1``).

    ```python
    import torch, torchnde as nde
    x = torch.tensor([[[1.0], [2.0], [4.0]]])
    nde.with_time_channel(x, torch.tensor([0.0, 0.5, 2.0]))[0, :, 0]  # tensor([0.0, 0.5, 2.0])
    ```
    """
    x = _check_values(x)
    t = _check_times(x, t)
    times = t.expand(*x.shape[:-1]).unsqueeze(-1)
    return torch.cat([times, x], dim=-1)


def forward_fill(x: torch.Tensor) -> torch.Tensor:
    r"""Each NaN replaced by the last observation before it in its channel (NaNs before a
    channel's first observation stay NaN). Causal: the value at time index ``i`` depends only on
    observations up to ``i``.

    ```python
    import math, torch, torchnde as nde
    x = torch.tensor([[math.nan], [1.0], [math.nan], [3.0], [math.nan]])
    nde.forward_fill(x)[:, 0]  # tensor([nan, 1., 1., 3., 3.])
    ```
    """
    x = _check_values(x)
    observed = ~torch.isnan(x)
    index = torch.arange(x.shape[-2], device=x.device).unsqueeze(-1)
    last = torch.where(observed, index, -1).cummax(dim=-2).values
    filled = torch.where(observed, x, 0.0).gather(-2, last.clamp(min=0))
    return torch.where(last >= 0, filled, math.nan)


def with_observation_counts(x: torch.Tensor) -> torch.Tensor:
    r"""``x`` with one channel per channel of ``x`` appended, counting the observations made so
    far: :math:`c_k(t_i) = \#\{j \le i : x_{j,k}\ \text{observed}\}` (the "observational
    intensity" channels of Kidger et al. 2020), ``[*batch, time, 2 * channels]``. With them the
    CDE can tell an observed value from an interpolated one.

    ```python
    import math, torch, torchnde as nde
    x = torch.tensor([[1.0], [math.nan], [3.0]])
    nde.with_observation_counts(x)[:, 1]  # tensor([1., 1., 2.])
    ```
    """
    x = _check_values(x)
    counts = (~torch.isnan(x)).cumsum(dim=-2).to(x.dtype)
    return torch.cat([x, counts], dim=-1)


def _fill_linear(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Each channel's NaNs filled linearly in time between its observations; leading and
    trailing NaNs take the first and last observation; a channel never observed is zero.
    Differentiable with respect to the observed values."""
    observed = ~torch.isnan(x)
    length = x.shape[-2]
    index = torch.arange(length, device=x.device).unsqueeze(-1)
    prev = torch.where(observed, index, -1).cummax(dim=-2).values
    nxt = torch.where(observed, index, length).flip(-2).cummin(dim=-2).values.flip(-2)
    clean = torch.where(observed, x, 0.0)
    p, n = prev.clamp(min=0), nxt.clamp(max=length - 1)
    x_prev, x_next = clean.gather(-2, p), clean.gather(-2, n)
    times = t.unsqueeze(-1).expand_as(x)
    t_prev, t_next = times.gather(-2, p), times.gather(-2, n)
    gap = torch.where(t_next > t_prev, t_next - t_prev, 1.0)
    inner = x_prev + (times - t_prev) / gap * (x_next - x_prev)
    filled = torch.where(prev < 0, x_next, torch.where(nxt >= length, x_prev, inner))
    return torch.where(observed, x, filled)


def _has_nan(x: torch.Tensor) -> bool:
    return bool(torch.isnan(x).any())  # one host read, when the path is built


def _filled(x: Any, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The checked data with its NaNs filled linearly, and the checked times."""
    x = _check_values(x)
    t = _check_times(x, t)
    return (_fill_linear(x, t) if _has_nan(x) else x), t


# ---------------------------------------------------------------------------------------------
# paths


class AbstractPath(abc.ABC):
    r"""A continuous path :math:`X : [t_0, t_{n-1}] \to \mathbb{R}^{C}` for each sample of a batch.

    - ``times``: the knots, ``[time]`` (shared) or ``[*batch, time]`` (per sample).
    - ``batch_shape``, ``channels``: ``X(t)`` has shape ``[*batch_shape, channels]``.
    - ``step_ts``, ``jump_ts``: the knots where a solver must land (``dX/dt`` continuous but
      not smooth) or where ``dX/dt`` jumps, as sorted float64 CPU tensors, or ``None``.

    Evaluation outside ``[t_0, t_{n-1}]`` extends the first or last piece.
    """

    times: torch.Tensor
    batch_shape: torch.Size
    channels: int

    @abc.abstractmethod
    def evaluate(self, t: Any) -> torch.Tensor:
        """:math:`X(t)`, ``[*batch_shape, channels]``; ``t`` a 0-d time (every sample) or a
        tensor of shape ``batch_shape`` (sample ``b`` at ``t[b]``)."""

    @abc.abstractmethod
    def derivative(self, t: Any) -> torch.Tensor:
        """:math:`dX/dt(t)`, as :meth:`evaluate`. At a knot, the derivative of the piece that
        starts there."""

    @property
    def step_ts(self) -> torch.Tensor | None:
        return None

    @property
    def jump_ts(self) -> torch.Tensor | None:
        return None

    @property
    def knots(self) -> torch.Tensor:
        """The interior knots of every sample, sorted and deduplicated: a float64 CPU tensor
        (what ``CDETerm(..., land_on_knots=True)`` lands on)."""
        return torch.unique(self.times[..., 1:-1].detach().to("cpu", torch.float64))

    @property
    def interval(self) -> tuple[float, float]:
        """``(t_first, t_last)`` over all samples, as floats."""
        t = self.times
        return float(t[..., 0].min()), float(t[..., -1].max())


class _PiecewisePolynomial(AbstractPath):
    """A path whose piece ``i`` is :math:`\\sum_k c_{i,k}\\,(t - t_i)^k` (``coeffs``:
    ``[*batch, time - 1, degree + 1, channels]``)."""

    # which knots the loop must land on: 0 (C0: jumps of dX/dt), 1 (C1: steps), 2 (none)
    smoothness: int = 0

    def __init__(self, times: torch.Tensor, coeffs: torch.Tensor):
        batch = coeffs.shape[:-3]
        pieces, order, channels = coeffs.shape[-3:]
        n = math.prod(batch)
        self.times, self.coeffs = times, coeffs
        self.batch_shape, self.channels = torch.Size(batch), channels
        self.dtype, self.device = coeffs.dtype, coeffs.device
        self.per_sample_times = times.ndim > 1
        powers = torch.arange(1, order, dtype=coeffs.dtype, device=coeffs.device).view(-1, 1, 1)
        # piece-major copies the evaluation works on, [pieces, order, N, channels]: the piece of
        # a shared-time path is one contiguous block (a view when the piece is known on the host)
        self._c = coeffs.reshape(n, pieces, order, channels).permute(1, 2, 0, 3).contiguous()
        self._dc = self._c[:, 1:] * powers
        flat = times.reshape(n, pieces + 1) if self.per_sample_times else times
        self._left, self._inner = flat[..., :-1].contiguous(), flat[..., 1:-1].contiguous()
        self._rows = torch.arange(n, device=coeffs.device)
        self._knots: torch.Tensor | None = None
        # a shared grid's knots on the host (one read, here): a float time finds its piece by
        # bisection, without a kernel
        self._host_left: list[float] = [] if self.per_sample_times else self._left.tolist()

    def evaluate(self, t: Any) -> torch.Tensor:
        return self._at(t, self._c)

    def derivative(self, t: Any) -> torch.Tensor:
        return self._at(t, self._dc)

    def values(self, ts: Any, derivative: bool = False) -> torch.Tensor:
        """:math:`X` (or :math:`dX/dt`) at each time of the 1-D ``ts``: ``[*batch, len(ts), channels]``."""
        ts = torch.as_tensor(ts, dtype=self.dtype, device=self.device)
        if ts.ndim != 1:
            raise ValueError(f"values(ts) takes a 1-D tensor of times, got shape {tuple(ts.shape)}")
        out = torch.stack([self._at(s, self._dc if derivative else self._c) for s in ts.unbind()], dim=-2)
        return out

    def _at(self, t: Any, coeffs: torch.Tensor) -> torch.Tensor:
        if t.__class__ is float and not self.per_sample_times:  # the loop's host time
            return self._at_host(t, coeffs)
        t = (
            t.to(self.dtype)
            if isinstance(t, torch.Tensor)
            else torch.tensor(t, dtype=self.dtype, device=self.device)
        )
        if t.ndim == 0:
            if self.per_sample_times:
                idx = torch.searchsorted(
                    self._inner, t.expand(len(self._rows), 1).contiguous(), right=True
                ).squeeze(1)
                c = coeffs[idx, :, self._rows]  # [N, order, channels]
                s = (t - self._left[self._rows, idx]).unsqueeze(-1)
                parts = c.unbind(1)
            else:
                idx = torch.searchsorted(self._inner, t, right=True).reshape(1)
                parts = coeffs.index_select(0, idx).squeeze(0).unbind(0)  # order x [N, channels]
                s = t - self._left.index_select(0, idx)
        else:
            if t.shape != self.batch_shape:
                raise ValueError(
                    f"per-sample times must have the path's batch shape {list(self.batch_shape)}, got "
                    f"{list(t.shape)}; pass a 0-d time to evaluate every sample at the same time"
                )
            tf = t.reshape(-1).contiguous()
            if self.per_sample_times:
                idx = torch.searchsorted(self._inner, tf.unsqueeze(1), right=True).squeeze(1)
                left = self._left[self._rows, idx]
            else:
                idx = torch.searchsorted(self._inner, tf, right=True)
                left = self._left[idx]
            parts = coeffs[idx, :, self._rows].unbind(1)
            s = (tf - left).unsqueeze(-1)
        out = parts[-1]
        for k in range(len(parts) - 2, -1, -1):
            out = parts[k] + s * out
        return out.reshape(*self.batch_shape, self.channels)

    def _at_host(self, t: float, coeffs: torch.Tensor) -> torch.Tensor:
        """The piece holding the float ``t`` found on the host, and Horner's rule with the
        float local time: one fused multiply-add per degree."""
        left = self._host_left
        i = bisect.bisect_right(left, t, 1, len(left)) - 1  # the first piece extends left, the last right
        s = t - left[i]
        c = coeffs[i]
        out = c[-1]
        for k in range(c.shape[0] - 2, -1, -1):
            out = torch.add(c[k], out, alpha=s)
        return out.view(*self.batch_shape, self.channels)

    @property
    def knots(self) -> torch.Tensor:
        if self._knots is None:  # one host read, cached
            self._knots = super().knots
        return self._knots

    @property
    def step_ts(self) -> torch.Tensor | None:
        return self.knots if self.smoothness == 1 else None

    @property
    def jump_ts(self) -> torch.Tensor | None:
        return self.knots if self.smoothness == 0 else None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_shape={list(self.batch_shape)}, time={self.times.shape[-1]}, "
            f"channels={self.channels}, dtype={self.dtype})"
        )


def _linear_coeffs(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    slopes = (x[..., 1:, :] - x[..., :-1, :]) / (t[..., 1:] - t[..., :-1]).unsqueeze(-1)
    return torch.stack([x[..., :-1, :], slopes], dim=-2)


class LinearPath(_PiecewisePolynomial):
    r"""The piecewise linear interpolation of the observations:
    :math:`X(t) = x_i + \frac{t - t_i}{t_{i+1} - t_i}(x_{i+1} - x_i)` on :math:`[t_i, t_{i+1}]`.

    :math:`dX/dt` jumps at every knot, so a CDE solve lands on each (``jump_ts``). Missing values
    (NaN) are filled per channel linearly in time between the observations around them, which
    uses the next observation: for a causal path from partly missing data use
    :class:`RectilinearPath`.

    **Arguments:**

    - ``x``: ``[*batch, time, channels]``, NaN where missing.
    - ``t``: ``[time]`` or ``[*batch, time]``, strictly increasing (default ``0, ..., time - 1``).

    ```python
    import torch, torchnde as nde
    x = torch.tensor([[0.0], [2.0], [2.0]])
    path = nde.LinearPath(x, torch.tensor([0.0, 1.0, 3.0]))
    path.evaluate(0.5), path.derivative(0.5)  # (tensor([1.]), tensor([2.]))
    ```
    """

    smoothness = 0

    def __init__(self, x: torch.Tensor, t: Any = None):
        x, t = _filled(x, t)
        super().__init__(t, _linear_coeffs(x, t))


class RectilinearPath(_PiecewisePolynomial):
    r"""The rectilinear (lead-lag) interpolation for online use: between two observations, time
    moves first and the values after, so that the path up to :math:`t_i` depends only on
    observations up to :math:`t_i`, and missing values are forward-filled (Morrill et al. 2022).

    Each interval :math:`[t_i, t_{i+1}]` is split at its midpoint :math:`m_i`: on
    :math:`[t_i, m_i]` the time channel (if any) moves from :math:`t_i` to :math:`t_{i+1}` while
    the other channels hold :math:`x_i`; on :math:`[m_i, t_{i+1}]` they move to :math:`x_{i+1}`.
    So :math:`X(t_i)` is the (forward-filled) observation at every knot. Piecewise linear, so a
    CDE solve lands on every knot and midpoint (``jump_ts``). Leading NaNs of a channel take its
    first observation (this one look ahead is not causal: fill them yourself, e.g. with the
    channel's mean, when it matters).

    **Arguments:**

    - ``x``: ``[*batch, time, channels]``, NaN where missing.
    - ``t``: ``[time]`` or ``[*batch, time]``, strictly increasing (default ``0, ..., time - 1``).
    - ``time_channel``: the index of the channel holding time (see :func:`with_time_channel`),
      which moves first; ``None`` when there is none (every channel then holds, then moves).

    ```python
    import torch, torchnde as nde
    x = nde.with_time_channel(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 2.0]))
    path = nde.RectilinearPath(x, torch.tensor([0.0, 2.0]), time_channel=0)
    path.evaluate(1.0)  # tensor([2., 1.]): time has moved on, the value not yet
    ```
    """

    smoothness = 0

    def __init__(self, x: torch.Tensor, t: Any = None, time_channel: int | None = None):
        x = _check_values(x)
        t = _check_times(x, t)
        values, times = _rectilinear(x, t, time_channel)
        super().__init__(times, _linear_coeffs(values, times))


def _rectilinear(
    x: torch.Tensor, t: torch.Tensor, time_channel: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rectilinear path's knots ``t_0, m_0, t_1, ..., t_{n-1}`` and values there."""
    channels = x.shape[-1]
    if time_channel is not None and (
        isinstance(time_channel, bool)
        or not isinstance(time_channel, int)
        or not -channels <= time_channel < channels
    ):
        raise ValueError(
            f"time_channel must be a channel index in [0, {channels}) or None, got {time_channel!r}"
        )
    if _has_nan(x):
        x = _fill_linear(forward_fill(x), t)  # only leading NaNs remain after the forward fill
    held = x[..., :-1, :]
    if time_channel is not None:
        channel = torch.arange(channels, device=x.device) == time_channel % channels
        held = torch.where(channel, x[..., 1:, :], held)
    values = torch.stack([x[..., :-1, :], held], dim=-2).flatten(-3, -2)
    values = torch.cat([values, x[..., -1:, :]], dim=-2)
    mid = (t[..., :-1] + t[..., 1:]) / 2
    times = torch.cat([torch.stack([t[..., :-1], mid], dim=-1).flatten(-2), t[..., -1:]], dim=-1)
    return values, times


class HermitePath(_PiecewisePolynomial):
    r"""Cubic Hermite interpolation with backward differences (Morrill et al. 2022): on
    :math:`[t_i, t_{i+1}]` the cubic through :math:`x_i, x_{i+1}` whose slopes at the ends are the
    backward differences :math:`d_i = \frac{x_i - x_{i-1}}{t_i - t_{i-1}}` (:math:`d_0 = d_1`)
    and :math:`d_{i+1}`.

    The path up to :math:`t_{i+1}` depends only on observations up to :math:`t_{i+1}` (causal at
    the knots), and it is :math:`C^1`, so a CDE solve only needs to land on the knots
    (``step_ts``), not restart there. Missing values are filled linearly first, as for
    :class:`LinearPath` (forward-fill them first, :func:`forward_fill`, to stay causal).

    **Arguments:**

    - ``x``: ``[*batch, time, channels]``, NaN where missing.
    - ``t``: ``[time]`` or ``[*batch, time]``, strictly increasing (default ``0, ..., time - 1``).

    ```python
    import torch, torchnde as nde
    path = nde.HermitePath(torch.tensor([[0.0], [1.0], [3.0]]))
    path.derivative(1.0), path.derivative(2.0)  # (tensor([1.]), tensor([2.])): the backward differences
    ```
    """

    smoothness = 1

    def __init__(self, x: torch.Tensor, t: Any = None):
        x, t = _filled(x, t)
        h = (t[..., 1:] - t[..., :-1]).unsqueeze(-1)
        slope = (x[..., 1:, :] - x[..., :-1, :]) / h
        left = torch.cat([slope[..., :1, :], slope[..., :-1, :]], dim=-2)  # d_i; d_0 = d_1
        coeffs = [x[..., :-1, :], left, 2 * (slope - left) / h, (left - slope) / h**2]
        super().__init__(t, torch.stack(coeffs, dim=-2))


class CubicSplinePath(_PiecewisePolynomial):
    r"""The natural cubic spline through the observations: cubic on each interval, :math:`C^2`,
    with :math:`X'' = 0` at both ends. It equals ``scipy.interpolate.CubicSpline(t, x,
    bc_type="natural")``.

    The knot slopes :math:`D_i` solve the tridiagonal system (:math:`h_i = t_{i+1} - t_i`,
    :math:`\Delta_i = (x_{i+1} - x_i) / h_i`, terms outside the grid dropped)

    .. math:: \frac{D_{i-1}}{h_{i-1}} + 2\Bigl(\frac{1}{h_{i-1}} + \frac{1}{h_i}\Bigr) D_i
              + \frac{D_{i+1}}{h_i} = 3\Bigl(\frac{\Delta_{i-1}}{h_{i-1}} + \frac{\Delta_i}{h_i}\Bigr),

    solved once when the path is built (differentiably, O(time)). With missing values, each
    channel's spline goes through that channel's observations only (leading and trailing NaNs
    take the first and last observation), as torchcde's ``natural_cubic_coeffs``. Smooth, so a
    CDE solve needs no stops; but the spline at :math:`t` depends on every observation, past and
    future: use :class:`HermitePath` or :class:`RectilinearPath` online.

    **Arguments:**

    - ``x``: ``[*batch, time, channels]``, NaN where missing.
    - ``t``: ``[time]`` or ``[*batch, time]``, strictly increasing (default ``0, ..., time - 1``).

    ```python
    import torch, torchnde as nde
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    path = nde.CubicSplinePath(torch.stack([2 * t, 1 - t], -1), t)
    path.evaluate(0.3), path.derivative(0.3)  # lines are reproduced: (tensor([0.6, 0.7]), tensor([2., -1.]))
    ```
    """

    smoothness = 2

    def __init__(self, x: torch.Tensor, t: Any = None):
        x = _check_values(x)
        t = _check_times(x, t)
        super().__init__(t, _natural_cubic(x, t))


def _natural_cubic(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The natural spline's pieces ``[*batch, time - 1, 4, channels]``, each channel through its
    own observations: the observed knots of every series are moved to the front (a padded,
    per-series system), the spline is solved there, and each original interval takes the piece
    of the observed interval holding it, re-expanded about its own left knot."""
    *batch, length, channels = x.shape
    series = x.movedim(-1, -2).reshape(-1, length)  # [M, time], M = batch * channels
    times = (t.unsqueeze(-2) if t.ndim > 1 else t).expand(*batch, channels, length).reshape(-1, length)
    index = torch.arange(length, device=x.device)
    observed = ~torch.isnan(series)
    if bool(observed.all()):  # one host read: the common case skips the compaction
        ct, cx, observed_n = times, series, None
    else:
        series = _fill_linear(series.unsqueeze(-1), times).squeeze(-1)  # ends filled (inner ones ignored)
        first = torch.where(observed, index, length).amin(-1, keepdim=True)
        last = torch.where(observed, index, -1).amax(-1, keepdim=True)
        observed = observed | (index < first) | (index > last)  # the filled ends count as observed
        order = torch.argsort((~observed).to(torch.int8), dim=-1, stable=True)
        ct, cx = times.gather(-1, order), series.gather(-1, order)
        observed_n = observed.sum(-1, keepdim=True)
    valid = (
        index[:-1] + 1 < observed_n
        if observed_n is not None
        else torch.ones_like(ct[:, 1:], dtype=torch.bool)
    )
    h = torch.where(valid, ct[:, 1:] - ct[:, :-1], 1.0)
    w = torch.where(valid, 1.0 / h, 0.0)
    slope = (cx[:, 1:] - cx[:, :-1]) * w
    zero = w[:, :1] * 0
    w_left, w_right = torch.cat([zero, w], -1), torch.cat([w, zero], -1)
    diag = 2 * (w_left + w_right)
    if observed_n is not None:
        diag = torch.where(index < observed_n, diag, 1.0)  # padding rows: D = 0
    rhs = 3 * (w_left * torch.cat([zero, slope], -1) + w_right * torch.cat([slope, zero], -1))
    d = _tridiagonal(w, diag, rhs)
    a, b = cx[:, :-1], d[:, :-1]
    c = (3 * slope - 2 * d[:, :-1] - d[:, 1:]) * w
    e = (d[:, :-1] + d[:, 1:] - 2 * slope) * w * w
    if observed_n is not None:  # back to the original intervals
        piece = observed.cumsum(-1)[:, :-1] - 1
        a, b, c, e = (v.gather(-1, piece) for v in (a, b, c, e))
        delta = times[:, :-1] - ct.gather(-1, piece)
        a = a + delta * (b + delta * (c + delta * e))
        b = b + delta * (2 * c + 3 * delta * e)
        c = c + 3 * delta * e
    coeffs = torch.stack([a, b, c, e], dim=-1)  # [M, time - 1, 4]
    return coeffs.reshape(*batch, channels, length - 1, 4).movedim(-3, -1)


def _tridiagonal(off: torch.Tensor, diag: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """The solution of the symmetric tridiagonal systems ``[M, n]`` (off-diagonal ``off``
    ``[M, n - 1]``) by the Thomas algorithm, without in-place writes (differentiable)."""
    n = diag.shape[-1]
    upper: list[torch.Tensor] = []
    forward: list[torch.Tensor] = []
    pivot = diag[:, 0]
    for i in range(n):
        if i:
            pivot = diag[:, i] - off[:, i - 1] * upper[i - 1]
            forward.append((rhs[:, i] - off[:, i - 1] * forward[i - 1]) / pivot)
        else:
            forward.append(rhs[:, 0] / pivot)
        if i < n - 1:
            upper.append(off[:, i] / pivot)
    out = [forward[-1]]
    for i in range(n - 2, -1, -1):
        out.append(forward[i] - upper[i] * out[-1])
    return torch.stack(out[::-1], dim=-1)
