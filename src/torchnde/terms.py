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

__all__ = ["AbstractTerm", "ODETerm", "as_term"]


class AbstractTerm(abc.ABC):
    """The base of every term. A concrete term knows its user-facing callable(s) and lowers
    them to the callable the loop integrates.

    ``kind`` is a short name used in error messages (``"ODE"``, ``"SDE"``, ``"CDE"``).
    """

    kind: str = "term"

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
