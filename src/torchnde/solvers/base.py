"""The solver contract shared by every method family.

A solver advances one step and reports what the loop needs; it owns no loop, no step-size
decision and no saving. The loop in :mod:`torchnde._solve` calls it in one of two layouts:

- *global* layout: the state is one flat vector ``y`` of shape ``[N]``, ``t0`` and ``dt`` are
  Python floats (the loop keeps time on the host and synchronises once per step);
- *per-sample* layout: the state is ``[B, N]`` and ``t0``, ``dt`` are float64 tensors of shape
  ``[B]``: every sample has its own step.

The vector field ``func(t, y)`` given to :meth:`AbstractSolver.step` already works in the
solver's layout (it flattens, unflattens and reverses time as needed).

Whatever changes during a solve (an implicit method's Jacobian, its factorisation and Newton
rate; the reversible Heun method's second state) is *explicit data*: the loop creates it with
:meth:`AbstractSolver.init_state`, passes it into every :meth:`AbstractSolver.step` and takes the
next one from :attr:`StepResult.state` (after rejected steps too). A solver object is never
mutated by a solve, so replaying a step with the same inputs (checkpointing) is exact.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import torch

from ..terms import CDETerm, ODETerm
from .tableau import DensePolynomial

__all__ = ["AbstractSolver", "StepResult", "stack_stages"]

Func = Callable[[Any, torch.Tensor], torch.Tensor]


def stack_stages(ks: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Stage derivatives on a new *last* axis, ``[*state, stages]``, laid out stage-major.

    The result is ``torch.stack(ks).movedim(0, -1)``: each stage is one contiguous block, and the
    trailing axis is a view. Stacking on the last axis directly interleaves the stages element by
    element, which costs ten times more on a 2,048-element state (40 µs against 4 µs); every
    consumer (matrix-vector products over the stages, ``reshape(-1, S)`` for the continuous
    extension) takes the strided view without a copy.
    """
    return torch.stack(ks).movedim(0, -1)


class StepResult(NamedTuple):
    """What one step returns.

    - ``y1``: the proposed state at ``t0 + dt``.
    - ``errors``: embedded error estimates *per unit step* (each shaped like ``y1``; the local
      error estimate is ``dt`` times it), empty for fixed-step methods or when not requested.
      The loop turns each into a scaled norm, the solver combines those norms with
      :meth:`AbstractSolver.combine_error_norms` (a homogeneous function), and the loop
      multiplies by ``|dt|``, which costs a scalar instead of a state-sized product.
    - ``ks``: the stage derivatives, in order; :attr:`stages` stacks them on a new last axis
      (only steps whose continuous extension is used pay for that copy).
    - ``f1``: ``f(t0 + dt, y1)`` when the method computed it anyway (FSAL), else ``None``.
    - ``converged``: ``False`` when an implicit method's nonlinear solve failed; the loop then
      rejects the step and retries it with a quarter of the step size.
    - ``stacked``: ``ks`` already stacked by the step (for its error estimate), or ``None``.
    - ``state``: the solver state to pass to the next step (see
      :meth:`AbstractSolver.init_state`); ``None`` for stateless solvers.
    """

    y1: torch.Tensor
    errors: tuple[torch.Tensor, ...]
    ks: tuple[torch.Tensor, ...]
    f1: torch.Tensor | None
    converged: Any = True  # implicit solvers: False when the stage equations were not solved
    stacked: torch.Tensor | None = None
    state: Any = None

    @property
    def stages(self) -> torch.Tensor:
        """The stage derivatives stacked on a new last axis, ``[*state, stages]``."""
        return stack_stages(self.ks) if self.stacked is None else self.stacked


class AbstractSolver(abc.ABC):
    """A one-step method. Concrete solvers are small: a tableau, an order and a citation.

    Class attributes every solver declares (read directly, never probed):

    - ``name``: the string accepted by ``solve(solver=...)``.
    - ``order``: order of the propagated solution.
    - ``error_order``: order of the local error estimate (embedded order + 1), which sets the
      controller's exponent; ``None`` for fixed-step methods. :attr:`adaptive` (whether there
      is an error estimate at all) follows from it.
    - ``dense_order``: order of the continuous extension used for ``t_eval`` and ``dense=True``.
    - ``implicit``: the step solves (non)linear systems with the Jacobian of the field (stiff
      methods); such solvers do not run under ``compile=True``. Default ``False``.
    - ``reversible``: the step can be undone in closed form (``reverse_step``); the solver is
      stepped on a fixed grid and supports ``gradient="reversible"``. Default ``False``.
    - ``supports_per_sample``: the solver runs with ``per_sample=True`` (its step accepts
      ``[B]`` tensors ``t0``, ``dt``). Default ``True``.
    - ``separable_pair``: the state must be a pair of equally sized tensors ``(q, p)`` with a
      separable field (symplectic methods); the loop checks this before solving. Default
      ``False``.
    - ``terms``: the term types (:class:`~torchnde.terms.AbstractTerm` subclasses) the solver
      integrates; a term is accepted when ``isinstance(term, solver.terms)``. Default
      ``(ODETerm, CDETerm)``: a CDE lowers to an ODE, so every ODE solver integrates it.
    """

    name: ClassVar[str]
    order: ClassVar[int]
    error_order: ClassVar[int | None] = None
    dense_order: ClassVar[int]
    implicit: ClassVar[bool] = False
    reversible: ClassVar[bool] = False
    supports_per_sample: ClassVar[bool] = True
    separable_pair: ClassVar[bool] = False
    terms: ClassVar[tuple[type, ...]] = (ODETerm, CDETerm)
    # An implicit method's exact Jacobian option, ``jacobian(t, y) -> df/dy`` (None: autograd).
    jacobian: Any = None

    @classmethod
    def unsupported(cls, term: Any) -> str | None:
        """What about ``term`` (an instance of one of :attr:`terms`) this solver cannot integrate,
        e.g. ``"general noise"``, or ``None`` when it can. ``solve`` rejects the term with the
        reason and the solvers that support it."""
        return None

    @property
    def fsal(self) -> bool:
        """Whether ``StepResult.f1`` may serve as the next step's ``f0``."""
        return False

    @property
    def f1_exact(self) -> bool:
        """Whether ``StepResult.f1`` is exactly ``f(t1, y1)`` (else the loop evaluates it when
        the continuous extension needs it)."""
        return True

    @property
    def needs_end_derivative(self) -> bool:
        """Whether :meth:`dense_stages` needs ``f(t1, y1)``."""
        return True

    @property
    def evaluations_per_step(self) -> int | None:
        """Vector-field evaluations inside one :meth:`step` (for counting under compile)."""
        return None

    @property
    def adaptive(self) -> bool:
        """Whether the method has an embedded error estimate (needed by ``PIDController``)."""
        return self.error_order is not None

    @abc.abstractmethod
    def step(
        self,
        func: Func,
        t0: Any,
        y0: torch.Tensor,
        f0: torch.Tensor,
        dt: Any,
        need_error: bool = True,
        state: Any = None,
    ) -> StepResult:
        """Advance from ``(t0, y0)`` by ``dt``; ``f0 = func(t0, y0)`` is supplied by the loop.

        ``need_error``: whether to compute ``StepResult.errors``. ``state``: the solver state
        from :meth:`init_state` or the previous step's ``StepResult.state`` (``None`` for a
        direct call: the solver's defaults). The step must not mutate ``state`` (nor the solver):
        it returns the next state in ``StepResult.state``.
        """

    def init_state(self, ctrl: Any) -> Any:
        """The solver state a solve with step-size controller ``ctrl`` starts from (an implicit
        method's Newton tolerances and empty Jacobian cache); ``None`` for stateless solvers."""
        return None

    def prepare(self, y: torch.Tensor) -> None:
        """Build the constants the step caches for ``y``'s dtype and device (tableau tensors),
        so that a traced step (``solve(compile=True)``) finds them ready instead of tracing
        their construction. The default has nothing to build."""
        return None

    def combine_error_norms(self, norms: tuple[Any, ...]) -> Any:
        """Turn the scaled norms of ``StepResult.errors`` into the one the controller uses."""
        return norms[0]

    @abc.abstractmethod
    def dense_stages(
        self,
        func: Func,
        t0: Any,
        y0: torch.Tensor,
        dt: Any,
        result: StepResult,
        f1: torch.Tensor,
    ) -> torch.Tensor:
        """Stages needed by the continuous extension, ``[..., N, dense_stages]``.

        Called only for steps that contain output points; ``f1 = func(t0 + dt, y1)``.
        """

    @property
    @abc.abstractmethod
    def dense_polynomial(self) -> DensePolynomial:
        """The continuous extension over :meth:`dense_stages`: ``y(t0 + theta dt) =
        y0 + dt * dense_stages @ P @ [theta, ..., theta**degree]``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
