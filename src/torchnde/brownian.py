r"""Brownian motion you can query: the noise that drives a stochastic differential equation.

A Brownian motion :math:`W` on :math:`[t_0, t_1]` with values of shape ``shape`` is asked for
increments :math:`W(s, t) = W(t) - W(s)` over any interval, and (for the strong order 1.5
solvers) its *space-time Lévy area*

.. math:: H(s, t) = \frac{1}{t - s}\int_s^t \Big(W(s, r) - \frac{r - s}{t - s}\,W(s, t)\Big)\,dr,
          \qquad H \sim \mathcal N\big(0, \tfrac{t-s}{12}\big) \text{ independent of } W(s, t),

from which :math:`I_{(1,0)} = \int_s^t W(s, r)\,dr = (t - s)\,(W(s, t)/2 + H)`. Both objects
below store the path as point values :math:`(W(\tau), A(\tau))` with
:math:`A(\tau) = \int_{t_0}^\tau W(r)\,dr`, so any interval's :math:`(W, H)` follows exactly:
:math:`A(s, t) = A(t) - A(s) - (t - s)W(s)`, :math:`H = A(s,t)/(t-s) - W(s,t)/2`. A query
backwards in time (``s > t``) returns :math:`(-W(t, s), H(t, s))`: the time-reversed path has
the negated increment and the same space-time Lévy area, which is what a backward (adjoint)
solve on the same path needs.

- :class:`BrownianInterval` (Kidger, Foster, Li & Lyons 2021, "Efficient and accurate gradients
  for neural SDEs", section 4) is a binary tree of intervals refined by Brownian bridges. Here the
  tree is dyadic down to the leaves of the grid :math:`t_0 + k\,(t_1 - t_0)2^{-L}` (``tol``):
  the value at a grid point is a fixed function of the seed and the point, drawn by descending
  the tree with a seed per node, and the value at a time inside a leaf is a Brownian bridge across
  the leaf (with its Lévy area) drawn from a seed of the leaf and the time's bits. So the path is
  the same whatever the order of the queries, reproducible from ``seed``, exact in law at the grid
  and for any two times in different leaves (two times inside one leaf are each bridged from the
  leaf's ends, so their difference is not; a leaf is ``(t_1 - t_0) 2^{-20}`` long by default),
  and the tensor memory is bounded by an LRU cache of nodes and points (evicted ones are
  recomputed from their ancestors). Use it for adaptive steps, rejected steps
  (they revisit the same path) and backward solves.
- :class:`BrownianPath` stores every point it is asked for and draws a new point by extending the
  path (one Gaussian draw) or by a Brownian bridge between stored points. It is the cheap path
  for fixed steps, where queries come in order; its memory grows with the number of points and
  the path depends on the order in which new points are first asked for.

The Brownian bridge with Lévy area: given :math:`(W, H)` over an interval of length :math:`h`,
the halves :math:`(W_1, H_1)`, :math:`(W_2, H_2)` are drawn as
:math:`W_1 = W/2 + 3H/2 + \sqrt{h}/4\,Z_1`,
:math:`H_1 = H/4 - \sqrt{h}/8\,Z_1 + \sqrt{h/48}\,Z_2`, :math:`W_2 = W - W_1`,
:math:`H_2 = H/4 - \sqrt{h}/8\,Z_1 - \sqrt{h/48}\,Z_2` (Foster's midpoint formula; without
Lévy area :math:`W_1 = W/2 + \sqrt{h}/2\,Z_1`). A split at another fraction conditions the four
independent Gaussians :math:`(W_1, H_1, W_2, H_2)` on the two linear constraints that tie them to
:math:`(W, H)`.

```python
import torch, torchnde as nde
bm = nde.BrownianInterval(0.0, 1.0, (3,), dtype=torch.float64, seed=0, levy_area=True)
w = bm(0.25, 0.75)                                  # W(0.75) - W(0.25), shape (3,)
assert torch.allclose(bm(0.25, 0.5) + bm(0.5, 0.75), w)
w, h = bm.levy(0.0, 0.5)                            # needs levy_area=True
```
"""

from __future__ import annotations

import abc
import bisect
import math
import struct
from collections import OrderedDict
from typing import Any

import torch

__all__ = ["AbstractBrownian", "BrownianInterval", "BrownianPath"]

_MASK = (1 << 64) - 1


def _mix(*words: int) -> int:
    """A 63-bit seed from integers (SplitMix64's finaliser over a running combination)."""
    x = 0x9E3779B97F4A7C15
    for w in words:
        x = (x ^ (w & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & _MASK
        x ^= x >> 29
    return x >> 1


def _shape(shape: Any) -> torch.Size:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        out = torch.Size(shape)
    except TypeError as err:
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}") from err
    if any(n < 0 for n in out):
        raise ValueError(f"shape must not have negative sizes, got {tuple(out)}")
    return out


def _bits(t: float) -> int:
    """The 64 bits of a float64, as an int (a seed word for a time)."""
    return struct.unpack("<q", struct.pack("<d", t))[0]


def _seed(seed: int | None) -> int:
    if seed is None:  # from torch's global generator, so torch.manual_seed reproduces it
        return int(torch.randint(0, 2**62, ()).item())
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    return seed & _MASK


def _split(w: torch.Tensor, hh: torch.Tensor | None, z: torch.Tensor, h1: float, h2: float) -> tuple:
    """Draw the left part ``(W1, H1)`` of an interval with ``(W, H) = (w, hh)`` split into lengths
    ``h1 + h2``, from standard normals ``z`` (``[4, *shape]``; ``[1, *shape]`` without Lévy area).

    The four parts ``X = (W1, H1, W2, H2)`` are independent with variances ``d = (h1, h1/12, h2,
    h2/12)`` and satisfy ``M X = c``: ``W1 + W2 = W`` and ``(h/2) W1 + h1 H1 + h2 H2 = h H + (h1/2)
    W``. Conditioning: ``X = Z - d M^T (M d M^T)^{-1} (M Z - c)`` with ``Z ~ N(0, d)``."""
    h = h1 + h2
    if hh is None:
        return w * (h1 / h) + z[0] * math.sqrt(h1 * h2 / h), None
    d = (h1, h1 / 12, h2, h2 / 12)
    m = ((1.0, 0.0, 1.0, 0.0), (h / 2, h1, 0.0, h2))
    s11 = sum(m[0][i] ** 2 * d[i] for i in range(4))
    s12 = sum(m[0][i] * m[1][i] * d[i] for i in range(4))
    s22 = sum(m[1][i] ** 2 * d[i] for i in range(4))
    det = s11 * s22 - s12 * s12
    inv = ((s22 / det, -s12 / det), (-s12 / det, s11 / det))
    zs = [z[i] * math.sqrt(d[i]) for i in range(4)]
    r1 = zs[0] + zs[2] - w
    r2 = (h / 2) * zs[0] + h1 * zs[1] + h2 * zs[3] - (h * hh + (h1 / 2) * w)
    k1 = inv[0][0] * r1 + inv[0][1] * r2
    k2 = inv[1][0] * r1 + inv[1][1] * r2
    w1 = zs[0] - d[0] * (m[0][0] * k1 + m[1][0] * k2)
    h1_ = zs[1] - d[1] * (m[0][1] * k1 + m[1][1] * k2)
    return w1, h1_


class AbstractBrownian(abc.ABC):
    """A Brownian motion queried by interval. ``bm(s, t)`` is the increment ``W(t) - W(s)``;
    ``bm.levy(s, t)`` is ``(W(s, t), H(s, t))`` (objects built with ``levy_area=True``).

    Attributes: ``t0``, ``t1`` (the time range; ``t1`` is ``inf`` for an open-ended path),
    ``shape``, ``dtype``, ``device``, ``levy_area``, and ``any_order``: whether the path is the
    same whatever the order of the queries (adaptive solves need it; a :class:`BrownianPath`'s
    depends on the order in which new points are first asked for).
    """

    any_order: bool = True
    t0: float
    t1: float
    shape: torch.Size
    dtype: torch.dtype
    device: torch.device
    levy_area: bool

    def _init(self, shape: Any, dtype: Any, device: Any, levy_area: bool) -> None:
        self.shape = _shape(shape)
        self.dtype = torch.get_default_dtype() if dtype is None else dtype
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.device = torch.device("cpu") if device is None else torch.device(device)
        if not isinstance(levy_area, bool):
            raise TypeError(f"levy_area must be True or False, got {levy_area!r}")
        self.levy_area = levy_area  # type: ignore[misc]

    @abc.abstractmethod
    def _point(self, t: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W(t), A(t))`` with ``W(t0) = 0`` and ``A(t) = int_{t0}^t W`` (``None`` without Lévy area)."""

    def _time(self, t: Any) -> float:
        t = float(t)
        if not (self.t0 <= t <= self.t1) and not math.isclose(t, self.t0) and not math.isclose(t, self.t1):
            raise ValueError(
                f"time {t!r} is outside the Brownian motion's range [{self.t0!r}, {self.t1!r}]: "
                "build it over the whole span of the solve"
            )
        return min(max(t, self.t0), self.t1)

    def increment(self, s: Any, t: Any) -> torch.Tensor:
        """``W(t) - W(s)`` (any order of ``s`` and ``t``), shape ``self.shape``."""
        s, t = self._time(s), self._time(t)
        return self._point(t)[0] - self._point(s)[0]

    def __call__(self, s: Any, t: Any = None) -> torch.Tensor:
        """``W(t) - W(s)``; ``bm(t)`` alone is ``W(t) - W(t0)`` (torchsde's convention)."""
        if t is None:
            s, t = self.t0, s
        return self.increment(s, t)

    def levy(self, s: Any, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W(s, t), H(s, t))``: the increment and the space-time Lévy area (module docstring);
        for ``s > t`` the time-reversed interval's, ``(-W(t, s), H(t, s))``."""
        if not self.levy_area:
            raise ValueError(f"this {type(self).__name__} was built without Lévy area: pass levy_area=True")
        s, t = self._time(s), self._time(t)
        lo, hi = (s, t) if s <= t else (t, s)
        w_lo, a_lo = self._point(lo)
        w_hi, a_hi = self._point(hi)
        w = w_hi - w_lo
        dt = hi - lo
        if dt == 0:
            return w, torch.zeros_like(w)
        a = a_hi - a_lo - dt * w_lo  # type: ignore[operator]
        hh = a / dt - 0.5 * w
        return (w if s <= t else -w), hh

    def _normal(self, generator: torch.Generator, rows: int) -> torch.Tensor:
        return torch.randn((rows, *self.shape), generator=generator, dtype=self.dtype, device=self.device)

    def rows(self, index: slice) -> AbstractBrownian:
        """The motion of rows ``index`` (a slice of the first dimension, step 1): its increments
        and Lévy areas are this motion's, those rows only. An ensemble split into blocks of rows
        (:func:`torchnde.distributed.ensemble_solve`'s ``field_for_rows``) then drives every
        sample with the same noise on any number of processes: each draws the whole motion's
        values at the times it is asked for (the cost of the whole ensemble's noise, not of its
        block's) and keeps its block.

        ```python
        import torch, torchnde as nde
        bm = nde.BrownianInterval(0.0, 1.0, (6, 2), dtype=torch.float64, seed=3)
        block = bm.rows(slice(2, 5))
        assert torch.equal(block(0.2, 0.7), bm(0.2, 0.7)[2:5])
        ```
        """
        return _Rows(self, index)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(t0={self.t0}, t1={self.t1}, shape={tuple(self.shape)}, "
            f"dtype={self.dtype}, levy_area={self.levy_area})"
        )


class _Rows(AbstractBrownian):
    """A block of rows of another motion (:meth:`AbstractBrownian.rows`)."""

    def __init__(self, parent: AbstractBrownian, index: slice) -> None:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError(f"rows takes a slice of rows with step 1 (slice(start, stop)), got {index!r}")
        if len(parent.shape) == 0:
            raise ValueError("rows needs a motion with a first dimension of rows; this one is a scalar")
        start, stop, _ = index.indices(parent.shape[0])
        if stop <= start:
            raise ValueError(f"rows {index!r} of a motion with {parent.shape[0]} rows is empty")
        self.parent, self.index = parent, slice(start, stop)
        self.t0, self.t1 = parent.t0, parent.t1
        self.any_order = parent.any_order
        self._init((stop - start, *parent.shape[1:]), parent.dtype, parent.device, parent.levy_area)

    def _point(self, t: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        w, a = self.parent._point(t)
        return w[self.index], (None if a is None else a[self.index])

    def __repr__(self) -> str:
        return f"{self.parent!r}.rows(slice({self.index.start}, {self.index.stop}))"


class BrownianInterval(AbstractBrownian):
    r"""A Brownian motion on ``[t0, t1]`` queryable over any interval, in any order, exactly and
    reproducibly (see the module docstring for the construction).

    **Arguments:**

    - ``t0``, ``t1``: the time range (``t0 < t1``); queries outside it are errors.
    - ``shape``: the shape of :math:`W(t)` (for a solve: the state's shape for diagonal noise,
      ``(*y.shape[:-1], m)`` for ``m`` Brownian motions).
    - ``dtype``, ``device``: of the values (default: torch's default dtype, the CPU).
    - ``seed``: an int; ``None`` draws one from torch's global generator (``torch.manual_seed``
      reproduces it).
    - ``levy_area``: also provide the space-time Lévy area (``levy(s, t)``), which the strong
      order 1.5 solver needs.
    - ``tol``: the leaf length: the tree is dyadic down to leaves of length at most ``tol``
      (default ``(t1 - t0) * 2**-20``) and a time inside a leaf is bridged from the leaf's ends
      (module docstring). A query costs one Gaussian draw per tree level below the deepest cached
      node, plus one for the bridge, so coarser ``tol`` is faster; step sizes
      ``(t1 - t0) / 2**k`` are cheap at any ``tol``. Two query times closer than ``tol`` in one
      leaf have an increment of the right mean and not the right variance: pass a smaller
      ``tol`` for steps that small.
    - ``cache_size``: how many nodes and points are kept (least recently used evicted); the
      tensor memory is at most ``cache_size`` values of ``shape`` (two with Lévy area).

    ```python
    import torch, torchnde as nde
    bm = nde.BrownianInterval(0.0, 1.0, (2,), seed=1, levy_area=True)
    again = nde.BrownianInterval(0.0, 1.0, (2,), seed=1, levy_area=True)
    assert torch.equal(bm(0.3, 0.4), (again(0.7, 0.9), again(0.3, 0.4))[1])  # any query order
    w, h = bm.levy(0.0, 0.5)
    ```
    """

    def __init__(
        self,
        t0: float,
        t1: float,
        shape: Any,
        *,
        dtype: torch.dtype | None = None,
        device: Any = None,
        seed: int | None = None,
        levy_area: bool = False,
        tol: float | None = None,
        cache_size: int = 512,
    ):
        self.t0, self.t1 = float(t0), float(t1)
        if not (math.isfinite(self.t0) and math.isfinite(self.t1) and self.t0 < self.t1):
            raise ValueError(f"BrownianInterval needs finite t0 < t1, got t0={t0!r}, t1={t1!r}")
        self._init(shape, dtype, device, levy_area)
        span = self.t1 - self.t0
        if tol is None:
            self.levels = 20
        else:
            if not (isinstance(tol, (int, float)) and tol > 0):
                raise ValueError(f"tol must be a positive float, got {tol!r}")
            self.levels = max(0, min(60, math.ceil(math.log2(span / tol))))
        if not isinstance(cache_size, int) or cache_size < 4:
            raise ValueError(f"cache_size must be an int of at least 4, got {cache_size!r}")
        self.seed = _seed(seed)
        self.cache_size = cache_size
        self._span = span
        self._generator = torch.Generator(self.device)
        self._nodes: OrderedDict[tuple[int, int], tuple] = OrderedDict()
        self._points: OrderedDict[tuple[int, int], tuple] = OrderedDict()
        self._generator.manual_seed(_mix(self.seed, 0xB0))
        z = self._normal(self._generator, 2 if levy_area else 1)
        root_w = z[0] * math.sqrt(span)
        root_h = z[1] * math.sqrt(span / 12) if levy_area else None
        self._root = (root_w, root_h)

    @property
    def cached(self) -> int:
        """How many nodes and points the cache holds now (at most ``cache_size``)."""
        return len(self._nodes) + len(self._points)

    def _store(self, cache: OrderedDict, key: tuple[int, int], value: tuple) -> None:
        cache[key] = value
        if len(self._nodes) + len(self._points) > self.cache_size:
            (self._points if len(self._points) >= len(self._nodes) else self._nodes).popitem(last=False)

    def _node(self, level: int, index: int) -> tuple:
        """``(W, H)`` of the dyadic interval ``index`` at ``level`` (``H`` is ``None`` without
        Lévy area)."""
        if level == 0:
            return self._root
        nodes = self._nodes
        hit = nodes.get((level, index))
        if hit is not None:
            nodes.move_to_end((level, index))
            return hit
        path = []
        lv, ix = level, index
        while lv > 0 and (lv, ix) not in nodes:
            path.append((lv, ix))
            lv, ix = lv - 1, ix >> 1
        value = self._root if lv == 0 else nodes[(lv, ix)]
        gen, levy = self._generator, self.levy_area
        for lv, ix in reversed(path):
            parent = ix >> 1
            gen.manual_seed(_mix(self.seed, lv - 1, parent))
            z = self._normal(gen, 2 if levy else 1)
            h = self._span * 2.0 ** (1 - lv)  # the parent's length
            w, hh = value
            if levy:
                a = 0.25 * math.sqrt(h) * z[0]
                b = math.sqrt(h / 48) * z[1]
                w1 = 0.5 * w + 1.5 * hh + a
                base = 0.25 * hh - 0.5 * a
                left, right = (w1, base + b), (w - w1, base - b)
            else:  # w/2 + sqrt(h)/2 z, in place on the fresh draw
                w1 = z[0].mul_(0.5 * math.sqrt(h)).add_(w, alpha=0.5)
                left, right = (w1, None), (w - w1, None)
            self._store(nodes, (lv, parent * 2), left)
            self._store(nodes, (lv, parent * 2 + 1), right)
            value = left if ix % 2 == 0 else right
        return value

    def _point(self, t: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W(t), A(t))``: exact at the grid points; between them, a Brownian bridge across the
        leaf that holds ``t``, with Gaussians seeded from the leaf and the bits of ``t``."""
        levels = self.levels
        x = (t - self.t0) / self._span * 2.0**levels
        k = min(max(math.floor(x), 0), 1 << levels)
        h = self._span * 2.0**-levels  # the leaf's length
        h1 = (x - k) * h
        if k == 1 << levels or h1 <= 0.0 or h - h1 <= 0.0:
            return self._grid_point(k if h1 < 0.5 * h else min(k + 1, 1 << levels))
        key = (-1, _bits(t))
        points = self._points
        hit = points.get(key)
        if hit is not None:
            points.move_to_end(key)
            return hit
        w_k, a_k = self._grid_point(k)
        w, hh = self._node(levels, k)
        gen = self._generator
        gen.manual_seed(_mix(self.seed, 0x1EAF, levels, k, key[1]))
        w1, hh1 = _split(w, hh, self._normal(gen, 4 if self.levy_area else 1), h1, h - h1)
        value = (w_k + w1, None if hh1 is None else a_k + h1 * w_k + h1 * (hh1 + 0.5 * w1))  # type: ignore[operator]
        self._store(points, key, value)
        return value

    def _grid_point(self, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W, A)`` at the grid point ``t0 + k * span / 2**levels``."""
        levels, points = self.levels, self._points
        chain = []
        value = None
        while k:
            tz = (k & -k).bit_length() - 1
            key = (levels - tz, k >> tz)
            hit = points.get(key)
            if hit is not None:
                points.move_to_end(key)
                value = hit
                break
            chain.append(key)
            k -= 1 << tz
        if value is None:
            zero = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
            value = (zero, zero if self.levy_area else None)
        for level, index in reversed(chain):  # fold the dyadic intervals left to right
            w_l, a_l = value
            w, hh = self._node(level, index - 1)
            h = self._span * 2.0**-level
            w_new = w_l + w
            a_new = None if hh is None else a_l + h * w_l + h * (hh + 0.5 * w)  # type: ignore[operator]
            value = (w_new, a_new)
            self._store(points, (level, index), value)
        return value  # type: ignore[return-value]


class BrownianPath(AbstractBrownian):
    r"""A Brownian motion from ``t0`` on, stored at every point asked for: the cheap path for
    fixed steps (one Gaussian draw per new step). A time past the last stored point extends the
    path; a time between stored points is drawn by a Brownian bridge and stored.

    The path depends on the order in which new points are first asked for (a fixed-step solve
    asks in order), and its memory grows with the number of points; use
    :class:`BrownianInterval` for adaptive steps or bounded memory.

    **Arguments:** ``t0``; ``shape``; ``dtype``, ``device``, ``seed``, ``levy_area`` as for
    :class:`BrownianInterval`; ``t1`` (optional) bounds the queries.

    Adaptive solves refuse it (``any_order`` is false): pass a :class:`BrownianInterval`.

    ```python
    import torch, torchnde as nde
    bm = nde.BrownianPath(0.0, (4,), seed=0)
    steps = [bm(0.1 * i, 0.1 * (i + 1)) for i in range(10)]
    assert torch.allclose(sum(steps), bm(0.0, 1.0))
    ```
    """

    def __init__(
        self,
        t0: float,
        shape: Any,
        *,
        dtype: torch.dtype | None = None,
        device: Any = None,
        seed: int | None = None,
        levy_area: bool = False,
        t1: float = math.inf,
    ):
        self.any_order = False
        self.t0, self.t1 = float(t0), float(t1)
        if not (math.isfinite(self.t0) and self.t0 < self.t1):
            raise ValueError(f"BrownianPath needs a finite t0 below t1, got t0={t0!r}, t1={t1!r}")
        self._init(shape, dtype, device, levy_area)
        self.seed = _seed(seed)
        self._generator = torch.Generator(self.device)
        self._generator.manual_seed(_mix(self.seed, 0xA7))
        zero = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        self._ts: list[float] = [self.t0]
        self._values: list[tuple] = [(zero, zero if levy_area else None)]

    def __len__(self) -> int:
        """How many points are stored."""
        return len(self._ts)

    def _point(self, t: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        ts = self._ts
        if t >= ts[-1]:
            if t == ts[-1]:
                return self._values[-1]
            w_l, a_l = self._values[-1]
            h = t - ts[-1]
            z = self._normal(self._generator, 2 if self.levy_area else 1)
            w = z[0] * math.sqrt(h)
            value = (w_l + w, None)
            if self.levy_area:
                hh = z[1] * math.sqrt(h / 12)
                value = (w_l + w, a_l + h * w_l + h * (hh + 0.5 * w))
            ts.append(t)
            self._values.append(value)
            return value
        i = bisect.bisect_left(ts, t)
        if ts[i] == t:
            return self._values[i]
        (w_l, a_l), (w_r, a_r) = self._values[i - 1], self._values[i]
        t_l, t_r = ts[i - 1], ts[i]
        h, h1 = t_r - t_l, t - t_l
        w = w_r - w_l
        hh = None if a_l is None else (a_r - a_l - h * w_l) / h - 0.5 * w
        z = self._normal(self._generator, 4 if self.levy_area else 1)
        w1, hh1 = _split(w, hh, z, h1, h - h1)
        value = (w_l + w1, None if hh1 is None else a_l + h1 * w_l + h1 * (hh1 + 0.5 * w1))
        ts.insert(i, t)
        self._values.insert(i, value)
        return value
