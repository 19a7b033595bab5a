r"""Equation discovery: sparse regression (pysindy's STLSQ) on a learned term, then sympy and torch.

The pipeline of the universal differential equations paper (Rackauckas et al. 2020): after a
:class:`~torchnde.models.universal.UniversalODE` is trained, sample its network
:math:`U_\theta` on states :math:`y_k` (along the fitted trajectory), and find a sparse
:math:`\Xi` with :math:`U_\theta(y_k) \approx \Theta(y_k)\,\Xi` over a candidate library
:math:`\Theta` (sequentially thresholded least squares, STLSQ, of Brunton et al. 2016). The
threshold is not picked by hand: a sweep over thresholds gives a Pareto front of
(number of terms, residual) per equation, and a criterion picks one point.

Because the network is only an approximation of the missing term, residual-based criteria on
its samples cannot tell a network error from a real term. :meth:`Discovery.refine` therefore
also scores candidate structures on the *data*: each candidate from the sweep is put into the
hybrid model (known part + sparse terms), its coefficients (and optionally the initial state)
are refitted to the observed trajectory, and an information criterion on the trajectory
residual (BIC by default) chooses; a backward pass then drops terms the data do not support
(Mangan, Kutz, Brunton, Proctor, *Model selection for dynamical systems via sparse regression
and information criteria*, Proc. R. Soc. A 473, 2017, arXiv 1701.01773).

- C. Rackauckas et al., *Universal Differential Equations for Scientific Machine Learning*,
  arXiv 2001.04385, 2020.
- S. L. Brunton, J. L. Proctor, J. N. Kutz, *Discovering governing equations from data by sparse
  identification of nonlinear dynamical systems*, PNAS 113 (15), 2016, arXiv 1509.03580.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from .._names import did_you_mean
from .._optional import require
from ..models.universal import UniversalODE
from .library import Library, _check_names, _sympy, format_terms

__all__ = ["CRITERIA", "Discovery", "Refit", "SparseTerms", "discover"]

CRITERIA = ("pareto", "aic", "aicc", "bic")
# Residuals below this fraction of the target's norm count as exact (numerical round-off).
_EXACT = 1e-10
_BIG = 1e30


def _pysindy() -> Any:
    return require("pysindy", extra="discovery", purpose="torchnde.discovery's sparse regression")


def _information(rss: float, k: int, n: int, norm2: float, criterion: str) -> float:
    r"""``n log(RSS/n)`` plus the criterion's penalty for ``k`` parameters."""
    rss = max(float(rss), (_EXACT**2) * max(norm2, 1e-300))
    base = n * math.log(rss / n)
    if criterion == "aic":
        return base + 2 * k
    if criterion == "aicc":
        return base + 2 * k + (2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.inf)
    if criterion == "bic":
        return base + k * math.log(n)
    raise ValueError(f"unknown information criterion {criterion!r}; valid: aic, aicc, bic")


def _pareto_pick(ks: np.ndarray, errs: np.ndarray, n_terms: int) -> int:
    r"""The sweep point nearest the ideal corner of the (terms, log residual) plane.

    Terms are scaled by the library size, :math:`\tilde k = k / p`, and the relative residual
    on a log scale from exact (:math:`10^{-10}`, round-off) to nothing explained (1),
    :math:`\tilde e = 1 - \log_{10} e / \log_{10} 10^{-10}`; the non-empty model minimising
    :math:`\tilde k^2 + \tilde e^2` wins (ties: fewer terms, then the first in the sweep).
    """
    idx = [i for i in range(len(ks)) if ks[i] > 0]
    if not idx:
        return 0
    k = ks[idx].astype(float) / max(n_terms, 1)
    e = np.clip(np.log10(np.maximum(errs[idx], _EXACT)) / math.log10(_EXACT), 0.0, 1.0)
    score = k**2 + (1.0 - e) ** 2
    best = min(range(len(idx)), key=lambda j: (round(float(score[j]), 12), ks[idx[j]], j))
    return idx[best]


def _library_from(library: Library | str, degree: int, n_states: int, names: Sequence[str] | None) -> Library:
    if isinstance(library, Library):
        if library.n_states != n_states:
            raise ValueError(
                f"the library is over {library.n_states} states but the states have {n_states} columns"
            )
        if names is not None and list(names) != library.state_names:
            raise ValueError(
                f"feature_names {list(names)} differ from the library's states {library.state_names}"
            )
        return library
    if not isinstance(library, str):
        raise TypeError(f"library must be a Library or a name such as 'polynomial+sin', got {library!r}")
    names = _check_names(names, n_states)
    parts = [p.strip().lower() for p in library.split("+")]
    lib: Library | None = None
    for part in parts:
        if part in ("polynomial", "poly"):
            piece = Library.polynomial(n_states, degree, names=names)
        elif part == "sin":
            piece = Library.trigonometric(n_states, cos=False, names=names)
        elif part == "cos":
            piece = Library.trigonometric(n_states, sin=False, names=names)
        elif part in ("trig", "trigonometric", "fourier"):
            piece = Library.trigonometric(n_states, names=names)
        else:
            raise ValueError(
                f"unknown library part {part!r} in {library!r}; valid parts: polynomial, sin, cos, trig "
                "(joined with '+'), or pass a Library."
                f"{did_you_mean(part, ('polynomial', 'sin', 'cos', 'trig', 'trigonometric', 'fourier'))}"
            )
        lib = piece if lib is None else lib + piece
    assert lib is not None
    return lib


def _as_numpy(x: Any) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _targets(fn: Any, states: torch.Tensor | np.ndarray) -> np.ndarray:
    if torch.is_tensor(fn) or isinstance(fn, np.ndarray):
        return _as_numpy(fn)
    if not callable(fn):
        raise TypeError(f"fn must be a UniversalODE, a callable g(y) or a tensor of targets, got {fn!r}")
    y = states if torch.is_tensor(states) else torch.as_tensor(np.asarray(states, dtype=np.float64))
    with torch.no_grad():
        if isinstance(fn, UniversalODE):
            out = fn.learned_term(y.to(_param_dtype(fn.network_parameters(), y.dtype)))
        else:
            if isinstance(fn, nn.Module):
                y = y.to(_param_dtype(fn.parameters(), y.dtype))
            out = fn(y)
    return _as_numpy(out)


def _param_dtype(params: Any, default: torch.dtype) -> torch.dtype:
    """The dtype of the first floating parameter (the states are cast to it), else ``default``."""
    for p in params:
        if p.is_floating_point():
            return p.dtype
    return default


# -- the torch side -------------------------------------------------------------------------------


class SparseTerms(nn.Module):
    r"""The discovered terms as a torch module: :math:`g_i(y) = \sum_{j \in S_i} \xi_{ij}\,\theta_j(y)`.

    Only the active coefficients :math:`\xi_{ij}` (support :math:`S_i`) are parameters
    (trainable by default), so refitting keeps the structure. ``forward(y)`` maps ``[..., n]``
    to ``[..., m]``; :attr:`equations` gives the current sympy expressions. The torch side of a
    SINDy model (Brunton, Proctor, Kutz, PNAS 2016, arXiv 1509.03580), used inside the hybrid
    models of Rackauckas et al. (arXiv 2001.04385, 2020).

    ```python
    import numpy as np, torch
    from torchnde.discovery import Library, SparseTerms
    lib = Library.polynomial(2, degree=2, names=["x", "y"])
    xi = np.zeros((2, len(lib))); xi[0, 4], xi[1, 4] = -0.9, 0.8        # the x*y column
    g = SparseTerms(lib, xi, dtype=torch.float64)
    g(torch.tensor([[1.0, 2.0]], dtype=torch.float64))                   # tensor([[-1.8000, 1.6000]])
    ```
    """

    def __init__(
        self,
        library: Library,
        coefficients: np.ndarray | torch.Tensor,
        *,
        trainable: bool = True,
        dtype: torch.dtype | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        xi = _as_numpy(coefficients)
        if xi.ndim != 2 or xi.shape[1] != len(library):
            raise ValueError(
                f"coefficients must be [m, {len(library)}] for this library, got shape {xi.shape}"
            )
        if not np.all(np.isfinite(xi)):
            raise ValueError("coefficients must be finite")
        dtype = dtype or torch.get_default_dtype()
        self.library = library
        self.support: tuple[tuple[int, ...], ...] = tuple(
            tuple(int(j) for j in np.flatnonzero(row)) for row in xi
        )
        self.labels = list(labels) if labels is not None else [f"g{i}" for i in range(xi.shape[0])]
        self.coefficients = nn.ParameterList(
            nn.Parameter(torch.tensor(xi[i, list(s)], dtype=dtype), requires_grad=trainable)
            for i, s in enumerate(self.support)
        )
        self._terms = library.torch_terms()
        self._active = sorted({j for s in self.support for j in s})

    @property
    def n_outputs(self) -> int:
        """The number of equations ``m``."""
        return len(self.support)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """:math:`g(y)` for ``y`` of shape ``[..., n]``: ``[..., m]``."""
        feats = {j: self._terms[j](y) for j in self._active}
        outs = []
        for s, c in zip(self.support, self.coefficients):
            if not s:
                outs.append(torch.zeros(y.shape[:-1], dtype=y.dtype, device=y.device))
                continue
            c = c.to(y.dtype)
            total = c[0] * feats[s[0]]
            for k, j in enumerate(s[1:], start=1):
                total = total + c[k] * feats[j]
            outs.append(total)
        return torch.stack(outs, dim=-1)

    def coefficient_matrix(self) -> torch.Tensor:
        """The dense coefficient matrix ``[m, p]`` (zeros off the support), detached."""
        dtype = self.coefficients[0].dtype if len(self.coefficients) else torch.float64
        out = torch.zeros(self.n_outputs, len(self.library), dtype=dtype)
        for i, (s, c) in enumerate(zip(self.support, self.coefficients)):
            if s:
                out[i, list(s)] = c.detach()
        return out

    @property
    def equations(self) -> list[Any]:
        """The current expressions as sympy (one per output)."""
        return _sympy_equations(self.library, self.coefficient_matrix().numpy())

    def __str__(self) -> str:
        xi = self.coefficient_matrix().numpy()
        return "\n".join(
            f"{lab} = {format_terms(xi[i], self.library.terms)}" for i, lab in enumerate(self.labels)
        )

    def extra_repr(self) -> str:
        return "; ".join(str(self).splitlines())


def _sympy_equations(library: Library, xi: np.ndarray) -> list[Any]:
    sp = _sympy()

    out = []
    for row in xi:
        expr = sp.Integer(0)
        for c, t in zip(row, library.terms):
            if c != 0:
                expr = expr + sp.Float(float(c), 15) * t
        out.append(expr)
    return out


# -- results ----------------------------------------------------------------------------------------


@dataclass
class Refit:
    r"""A discovered structure refitted to trajectory data.

    - ``discovery``: the :class:`Discovery` with the refitted coefficients.
    - ``model``: the hybrid :class:`~torchnde.models.universal.UniversalODE` (known part +
      :class:`SparseTerms`) with those coefficients; ``model(y0, t)`` simulates it.
    - ``y0``: the initial state used (fitted when ``fit_y0``).
    - ``sse``: the trajectory's sum of squared errors; ``n`` the number of data values.
    - ``score``: the information criterion ``criterion`` of this fit.
    - ``candidates``: for :meth:`Discovery.refine`, every structure scored (terms, SSE, score).

    The score is :math:`n \log(\mathrm{SSE}/n)` plus the criterion's penalty (Mangan et al.,
    Proc. R. Soc. A 2017, arXiv 1701.01773).

    ```python
    import torch
    from torchnde.datasets.systems import lotka_volterra
    from torchnde.discovery import discover
    t, clean, noisy, _ = lotka_volterra(seed=0)
    def known(t, u, alpha, delta):
        return torch.stack([alpha * u[..., 0], -delta * u[..., 1]], -1)
    xy = clean[:, 0] * clean[:, 1]
    result = discover(torch.stack([-0.9 * xy, 0.8 * xy], -1), clean, feature_names=["x", "y"])
    fit = result.refit(known, noisy[0], t, noisy, params={"alpha": 1.3, "delta": 1.8})  # see Discovery.refit
    fit.discovery, fit.sse, fit.model(fit.y0, t)
    ```
    """

    discovery: Discovery
    model: UniversalODE
    y0: torch.Tensor
    sse: float
    n: int
    score: float
    criterion: str
    candidates: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Discovery:
    r"""The result of :func:`discover`: the chosen sparse equations and the whole threshold sweep.

    - ``equations``: one sympy expression per output; ``str(result)`` prints them.
    - ``coefficients``: ``[m, p]`` numpy (zeros off the support); ``library``: the terms.
    - the sweep: ``thresholds`` and ``alphas`` (``[T]``, the STLSQ threshold and ridge of each
      point), ``sweep`` (``[T, m, p]`` coefficients), ``sweep_error`` (``[T, m]`` relative
      residuals), ``selected`` (the sweep index chosen per output).
    - :meth:`to_torch` gives the terms as a module with trainable coefficients; :meth:`refit`
      fits the coefficients of the hybrid model (known part + these terms) to trajectory data;
      :meth:`refine` also chooses the structure on the data.

    Brunton, Proctor, Kutz, PNAS 2016, arXiv 1509.03580; Rackauckas et al., arXiv 2001.04385.

    ```python
    import torch
    from torchnde.discovery import discover
    states = torch.rand(100, 2, dtype=torch.float64) * 3
    g = lambda y: torch.stack([-0.9 * y[:, 0] * y[:, 1], torch.sin(y[:, 1])], -1)
    result = discover(g, states, library="polynomial+sin", degree=5, feature_names=["x", "y"])
    print(result); result.support(0); result.coefficient(0, "x*y")
    module = result.to_torch()
    ```
    """

    library: Library
    coefficients: np.ndarray
    labels: list[str]
    thresholds: np.ndarray
    alphas: np.ndarray
    sweep: np.ndarray
    sweep_error: np.ndarray
    selected: list[int]
    criterion: str
    states: np.ndarray
    targets: np.ndarray

    @property
    def n_samples(self) -> int:
        """The number of sampled states the regression used."""
        return self.states.shape[0]

    # -- views ----------------------------------------------------------------------------------

    @property
    def state_names(self) -> list[str]:
        """The state variables' names."""
        return self.library.state_names

    @property
    def equations(self) -> list[Any]:
        """The discovered expressions (sympy), one per output."""
        return _sympy_equations(self.library, self.coefficients)

    def support(self, i: int) -> list[str]:
        """The names of the terms kept in output ``i``."""
        return [self.library.names[j] for j in np.flatnonzero(self.coefficients[i])]

    def coefficient(self, i: int, term: Any) -> float:
        """The coefficient of ``term`` (a name such as ``"x*y"`` or a sympy expression) in output ``i``."""
        sp = _sympy()

        local = dict(zip(self.library.state_names, self.library.symbols))
        expr = sp.sympify(term, locals=local) if isinstance(term, str) else sp.sympify(term)
        for j, t in enumerate(self.library.terms):
            if sp.simplify(t - expr) == 0:
                return float(self.coefficients[i, j])
        raise KeyError(f"{term!r} is not a library term; terms: {self.library.names}")

    def pareto_front(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(terms, relative residual)`` of every sweep point for output ``i`` (for plotting)."""
        return (self.sweep[:, i] != 0).sum(axis=1), self.sweep_error[:, i]

    def __str__(self) -> str:
        return "\n".join(
            f"{lab} = {format_terms(self.coefficients[i], self.library.terms)}"
            for i, lab in enumerate(self.labels)
        )

    def to_torch(self, *, trainable: bool = True, dtype: torch.dtype | None = None) -> SparseTerms:
        """The equations as a :class:`SparseTerms` module (active coefficients as parameters)."""
        return SparseTerms(
            self.library, self.coefficients, trainable=trainable, dtype=dtype, labels=self.labels
        )

    # -- refits on data -------------------------------------------------------------------------

    def refit(
        self,
        known: Callable[..., Any] | None,
        y0: torch.Tensor,
        t_eval: torch.Tensor,
        data: torch.Tensor,
        *,
        params: Mapping[str, float] | None = None,
        fit_y0: bool = True,
        steps: int = 30,
        criterion: str = "bic",
        **solve_options: Any,
    ) -> Refit:
        r"""Fit this structure's coefficients (and ``y0``) to a trajectory: the hybrid model
        :math:`\dot y = k(t, y; p) + \Theta(y)\,\Xi` with the support of :math:`\Xi` fixed.

        Minimises :math:`\sum_k \|\hat y(t_k) - y_k\|^2` with L-BFGS (strong Wolfe, at most
        ``steps`` iterations) from the current coefficients; ``known(t, y, **params)`` is the
        fixed mechanistic part (or ``None``). ``solve_options`` go to the model (defaults
        ``solver="tsit5", rtol=1e-6, atol=1e-8, max_steps=500, throw=False``: a candidate that
        diverges or turns stiff scores ``inf``).

        ```python
        import torch
        from torchnde.datasets.systems import lotka_volterra
        from torchnde.discovery import discover
        t, clean, noisy, _ = lotka_volterra(seed=0)
        def known(t, u, alpha, delta):
            return torch.stack([alpha * u[..., 0], -delta * u[..., 1]], -1)
        xy = clean[:, 0] * clean[:, 1]
        result = discover(torch.stack([-0.8 * xy, 0.9 * xy], -1), clean, feature_names=["x", "y"])
        fit = result.refit(known, noisy[0], t, noisy, params={"alpha": 1.3, "delta": 1.8})
        print(fit.discovery)                     # coefficients near -0.9 and 0.8
        fit.model(fit.y0, torch.linspace(0, 20, 201))
        ```
        """
        return _fit_structure(
            self, self.coefficients, known, y0, t_eval, data, params, fit_y0, steps, criterion, solve_options
        )

    def refine(
        self,
        known: Callable[..., Any] | None,
        y0: torch.Tensor,
        t_eval: torch.Tensor,
        data: torch.Tensor,
        *,
        params: Mapping[str, float] | None = None,
        criterion: str = "bic",
        max_terms: int = 3,
        singles: int = 3,
        passes: int = 1,
        prune: bool = True,
        window: float = 2.0,
        tiebreak: str = "score",
        fit_y0: bool = True,
        steps: int = 30,
        polish: int = 100,
        progress: Callable[[int, int], None] | None = None,
        **solve_options: Any,
    ) -> Refit:
        r"""Choose the structure on the data among the sweep's candidates, then prune (Mangan et al. 2017).

        1. Candidate structures for output ``i``, all from regressions on the sampled targets:
           the empty one; every distinct support of the threshold sweep with at most
           ``max_terms`` terms; the greedy forward path of pysindy's FROLS (forward regression
           orthogonal least squares) with 1 to ``max_terms`` terms; and the ``singles`` best
           one-term least-squares fits.
        2. Start from FROLS's one-term model in every output; for each output in turn
           (``passes`` times) try each candidate with the other outputs fixed, :meth:`refit` the
           hybrid model to the data and keep the one with the lowest ``criterion`` (``"bic"``:
           :math:`n \log(\mathrm{SSE}/n) + k \log n`; ``"aic"``, ``"aicc"``).
        3. ``prune``: drop, one at a time, the term whose removal lowers the criterion most,
           until none does.
        4. Occam's window: among all structures scored, take the one with the fewest terms whose
           criterion is within ``window`` of the best (2 is the usual "substantial support"
           margin of Burnham and Anderson, *Model Selection and Multimodel Inference*, 2002, used
           by Mangan et al.); ``window=0`` keeps the minimum. Among those with the fewest
           terms, ``tiebreak="score"`` takes the lowest criterion; ``tiebreak="targets"`` takes
           the structure that best explains the regression targets (the smallest relative
           least-squares residual :math:`\sum_i \|g_i - \Theta_{S_i} c_i\|^2 / \|g_i\|^2` over
           the outputs, :math:`S_i` its support): where the data cannot tell structures apart,
           the densely sampled targets (a UDE network's output along the whole trajectory) decide.
        5. ``polish``: refit the winner with up to ``polish`` L-BFGS iterations at tight
           tolerances (``rtol=1e-8, atol=1e-10``); candidates are scored with ``steps``
           iterations at ``rtol=1e-5, atol=1e-7, max_steps=200`` unless ``solve_options`` say
           otherwise (the scores must be converged fits: information criteria compare SSEs a
           few % apart; a candidate that needs more steps is diverging or stiff and scores
           ``inf``).

        Returns the final :class:`Refit`; its ``candidates`` lists every structure scored.
        ``progress(done, planned)``, if given, is called after each structure is scored (and
        after the polish): ``planned`` counts the candidates, the polish, and the pruning
        trials once each round of them is known.

        Mangan, Kutz, Brunton, Proctor, *Model selection for dynamical systems via sparse
        regression and information criteria*, Proc. R. Soc. A 473, 2017, arXiv 1701.01773.

        ```python
        import torch
        from torchnde.datasets.systems import lotka_volterra
        from torchnde.discovery import discover
        t, clean, noisy, _ = lotka_volterra(seed=0)
        def known(t, u, alpha, delta):
            return torch.stack([alpha * u[..., 0], -delta * u[..., 1]], -1)
        xy = clean[:, 0] * clean[:, 1]
        result = discover(torch.stack([-0.8 * xy, 0.9 * xy], -1), clean, feature_names=["x", "y"])
        # up to 2 terms per output, 1 single-term candidate: a quick sweep (defaults: 3 and 3)
        fit = result.refine(known, noisy[0], t, noisy, params={"alpha": 1.3, "delta": 1.8}, max_terms=2, singles=1)
        print(fit.discovery)                     # dx/dt = -0.8578 x·y, dy/dt = 0.8483 x·y
        ```
        """
        if criterion not in ("aic", "aicc", "bic"):
            raise ValueError(
                f"refine's criterion must be 'aic', 'aicc' or 'bic', got {criterion!r}."
                f"{did_you_mean(criterion, ('aic', 'aicc', 'bic'))}"
            )
        if int(max_terms) != max_terms or max_terms < 1:
            raise ValueError(f"max_terms must be a positive integer, got {max_terms!r}")
        for name, value in (("singles", singles), ("passes", passes), ("polish", polish)):
            if int(value) != value or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not (window >= 0 and math.isfinite(window)):
            raise ValueError(f"window must be a finite number >= 0, got {window!r}")
        if tiebreak not in ("score", "targets"):
            raise ValueError(
                f"refine's tiebreak must be 'score' or 'targets', got {tiebreak!r}."
                f"{did_you_mean(tiebreak, ('score', 'targets'))}"
            )
        cands, current = self._candidates(int(max_terms), int(singles))
        m = current.shape[0]
        scoring = {"rtol": 1e-5, "atol": 1e-7, "max_steps": 200}
        scoring.update(solve_options)
        cache: dict[tuple[tuple[int, ...], ...], Refit] = {}
        log: list[dict[str, Any]] = []
        count = {"done": 0, "planned": 1 + int(passes) * sum(len(c) for c in cands) + (1 if polish else 0)}

        def tick() -> None:
            count["done"] += 1
            count["planned"] = max(count["planned"], count["done"])
            if progress is not None:
                progress(count["done"], count["planned"])

        def support_of(xi: np.ndarray) -> tuple[tuple[int, ...], ...]:
            return tuple(tuple(int(j) for j in np.flatnonzero(row)) for row in xi)

        def evaluate(xi: np.ndarray) -> Refit:
            key = support_of(xi)
            if key not in cache:
                fit = _fit_structure(
                    self, xi, known, y0, t_eval, data, params, fit_y0, steps, criterion, scoring
                )
                cache[key] = fit
                log.append(
                    {
                        "terms": [[self.library.names[j] for j in s] for s in key],
                        "sse": fit.sse,
                        "score": fit.score,
                    }
                )
            tick()
            return cache[key]

        best_fit = evaluate(current)
        for _ in range(int(passes)):
            for i in range(m):
                for start in cands[i].values():
                    trial = best_fit.discovery.coefficients.copy()
                    trial[i] = start
                    fit = evaluate(trial)
                    if fit.score < best_fit.score:
                        best_fit = fit
        while prune:
            xi = best_fit.discovery.coefficients
            trials = []
            count["planned"] += int(np.count_nonzero(xi))
            for i in range(m):
                for j in np.flatnonzero(xi[i]):
                    trial = xi.copy()
                    trial[i, j] = 0.0
                    trials.append(evaluate(trial))
            if not trials:
                break
            challenger = min(trials, key=lambda f: f.score)
            if challenger.score < best_fit.score:
                best_fit = challenger
            else:
                break
        if window > 0:
            best_score = best_fit.score
            near = [f for f in cache.values() if f.score <= best_score + window]
            if tiebreak == "targets":
                residual = self._target_residual
                best_fit = min(
                    near,
                    key=lambda f: (
                        int(np.count_nonzero(f.discovery.coefficients)),
                        residual(f.discovery.coefficients),
                        f.score,
                    ),
                )
            else:
                best_fit = min(near, key=lambda f: (int(np.count_nonzero(f.discovery.coefficients)), f.score))
        if polish:
            tight = {"rtol": 1e-8, "atol": 1e-10}
            tight.update({k: v for k, v in solve_options.items() if k not in ("rtol", "atol")})
            start = best_fit.y0 if fit_y0 else y0
            best_fit = _fit_structure(
                best_fit.discovery,
                best_fit.discovery.coefficients,
                known,
                start,
                t_eval,
                data,
                params,
                fit_y0,
                int(polish),
                criterion,
                tight,
            )
            tick()
        best_fit.candidates = log
        return best_fit

    def _target_residual(self, xi: np.ndarray) -> float:
        """Summed relative least-squares residual of the regression targets on the support of
        ``xi`` (each output refitted on its own columns of the library)."""
        theta = np.asarray(self.library.evaluate(self.states), dtype=np.float64)
        total = 0.0
        for i in range(xi.shape[0]):
            g = np.asarray(self.targets[:, i], dtype=np.float64)
            norm = float(g @ g)
            if norm == 0.0:
                continue
            cols = np.flatnonzero(xi[i])
            resid = g
            if len(cols):
                c, *_ = np.linalg.lstsq(theta[:, cols], g, rcond=None)
                resid = g - theta[:, cols] @ c
            total += float(resid @ resid) / norm
        return total

    def _candidates(
        self, max_terms: int, singles: int
    ) -> tuple[list[dict[tuple[int, ...], np.ndarray]], np.ndarray]:
        """Candidate supports per output (with starting coefficients), and the starting structure."""
        ps = _pysindy()
        theta = self.library.evaluate(self.states)
        m, p = self.coefficients.shape
        cands: list[dict[tuple[int, ...], np.ndarray]] = []
        start = np.zeros((m, p))
        for i in range(m):
            g = self.targets[:, i]
            found: dict[tuple[int, ...], np.ndarray] = {(): np.zeros(p)}

            def add(row: np.ndarray, found: dict[tuple[int, ...], np.ndarray] = found) -> None:
                s = tuple(int(j) for j in np.flatnonzero(row))
                if 0 < len(s) <= max_terms and s not in found:
                    found[s] = np.asarray(row, dtype=np.float64).copy()

            if np.any(g != 0):
                frols = ps.FROLS(normalize_columns=True, max_iter=max_terms + 1, alpha=1e-8)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    frols.fit(theta, g[:, None])
                path = [np.asarray(h, dtype=np.float64).reshape(-1, p)[0] for h in frols.history_]
                for row in path:
                    add(row)
                ones = [row for row in path if np.count_nonzero(row) == 1]
                if ones:
                    start[i] = ones[0]
                col2 = (theta**2).sum(axis=0)
                c = (theta * g[:, None]).sum(axis=0) / col2
                resid = ((g[:, None] - theta * c[None, :]) ** 2).sum(axis=0)
                for j in np.argsort(resid, kind="stable")[:singles]:
                    row = np.zeros(p)
                    row[j] = c[j]
                    add(row)
            for t in np.argsort(self.sweep_error[:, i], kind="stable"):
                add(self.sweep[t, i])
            cands.append(found)
        return cands, start


def _fit_structure(
    base: Discovery,
    xi: np.ndarray,
    known: Callable[..., Any] | None,
    y0: torch.Tensor,
    t_eval: torch.Tensor,
    data: torch.Tensor,
    params: Mapping[str, float] | None,
    fit_y0: bool,
    steps: int,
    criterion: str,
    solve_options: Mapping[str, Any],
) -> Refit:
    if not torch.is_tensor(data) or not data.is_floating_point():
        raise TypeError("data must be a floating tensor [len(t_eval), n]")
    if not torch.is_tensor(y0) or y0.shape != data.shape[1:]:
        raise ValueError(
            f"y0 must be a tensor of shape {tuple(data.shape[1:])}, got {getattr(y0, 'shape', y0)}"
        )
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    _information(1.0, 1, 10, 1.0, criterion)  # validates the name
    dtype = data.dtype
    t = torch.as_tensor(t_eval, dtype=dtype)
    if t.ndim != 1 or len(t) != data.shape[0]:
        raise ValueError(
            f"t_eval must be 1-D with one time per data row ({data.shape[0]}), got shape {tuple(t.shape)}"
        )
    options = {"solver": "tsit5", "rtol": 1e-6, "atol": 1e-8, "max_steps": 500, "throw": False}
    options.update(solve_options)
    terms = SparseTerms(base.library, xi, dtype=dtype, labels=base.labels)
    model = UniversalODE(known, terms, params=dict(params or {}), trainable=False, **options)
    start = nn.Parameter(y0.detach().clone().to(dtype), requires_grad=fit_y0)
    trainable = [c for c in terms.coefficients if c.numel()] + ([start] if fit_y0 else [])
    best: dict[str, Any] = {"sse": math.inf, "state": None}

    def objective() -> torch.Tensor:
        pred = model(start, t)
        return (pred - data).pow(2).sum()

    def remember(value: float) -> None:
        if value < best["sse"]:
            best["sse"] = value
            best["state"] = [p.detach().clone() for p in trainable]

    if trainable and steps > 0:
        opt = torch.optim.LBFGS(
            trainable,
            lr=1.0,
            max_iter=int(steps),
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-9,
            tolerance_change=1e-12 * float(data.pow(2).sum()),  # stop once the SSE settles
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            value = objective()
            if not torch.isfinite(value):
                return torch.tensor(_BIG, dtype=dtype)
            value.backward()
            remember(value.item())
            return value

        opt.step(closure)
        if best["state"] is not None:
            with torch.no_grad():
                for p, v in zip(trainable, best["state"]):
                    p.copy_(v)
    with torch.no_grad():
        value = objective()
    sse = float(value) if torch.isfinite(value) else math.inf
    n = data.numel()
    k = sum(len(s) for s in terms.support) + (start.numel() if fit_y0 else 0)
    score = _information(sse, k, n, float(data.pow(2).sum()), criterion) if math.isfinite(sse) else math.inf
    coefficients = terms.coefficient_matrix().numpy().astype(np.float64)
    discovery = replace(base, coefficients=coefficients)
    return Refit(discovery, model, start.detach().clone(), sse, n, score, criterion)


# -- the regression --------------------------------------------------------------------------------


def discover(
    fn: Any,
    states: torch.Tensor | np.ndarray,
    *,
    library: Library | str = "polynomial",
    degree: int = 3,
    thresholds: Sequence[float] | np.ndarray | None = None,
    alpha: float | Sequence[float] = 1e-4,
    criterion: str = "pareto",
    feature_names: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    max_iter: int = 20,
) -> Discovery:
    r"""Sparse regression of ``fn`` on a candidate library, with the threshold chosen by a sweep.

    1. Targets :math:`G = g(Y)` at the ``states`` :math:`Y` ``[N, n]``: ``fn`` is a
       :class:`~torchnde.models.universal.UniversalODE` (its :meth:`learned_term`), any callable
       ``g(y)`` (a network), or the targets ``[N, m]`` themselves.
    2. The library :math:`\Theta(Y)` ``[N, p]``: a :class:`Library`, or a name —
       ``"polynomial"`` (up to ``degree``), ``"sin"``, ``"cos"``, ``"trig"``, joined with ``+``
       (``"polynomial+sin"``).
    3. For each threshold :math:`\lambda` (default :math:`10^{-4} \dots 10^{0.5}`, 46 values)
       and each ridge strength in ``alpha`` (one value or several), pysindy's STLSQ on
       unit-norm columns and unit-norm targets (so :math:`\lambda` is relative: a term
       survives when its normalised coefficient is at least :math:`\lambda`); coefficients
       are refitted by least squares on the support (``unbias``) and scaled back.
    4. Per output, ``criterion`` picks one sweep point: ``"pareto"`` — nearest the ideal corner
       of the (number of terms / library size, log relative residual between :math:`10^{-10}`
       and 1) plane, a Pareto choice as in the UDE paper's code; or ``"aic"``, ``"aicc"``,
       ``"bic"`` on the regression residual.

    Brunton, Proctor, Kutz, PNAS 2016, arXiv 1509.03580; Rackauckas et al., arXiv 2001.04385.

    ```python
    import torch
    from torchnde.discovery import discover
    y = torch.rand(200, 2, dtype=torch.float64) * 3
    g = lambda y: torch.stack([-0.9 * y[:, 0] * y[:, 1], 0.8 * y[:, 0] * y[:, 1]], -1)
    result = discover(g, y, library="polynomial", degree=3, feature_names=["x", "y"])
    print(result)          # dx/dt = -0.9000 x·y   /   dy/dt = 0.8000 x·y
    ```
    """
    ps = _pysindy()
    if criterion not in CRITERIA:
        raise ValueError(
            f"unknown criterion {criterion!r}; valid: {', '.join(CRITERIA)}.{did_you_mean(criterion, CRITERIA)}"
        )
    alphas = np.atleast_1d(np.asarray(alpha, dtype=np.float64))
    if alphas.ndim != 1 or len(alphas) == 0 or np.any(alphas < 0) or not np.all(np.isfinite(alphas)):
        raise ValueError(f"alpha (ridge strength) must be one or more finite numbers >= 0, got {alpha!r}")
    y = _as_numpy(states)
    if y.ndim != 2:
        raise ValueError(f"states must be [N, n], got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("states contain NaN or inf")
    g = _targets(fn, states)
    if g.ndim == 1:
        g = g[:, None]
    if g.ndim != 2 or g.shape[0] != y.shape[0]:
        raise ValueError(f"targets must be [N, m] with N = {y.shape[0]}, got shape {g.shape}")
    if not np.all(np.isfinite(g)):
        raise ValueError("the targets contain NaN or inf")
    lib = _library_from(library, degree, y.shape[1], feature_names)
    n, m = g.shape
    if labels is None:
        labels = [f"d{s}/dt" for s in lib.state_names] if m == lib.n_states else [f"g{i}" for i in range(m)]
    labels = list(labels)
    if len(labels) != m:
        raise ValueError(f"got {len(labels)} labels for {m} outputs")
    theta = lib.evaluate(y)
    if not np.all(np.isfinite(theta)):
        raise ValueError("a library term is not finite at these states (log of a negative, overflow?)")
    grid = (
        np.logspace(-4, 0.5, 46) if thresholds is None else np.sort(np.asarray(thresholds, dtype=np.float64))
    )
    if grid.ndim != 1 or len(grid) == 0 or np.any(grid < 0) or not np.all(np.isfinite(grid)):
        raise ValueError("thresholds must be a non-empty list of finite numbers >= 0")
    norms = np.linalg.norm(g, axis=0)
    col_norms = np.linalg.norm(theta, axis=0)
    if np.any(col_norms == 0):
        zero = [lib.names[j] for j in np.flatnonzero(col_norms == 0)]
        raise ValueError(
            f"library terms {zero} are identically zero at these states; drop them from the library"
        )
    scale = np.where(norms > 0, norms, 1.0)
    target = g / scale
    points = [(float(a), float(lam)) for a in alphas for lam in grid]
    sweep = np.zeros((len(points), m, len(lib)))
    for k, (a, lam) in enumerate(points):
        opt = ps.STLSQ(threshold=lam, alpha=a, max_iter=int(max_iter), normalize_columns=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.fit(theta, target)
        coef = np.asarray(opt.coef_, dtype=np.float64)
        # STLSQ thresholds the ridge iterate, then reports the least-squares refit on the
        # support; apply the same threshold to what is reported so that round-off terms of
        # a collinear library do not count as discovered.
        coef[np.abs(coef * col_norms[None, :]) < lam] = 0.0
        sweep[k] = coef * scale[:, None]
    resid = g[None, :, :] - np.einsum("np,tmp->tnm", theta, sweep)
    err = np.linalg.norm(resid, axis=1) / scale[None, :]
    chosen = []
    for i in range(m):
        ks = (sweep[:, i] != 0).sum(axis=1)
        if norms[i] == 0:
            chosen.append(int(np.argmin(ks)))
        elif criterion == "pareto":
            chosen.append(_pareto_pick(ks, err[:, i], len(lib)))
        else:
            scores = [
                _information(
                    float((err[t, i] * norms[i]) ** 2), int(ks[t]), n, float(norms[i] ** 2), criterion
                )
                for t in range(len(points))
            ]
            chosen.append(int(np.argmin(scores)))
    coefficients = np.stack([sweep[chosen[i], i] for i in range(m)])
    lams = np.array([lam for _, lam in points])
    ridge = np.array([a for a, _ in points])
    return Discovery(lib, coefficients, labels, lams, ridge, sweep, err, chosen, criterion, y, g)
