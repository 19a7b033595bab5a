r"""Log-signatures of depth 1 to 3, over windows, and the log-ODE method for long time series.

The *signature* of a path :math:`X : [a, b] \to \mathbb{R}^C` is the sequence of its iterated
integrals :math:`S^{i_1 \dots i_k} = \int_{a < u_1 < \dots < u_k < b} dX^{i_1}_{u_1} \cdots
dX^{i_k}_{u_k}`; its logarithm in the truncated tensor algebra, the *log-signature*, holds the
same information in fewer numbers: the increment (depth 1), the Lévy areas (depth 2) and the
areas of areas (depth 3), one number per Lyndon word.

For a CDE :math:`dz = f(z)\,dX`, the log-signature of :math:`X` over a window is what the
solution over that window depends on, to the depth's order. The *log-ODE method* (Morrill,
Salvi, Kidger, Foster & Lyons, *Neural rough differential equations for long time series*,
ICML 2021) therefore steps once per window: the CDE over a window becomes the ODE

.. math:: \frac{dz}{dt} = \hat f(z)\, \frac{\log S_{r_k, r_{k+1}}(X)}{r_{k+1} - r_k},\qquad
          t \in [r_k, r_{k+1}],

with :math:`\hat f` the vector field lifted to the log-signature's basis: its columns are
:math:`f`'s columns and their Lie brackets :math:`[f_i, f_j] = Df_j\,f_i - Df_i\,f_j`, ...
(:class:`LogODETerm`). A *neural rough differential equation* learns :math:`\hat f` directly:
it is a CDE driven by the :class:`LogSignaturePath`, whose increment over each window is the
window's log-signature; a long series of length :math:`T` then costs :math:`T / \text{window}`
steps instead of :math:`T`.

Computed in torch (autograd, any device): the iterated integrals of a piecewise linear path are
exclusive cumulative sums over its segments, so a window's log-signature is a few ``einsum``\ s,
for every window and sample at once.

**Bases.** ``"words"`` (default): the coefficients of the Lyndon words in the expanded
log-signature, in order of length and then lexicographically (signatory's default mode, hence
torchcde's ``logsig_windows``); ``"brackets"``: the coefficients in the Lyndon basis of the
free Lie algebra (iisignature's ``logsig``, signatory's ``mode="brackets"``), which the log-ODE
method pairs with the Lie brackets of :math:`f`. Both coincide up to depth 2.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import Any

import torch

from .interpolation import _check_times, _check_values, _fill_linear, _PiecewisePolynomial
from .terms import CDETerm

__all__ = [
    "LogODETerm",
    "LogSignaturePath",
    "lie_brackets",
    "logsignature",
    "logsignature_channels",
    "logsignature_windows",
    "lyndon_words",
]

_BASES = ("words", "brackets")


def _check_depth(depth: Any) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 3:
        raise ValueError(f"depth must be 1, 2 or 3, got {depth!r}")
    return depth


def _check_basis(basis: Any) -> str:
    if basis not in _BASES:
        raise ValueError(f"basis must be one of {_BASES}, got {basis!r}")
    return basis


@functools.lru_cache(maxsize=64)
def lyndon_words(channels: int, depth: int) -> tuple[tuple[int, ...], ...]:
    """The Lyndon words over the letters ``0, ..., channels - 1`` of length at most ``depth``,
    by length and then lexicographically: the order of the log-signature's entries.

    ```python
    import torchnde as nde
    nde.lyndon_words(2, 3)  # ((0,), (1,), (0, 1), (0, 0, 1), (0, 1, 1))
    ```
    """
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    depth = _check_depth(depth)
    words: list[tuple[int, ...]] = []
    w = [-1]
    while w:  # Duval's algorithm: every Lyndon word up to the length, in lexicographic order
        w[-1] += 1
        words.append(tuple(w))
        m = len(w)
        while len(w) < depth:
            w.append(w[len(w) - m])
        while w and w[-1] == channels - 1:
            w.pop()
    return tuple(sorted(words, key=lambda u: (len(u), u)))


def logsignature_channels(channels: int, depth: int) -> int:
    """The number of entries of a depth-``depth`` log-signature of a ``channels``-dimensional
    path (Witt's formula): ``channels`` at depth 1, plus ``channels * (channels - 1) / 2`` at
    depth 2, plus ``(channels**3 - channels) / 3`` at depth 3."""
    return len(lyndon_words(channels, depth))


def _standard_factorisation(word: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(u, v)`` with ``word = u + v`` and ``v`` its longest proper suffix that is a Lyndon word."""
    for k in range(1, len(word)):
        v = word[k:]
        if all(v < v[j:] for j in range(1, len(v))):  # v is Lyndon (strictly below its suffixes)
            return word[:k], v
    raise ValueError(f"{word} has no standard factorisation")


def _expand(word: tuple[int, ...]) -> dict[tuple[int, ...], int]:
    """The Lyndon bracket of ``word`` expanded in the tensor algebra: ``{word: coefficient}``."""
    if len(word) == 1:
        return {word: 1}
    u, v = _standard_factorisation(word)
    pu, pv = _expand(u), _expand(v)
    out: dict[tuple[int, ...], int] = {}
    for a, ca in pu.items():
        for b, cb in pv.items():
            out[a + b] = out.get(a + b, 0) + ca * cb
            out[b + a] = out.get(b + a, 0) - ca * cb
    return out


@functools.lru_cache(maxsize=64)
def _words_to_brackets(channels: int, depth: int) -> torch.Tensor:
    """The matrix taking the "words" coefficients to the "brackets" ones (float64, ``[L, L]``):
    the inverse of ``M[w, w'] = coefficient of the word w in the expanded bracket of w'``."""
    words = lyndon_words(channels, depth)
    m = torch.zeros(len(words), len(words), dtype=torch.float64)
    for j, w in enumerate(words):
        expanded = _expand(w)
        for i, u in enumerate(words):
            m[i, j] = expanded.get(u, 0)
    return torch.linalg.inv(m)


@functools.lru_cache(maxsize=64)
def _word_index(channels: int, depth: int) -> list[torch.Tensor]:
    """For each level k, the flat indices (in ``channels**k``) of its Lyndon words."""
    words = lyndon_words(channels, depth)
    out = []
    for k in range(1, depth + 1):
        flat = [
            sum(letter * channels ** (k - 1 - j) for j, letter in enumerate(w)) for w in words if len(w) == k
        ]
        out.append(torch.tensor(flat, dtype=torch.long))
    return out


def _outer(*xs: torch.Tensor) -> torch.Tensor:
    """The tensor product of vectors ``[..., C]``, flattened: ``[..., C**len(xs)]``."""
    out = xs[0]
    for x in xs[1:]:
        out = (out.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2)
    return out


def _segment_logsignature(dx: torch.Tensor, depth: int, basis: str) -> torch.Tensor:
    """The log-signature of the piecewise linear path with increments ``dx`` ``[..., n, C]``
    (zero increments are padding): ``[..., L]``."""
    channels = dx.shape[-1]
    y = dx.cumsum(-2) - dx  # the value at each segment's start, relative to the first point
    s1 = dx.sum(-2)
    levels = [s1]
    if depth >= 2:
        mid = y + dx / 2
        c2 = mid.unsqueeze(-1) * dx.unsqueeze(-2)  # [..., n, C, C]
        s2 = c2.sum(-3)
        log2 = s2 - _outer(s1, s1).unflatten(-1, (channels, channels)) / 2
        levels.append(log2.flatten(-2))
    if depth >= 3:
        prefix = c2.cumsum(-3) - c2  # the level-2 signature up to each segment's start
        s3 = torch.einsum("...nij,...nk->...ijk", prefix, dx)
        s3 = s3 + torch.einsum("...ni,...nj,...nk->...ijk", y / 2 + dx / 6, dx, dx)
        s2f, s3f = s2.flatten(-2), s3.flatten(-3)
        log3 = s3f - (_outer(s1, s2f) + _outer(s2f, s1)) / 2 + _outer(s1, s1, s1) / 3
        levels.append(log3)
    index = _word_index(channels, depth)
    out = torch.cat([lv.index_select(-1, idx.to(lv.device)) for lv, idx in zip(levels, index)], -1)
    if basis == "brackets" and depth == 3:
        out = out @ _words_to_brackets(channels, depth).to(out).T
    return out


def logsignature(x: torch.Tensor, depth: int, basis: str = "words") -> torch.Tensor:
    r"""The log-signature of the piecewise linear path through the points ``x``
    ``[*batch, points, channels]``: ``[*batch, logsignature_channels(channels, depth)]``, in
    the order of :func:`lyndon_words`. Independent of the times the points are taken at
    (reparametrisation invariance); differentiable.

    **Arguments:**

    - ``x``: ``[*batch, points, channels]``, at least two points, no NaN.
    - ``depth``: 1, 2 or 3.
    - ``basis``: ``"words"`` (signatory's default, torchcde's layout) or ``"brackets"`` (the
      Lyndon basis, iisignature's layout).

    ```python
    import torch, torchnde as nde
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    nde.logsignature(square, depth=2)  # tensor([0., 0., 1.]): no increment, area 1
    ```
    """
    x = _check_values(x)
    depth, basis = _check_depth(depth), _check_basis(basis)
    if x.shape[-2] < 2:
        raise ValueError(f"a log-signature needs at least two points, got {x.shape[-2]}")
    if bool(torch.isnan(x).any()):
        raise ValueError(
            "x has NaN: fill missing values first (e.g. nde.forward_fill), or use logsignature_windows"
        )
    return _segment_logsignature(x[..., 1:, :] - x[..., :-1, :], depth, basis)


def _window_times(t: torch.Tensor, window: float) -> torch.Tensor:
    if (
        isinstance(window, bool)
        or not isinstance(window, (int, float))
        or not math.isfinite(window)
        or window <= 0
    ):
        raise ValueError(f"window must be a positive float (a length of time), got {window!r}")
    t0, t1 = float(t[0]), float(t[-1])
    pieces = max(1, math.ceil((t1 - t0) / window * (1 - 1e-12)))
    ends = torch.tensor([min(t0 + k * window, t1) for k in range(pieces + 1)], dtype=torch.float64)
    return ends.to(t)


def logsignature_windows(
    x: torch.Tensor, t: Any = None, *, depth: int, window: float, basis: str = "words"
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The log-signature of the linear interpolation of the data over consecutive windows
    :math:`[r_k, r_{k+1}]`, :math:`r_k = t_0 + k\,\text{window}` (the last one ending at
    :math:`t_{n-1}`): ``(logsigs [*batch, windows, L], r [windows + 1])``.

    Window ends between observations are placed on the linear interpolation; missing values
    (NaN) are filled linearly per channel first, as for :class:`~torchnde.LinearPath`.

    **Arguments:**

    - ``x``: ``[*batch, time, channels]``, NaN where missing.
    - ``t``: the shared times ``[time]`` (default ``0, ..., time - 1``).
    - ``depth``: 1, 2 or 3; ``window``: the windows' length in time; ``basis``: as
      :func:`logsignature`.

    ```python
    import torch, torchnde as nde
    x = torch.randn(4, 101, 3)
    logsigs, r = nde.logsignature_windows(x, depth=2, window=10.0)
    logsigs.shape, r  # (torch.Size([4, 10, 6]), tensor([0., 10., ..., 100.]))
    ```
    """
    x = _check_values(x)
    t = _check_times(x, t)
    depth, basis = _check_depth(depth), _check_basis(basis)
    if t.ndim != 1:
        raise ValueError(
            "logsignature_windows needs one shared time grid t [time]; mark missing values with NaN"
        )
    if bool(torch.isnan(x).any()):
        x = _fill_linear(x, t)
    r = _window_times(t, window)
    inserted = r[~torch.isin(r, t)]
    if inserted.numel():  # window ends between observations: points on the linear interpolation
        ts, order = torch.sort(torch.cat([t, inserted]))
        idx = torch.searchsorted(t[1:-1].contiguous(), inserted, right=True)
        frac = ((inserted - t[idx]) / (t[idx + 1] - t[idx])).unsqueeze(-1)
        extra = x[..., idx, :] + frac * (x[..., idx + 1, :] - x[..., idx, :])
        x = torch.cat([x, extra], dim=-2)[..., order, :]
    else:
        ts = t
    dx = x[..., 1:, :] - x[..., :-1, :]
    starts = torch.searchsorted(ts, r).tolist()  # one host read: the windows' first points
    lengths = [b - a for a, b in itertools.pairwise(starts)]
    longest = max(lengths)
    # windows padded with zero increments (which change no iterated integral): [*batch, windows, longest, C]
    pad = torch.cat([dx, torch.zeros_like(dx[..., :1, :])], dim=-2)
    sentinel = dx.shape[-2]
    gather = [[a + k if k < n else sentinel for k in range(longest)] for a, n in zip(starts[:-1], lengths)]
    segments = pad[..., torch.tensor(gather, device=x.device), :]
    return _segment_logsignature(segments, depth, basis), r


class LogSignaturePath(_PiecewisePolynomial):
    r"""The path in log-signature space of a neural rough differential equation (Morrill et
    al. 2021): piecewise linear on the windows :math:`[r_k, r_{k+1}]` of
    :func:`logsignature_windows`, its increment over each window that window's log-signature,
    starting from ``[x_0, 0, ..., 0]``. A :class:`~torchnde.CDETerm` on it, with ``f`` returning
    ``[*z.shape, L]`` (``L = logsignature_channels(channels, depth)``), is the log-ODE method with
    a learnt lifted field: steps need only land on the window ends (``jump_ts``), so
    ``dt=window`` with a fixed-step solver takes one step per window.

    **Arguments:** as :func:`logsignature_windows`.

    ```python
    import torch, torchnde as nde
    x = nde.with_time_channel(torch.randn(8, 200, 2))
    path = nde.LogSignaturePath(x, depth=2, window=20.0)
    net = torch.nn.Linear(16, 16 * path.channels)
    term = nde.CDETerm(lambda t, z: torch.tanh(net(z)).view(8, 16, path.channels), path)
    sol = nde.solve(term, torch.zeros(8, 16), torch.tensor([0.0, 199.0]), solver="rk4", dt=20.0)
    sol.stats.steps  # 10: one step per window
    ```
    """

    smoothness = 0

    def __init__(self, x: torch.Tensor, t: Any = None, *, depth: int, window: float, basis: str = "words"):
        logsigs, r = logsignature_windows(x, t, depth=depth, window=window, basis=basis)
        first = _check_values(x)[..., 0, :]
        if bool(torch.isnan(first).any()):
            first = _fill_linear(x, _check_times(x, t))[..., 0, :]
        start = torch.cat(
            [first, first.new_zeros(*first.shape[:-1], logsigs.shape[-1] - first.shape[-1])], -1
        )
        values = torch.cat([start.unsqueeze(-2), start.unsqueeze(-2) + logsigs.cumsum(-2)], dim=-2)
        slopes = logsigs / (r[1:] - r[:-1]).unsqueeze(-1)
        super().__init__(r, torch.stack([values[..., :-1, :], slopes], dim=-2))
        self.depth, self.basis, self.logsignatures, self.input_channels = depth, basis, logsigs, x.shape[-1]

    def in_basis(self, basis: str) -> LogSignaturePath:
        """The same path with its log-signatures in ``basis`` (a linear change of coordinates)."""
        basis = _check_basis(basis)
        if basis == self.basis or self.depth < 3:
            return self
        m = _words_to_brackets(self.input_channels, self.depth).to(self.coeffs)
        out = object.__new__(LogSignaturePath)
        _PiecewisePolynomial.__init__(
            out, self.times, self.coeffs @ (m.T if basis == "brackets" else m.inverse().T)
        )
        out.depth, out.basis, out.input_channels = self.depth, basis, self.input_channels
        out.logsignatures = self.logsignatures @ (m.T if basis == "brackets" else m.inverse().T)
        return out


def lie_brackets(f: Callable[[Any, torch.Tensor], torch.Tensor], channels: int, depth: int) -> Callable:
    r"""The vector field lifted to the Lyndon basis: ``g(t, z)`` returns ``[*z.shape, L]``, whose
    column for the Lyndon word :math:`w = uv` (standard factorisation) is the Lie bracket
    :math:`F_w = DF_v\,F_u - DF_u\,F_v`, with :math:`F_i` the ``i``-th column of ``f(t, z)``
    (Jacobian-vector products by forward-mode autodiff, ``torch.func.jvp``; ``f`` must treat
    ``z`` functionally, without in-place writes to it)."""
    words = lyndon_words(channels, depth)

    def lifted(t: Any, z: torch.Tensor) -> torch.Tensor:
        cache: dict[tuple[int, ...], Callable] = {}

        def field(w: tuple[int, ...]) -> Callable:
            if w in cache:
                return cache[w]
            if len(w) == 1:
                fn = functools.partial(_column, f, t, w[0])
            else:
                u, v = _standard_factorisation(w)
                fn = functools.partial(_bracket, field(u), field(v))
            cache[w] = fn
            return fn

        fz = f(t, z)
        columns = [fz[..., w[0]] if len(w) == 1 else field(w)(z) for w in words]
        return torch.stack(columns, dim=-1)

    return lifted


def _column(f: Callable, t: Any, i: int, y: torch.Tensor) -> torch.Tensor:
    return f(t, y)[..., i]


def _bracket(fu: Callable, fv: Callable, y: torch.Tensor) -> torch.Tensor:
    dv = torch.func.jvp(fv, (y,), (fu(y),))[1]
    du = torch.func.jvp(fu, (y,), (fv(y),))[1]
    return dv - du


class LogODETerm(CDETerm):
    r"""The log-ODE method for the CDE :math:`dz = f(t, z)\,dX` (Morrill et al. 2021): over each
    window of the :class:`LogSignaturePath`, the ODE :math:`dz/dt = \hat f(z)\,\lambda_k /
    (r_{k+1} - r_k)` with :math:`\lambda_k` the window's log-signature in the Lyndon basis and
    :math:`\hat f` the Lie brackets of :math:`f`'s columns (:func:`lie_brackets`). Depth 1 is
    the CDE driven by the linear interpolation of the window ends; each extra depth adds an order
    of accuracy in the window length. ``f`` should not depend on ``t`` (the log-ODE method is
    for autonomous fields; ``t`` is passed through but not bracketed).

    **Arguments:**

    - ``vector_field``: ``f(t, z)`` returning ``[*z.shape, channels]`` (channels of the data).
    - ``path``: a :class:`LogSignaturePath` of the data (either basis).

    ```python
    import torch, torchnde as nde
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    x = torch.stack([t, torch.sin(6 * t)], -1)  # [time, 2]
    A = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    f = lambda t, z: torch.stack([torch.tanh(z), A @ z], -1)  # [2, channels]
    path = nde.LogSignaturePath(x, t, depth=2, window=0.1)
    sol = nde.solve(nde.LogODETerm(f, path), torch.ones(2, dtype=torch.float64), t[[0, -1]], solver="rk4", dt=0.1)
    ```
    """

    kind = "CDE"

    def __init__(self, vector_field: Callable[[Any, Any], Any], path: LogSignaturePath):
        if not isinstance(path, LogSignaturePath):
            raise TypeError(
                f"LogODETerm needs a LogSignaturePath, got {type(path).__name__}: build it with "
                "nde.LogSignaturePath(x, t, depth=..., window=...)"
            )
        if not callable(vector_field):
            raise TypeError(f"LogODETerm needs a callable f(t, z), got {type(vector_field).__name__}")
        lifted = lie_brackets(vector_field, path.input_channels, path.depth)
        super().__init__(lifted, path.in_basis("brackets"))
        self.base_field = vector_field

    @property
    def owner(self) -> Any:
        return self.lower()
