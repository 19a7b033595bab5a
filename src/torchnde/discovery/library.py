r"""Candidate libraries for sparse regression, as sympy expressions that also run in numpy and torch.

A :class:`Library` is an ordered list of candidate functions :math:`\theta_j(y)` of the state
:math:`y = (y_1, \dots, y_n)`, each a sympy expression in the state symbols. The same
expression is evaluated in numpy (the regression matrix :math:`\Theta`) and compiled to torch
(:func:`torch_function`), so the discovered equations, the numbers and the torch module agree by
construction.

S. L. Brunton, J. L. Proctor, J. N. Kutz, *Discovering governing equations from data by sparse
identification of nonlinear dynamical systems*, PNAS 113 (15), 2016, arXiv 1509.03580.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from .._optional import require

__all__ = ["Library", "torch_function"]


def _sympy() -> Any:
    return require("sympy", extra="discovery", purpose="torchnde.discovery")


def _default_names(n: int) -> list[str]:
    if n <= 3:
        return ["x", "y", "z"][:n]
    return [f"x{i}" for i in range(n)]


def _check_names(names: Sequence[str] | None, n_states: int) -> list[str]:
    if int(n_states) != n_states or n_states < 1:
        raise ValueError(f"n_states must be a positive integer, got {n_states!r}")
    names = _default_names(n_states) if names is None else [str(s) for s in names]
    if len(names) != n_states:
        raise ValueError(f"got {len(names)} state names {names} for {n_states} states")
    if len(set(names)) != len(names) or not all(s.isidentifier() for s in names):
        raise ValueError(f"state names must be distinct identifiers, got {names}")
    return names


class Library:
    r"""An ordered library of candidate terms :math:`\Theta(y) = [\theta_1(y), \dots, \theta_p(y)]`.

    Build one with :meth:`polynomial`, :meth:`trigonometric` or :meth:`custom` and join them with
    ``+`` (duplicates are dropped). Each term is a sympy expression in the state symbols
    (``library.symbols``); :meth:`evaluate` gives the numpy matrix :math:`\Theta` and
    :meth:`torch_terms` the same functions in torch.

    Brunton, Proctor, Kutz, *Discovering governing equations from data by sparse identification
    of nonlinear dynamical systems*, PNAS 2016, arXiv 1509.03580.

    ```python
    from torchnde.discovery import Library
    lib = Library.polynomial(2, degree=2, names=["x", "y"]) + Library.trigonometric(2, names=["x", "y"])
    lib.names        # ['1', 'x', 'y', 'x**2', 'x*y', 'y**2', 'sin(x)', 'sin(y)', 'cos(x)', 'cos(y)']
    ```
    """

    def __init__(self, terms: Iterable[Any], names: Sequence[str]) -> None:
        sp = _sympy()
        self.state_names = list(names)
        self.symbols = sp.symbols(self.state_names, real=True)
        if not isinstance(self.symbols, (tuple, list)):
            self.symbols = (self.symbols,)
        self.symbols = tuple(self.symbols)
        local = dict(zip(self.state_names, self.symbols))
        exprs: list[Any] = []
        for term in terms:
            expr = sp.sympify(term, locals=local) if isinstance(term, str) else sp.sympify(term)
            # Re-express any symbol with a state's name as that state's (real) symbol.
            expr = expr.subs({s: local[s.name] for s in expr.free_symbols if s.name in local})
            stray = sorted(s.name for s in expr.free_symbols if s not in self.symbols)
            if stray:
                raise ValueError(f"term {term!r} uses {stray}, which are not states {self.state_names}")
            if expr.is_Number and float(expr) == 0:
                raise ValueError("a library term cannot be identically zero")
            if expr not in exprs:
                exprs.append(expr)
        if not exprs:
            raise ValueError("a library needs at least one term")
        self.terms: list[Any] = exprs
        self._numpy: list[Callable[..., Any]] | None = None
        self._torch: list[Callable[[torch.Tensor], torch.Tensor]] | None = None

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def polynomial(
        cls, n_states: int, degree: int = 2, *, include_bias: bool = True, names: Sequence[str] | None = None
    ) -> Library:
        r"""All monomials :math:`\prod_i y_i^{k_i}` with :math:`1 \le \sum k_i \le` ``degree`` (and 1).

        Ordered by total degree, then as pysindy's ``PolynomialLibrary`` (``1, x, y, x², xy, y², …``).

        ```python
        from torchnde.discovery import Library
        Library.polynomial(2, degree=2).names   # ['1', 'x', 'y', 'x**2', 'x*y', 'y**2']
        ```
        """
        names = _check_names(names, n_states)
        if int(degree) != degree or degree < 1:
            raise ValueError(f"degree must be an integer >= 1, got {degree!r}")
        sp = _sympy()
        syms = sp.symbols(names, real=True)
        syms = syms if isinstance(syms, (tuple, list)) else (syms,)
        terms: list[Any] = [sp.Integer(1)] if include_bias else []
        for d in range(1, int(degree) + 1):
            for combo in itertools.combinations_with_replacement(range(n_states), d):
                terms.append(sp.Mul(*[syms[i] for i in combo]))
        return cls(terms, names)

    @classmethod
    def trigonometric(
        cls,
        n_states: int,
        *,
        frequencies: int = 1,
        sin: bool = True,
        cos: bool = True,
        names: Sequence[str] | None = None,
    ) -> Library:
        r""":math:`\sin(k y_i)` and/or :math:`\cos(k y_i)` for :math:`k = 1, \dots,` ``frequencies``.

        ```python
        from torchnde.discovery import Library
        Library.trigonometric(2, cos=False).names   # ['sin(x)', 'sin(y)']
        ```
        """
        names = _check_names(names, n_states)
        if int(frequencies) != frequencies or frequencies < 1:
            raise ValueError(f"frequencies must be an integer >= 1, got {frequencies!r}")
        if not (sin or cos):
            raise ValueError("choose at least one of sin=True, cos=True")
        sp = _sympy()
        syms = sp.symbols(names, real=True)
        syms = syms if isinstance(syms, (tuple, list)) else (syms,)
        terms: list[Any] = []
        for k in range(1, int(frequencies) + 1):
            if sin:
                terms += [sp.sin(k * s) for s in syms]
            if cos:
                terms += [sp.cos(k * s) for s in syms]
        return cls(terms, names)

    @classmethod
    def custom(cls, terms: Iterable[Any], *, names: Sequence[str]) -> Library:
        """Any expressions in the states: sympy objects or strings such as ``"exp(-x)"``, ``"x/(1 + y)"``.

        ```python
        from torchnde.discovery import Library
        Library.custom(["exp(-x)", "x/(1 + y)"], names=["x", "y"]).names   # ['exp(-x)', 'x/(y + 1)']
        ```
        """
        names = _check_names(names, len(names))
        return cls(list(terms), names)

    def __add__(self, other: Library) -> Library:
        if not isinstance(other, Library):
            return NotImplemented
        if other.state_names != self.state_names:
            raise ValueError(
                f"cannot join libraries over different states: {self.state_names} vs {other.state_names}"
            )
        return Library(self.terms + other.terms, self.state_names)

    # -- views -----------------------------------------------------------------------------------

    @property
    def n_states(self) -> int:
        """The number of state variables."""
        return len(self.state_names)

    @property
    def names(self) -> list[str]:
        """Each term as text (sympy's ``str``)."""
        return [str(t) for t in self.terms]

    def __len__(self) -> int:
        return len(self.terms)

    def __repr__(self) -> str:
        return f"Library({self.names}, states={self.state_names})"

    def evaluate(self, states: np.ndarray | torch.Tensor) -> np.ndarray:
        r"""The regression matrix :math:`\Theta` ``[N, p]`` (float64 numpy) at ``states`` ``[N, n]``."""
        sp = _sympy()
        x = np.asarray(states.detach().cpu() if torch.is_tensor(states) else states, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_states:
            raise ValueError(f"states must be [N, {self.n_states}], got shape {x.shape}")
        if self._numpy is None:
            self._numpy = [sp.lambdify(self.symbols, t, modules="numpy") for t in self.terms]
        cols = [np.broadcast_to(np.asarray(f(*x.T), dtype=np.float64), (x.shape[0],)) for f in self._numpy]
        return np.stack(cols, axis=1)

    def torch_terms(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The terms as torch functions of a ``[..., n]`` state tensor (each returns ``[...]``)."""
        if self._torch is None:
            self._torch = [torch_function(t, self.symbols) for t in self.terms]
        return self._torch


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sin": torch.sin,
    "cos": torch.cos,
    "tan": torch.tan,
    "exp": torch.exp,
    "log": torch.log,
    "tanh": torch.tanh,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
    "Abs": torch.abs,
    "atan": torch.atan,
}


def torch_function(expr: Any, symbols: Sequence[Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Compile a sympy expression in ``symbols`` to ``fn(y) -> tensor`` with ``y[..., i]`` the ``i``-th symbol.

    Supports sums, products, powers, numbers and ``sin cos tan exp log tanh sinh cosh Abs atan``;
    anything else is an error naming these. It turns SINDy's sympy equations (Brunton, Proctor,
    Kutz, PNAS 2016, arXiv 1509.03580) back into differentiable torch code.

    ```python
    from torchnde.discovery.library import torch_function
    import sympy, torch
    x, y = sympy.symbols("x y")
    f = torch_function(-0.9 * x * y + sympy.sin(x), (x, y))
    f(torch.tensor([[1.0, 2.0]]))   # tensor([-0.9585])
    ```
    """
    sp = _sympy()
    index = {s: i for i, s in enumerate(symbols)}

    def build(e: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        if e.is_Symbol:
            if e not in index:
                raise ValueError(f"symbol {e} is not one of the states {list(symbols)}")
            i = index[e]
            return lambda y: y[..., i]
        if e.is_Number:
            c = float(e)
            return lambda y: torch.full(y.shape[:-1], c, dtype=y.dtype, device=y.device)
        if e.is_Add:
            parts = [build(a) for a in e.args]

            def add(y: torch.Tensor) -> torch.Tensor:
                out = parts[0](y)
                for p in parts[1:]:
                    out = out + p(y)
                return out

            return add
        if e.is_Mul:
            coeff, rest = e.as_coeff_Mul()
            factors = [build(a) for a in sp.Mul.make_args(rest)]
            c = float(coeff)

            def mul(y: torch.Tensor) -> torch.Tensor:
                out = factors[0](y)
                for f in factors[1:]:
                    out = out * f(y)
                return out * c if c != 1.0 else out

            return mul
        if e.is_Pow:
            base, exponent = e.args
            b = build(base)
            if exponent.is_Integer:
                n = int(exponent)
                return lambda y: b(y) ** n
            if exponent.is_Number:
                p = float(exponent)
                return lambda y: b(y) ** p
            ex = build(exponent)
            return lambda y: b(y) ** ex(y)
        name = type(e).__name__
        if isinstance(e, sp.Function) and name in _UNARY and len(e.args) == 1:
            fn, arg = _UNARY[name], build(e.args[0])
            return lambda y: fn(arg(y))
        raise ValueError(
            f"cannot compile {e} ({name}) to torch; supported: numbers, states, +, *, powers and "
            f"{', '.join(sorted(_UNARY))}"
        )

    return build(_sympy().sympify(expr))


def _format_number(c: float, digits: int = 4) -> str:
    if c == 0:
        return "0"
    mag = math.floor(math.log10(abs(c)))
    decimals = max(digits - 1 - mag, 0)
    return f"{abs(c):.{decimals}f}"


def format_terms(coefficients: Sequence[float], terms: Sequence[Any], digits: int = 4) -> str:
    """``-0.8973 x·y + 0.1 x`` — a readable sum of ``coefficient · term`` (``0`` when empty)."""
    pieces: list[str] = []
    for c, t in zip(coefficients, terms):
        if c == 0:
            continue
        text = str(t).replace("**", "^").replace("*", "·")
        number = _format_number(float(c), digits)
        body = number if text == "1" else f"{number} {text}"
        if not pieces:
            pieces.append(("-" if c < 0 else "") + body)
        else:
            pieces.append(("- " if c < 0 else "+ ") + body)
    return " ".join(pieces) if pieces else "0"
