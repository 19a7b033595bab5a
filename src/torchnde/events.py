r"""Events: stop, or update the state, where a condition function crosses zero.

``solve(..., event=Event(cond_fn, terminal=True, direction=None, jump=None))`` watches
:math:`g(t, y) = \text{cond\_fn}(t, y)` (a scalar) at the end of every accepted step; on a sign
change (in ``direction``, if given) the crossing is located on the step's continuous extension
by the Illinois variant of regula falsi (Dowell & Jarratt, BIT 11, 1971) to a few ulps of the
time. A *terminal* event ends the solve there (outputs after it are NaN); otherwise the state is
replaced by ``jump(t_e, y_e)`` (if given) and the solve restarts from the event.

The event time is differentiable by the implicit function theorem: with
:math:`\dot g = \partial_t g + \nabla_y g \cdot f` at the event,
:math:`\partial t_e/\partial\theta = -(\partial g/\partial\theta)/\dot g`, realised as
:math:`t_e \leftarrow \bar t_e - g(\bar t_e, y(\bar t_e))/\dot g` with :math:`\bar t_e, \dot g` held
constant; the event state moves with it, :math:`y_e \leftarrow y(\bar t_e) + f\,(t_e - \bar t_e)`,
and the restart after a jump carries the dependence of the later solution on :math:`t_e`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._names import checked_keywords

__all__ = ["Event"]


@checked_keywords
@dataclass(frozen=True)
class Event:
    """A zero crossing of ``cond_fn(t, y)`` to stop at or to act on.

    **Arguments:**

    - ``cond_fn``: ``g(t, y) -> scalar tensor`` (``y`` with the structure of ``y0``).
    - ``terminal``: stop the solve at the first crossing (default) or continue after it.
    - ``direction``: ``+1`` only crossings from negative to positive, ``-1`` only from positive
      to negative, ``None`` both.
    - ``jump``: for a non-terminal event, the state update ``y <- jump(t, y)`` (e.g. a bounce);
      gradients flow through it.
    - ``max_events``: stop the solve after a non-terminal event has fired this many times (a
      normal outcome: ``sol.status`` is ``Status.EVENT`` and ``sol.event_ts`` holds exactly
      ``max_events`` times; outputs after the last one are NaN). ``None`` (default): no limit;
      a Zeno-like accumulation of events then ends at ``max_steps``.
    - ``cond_fn`` returns a scalar (one value per solve). For a batch of independent problems
      whose events fire each at its own time, solve with ``per_sample=True``: ``cond_fn`` then
      returns one value per sample, shape ``[B]``.

    ```python
    import torch, torchnde as nde
    ball = lambda t, y: (y[1], -9.81 * torch.ones_like(y[1]))       # height, velocity
    bounce = nde.Event(lambda t, y: y[0].sum(), terminal=False, direction=-1,
                       jump=lambda t, y: (y[0], -0.9 * y[1]))
    y0 = (torch.tensor([1.0], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    sol = nde.solve(ball, y0, torch.linspace(0, 2, 9, dtype=torch.float64), event=bounce)
    sol.event_ts  # the bounce times
    ```
    """

    cond_fn: Callable[..., Any]
    terminal: bool = True
    direction: int | None = None
    jump: Callable[..., Any] | None = None
    max_events: int | None = None

    def __post_init__(self) -> None:
        if not callable(self.cond_fn):
            raise TypeError("Event(cond_fn) must be callable as cond_fn(t, y)")
        if self.direction not in (None, 1, -1):
            raise ValueError(f"Event(direction=...) must be +1, -1 or None, got {self.direction!r}")
        if self.jump is not None and not callable(self.jump):
            raise TypeError("Event(jump=...) must be callable as jump(t, y) -> new y")
        if self.jump is not None and self.terminal:
            raise ValueError("Event(jump=...) needs terminal=False: a terminal event ends the solve")
        if self.max_events is not None and (
            not isinstance(self.max_events, int) or isinstance(self.max_events, bool) or self.max_events < 1
        ):
            raise ValueError(f"Event(max_events=...) must be a positive int or None, got {self.max_events!r}")

    def crossed(self, g0: Any, g1: Any) -> Any:
        """Whether a step from ``g0`` to ``g1`` crosses zero in the watched direction: floats in
        the global layout, ``[B]`` tensors per sample (elementwise)."""
        rising, falling = (g0 < 0) & (g1 >= 0), (g0 > 0) & (g1 <= 0)
        if self.direction == 1:
            return rising
        if self.direction == -1:
            return falling
        return rising | falling
