"""What the loop takes besides the problem (:class:`LoopOptions`) and what it returns
(:class:`Raw`, in the loop's flat layout; :meth:`Problem.solution` turns it into a
:class:`~torchnde.Solution`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .._solution import Stats

__all__ = ["LoopOptions", "Raw"]


@dataclass(frozen=True)
class LoopOptions:
    """The options of one run of a loop layout."""

    max_steps: int
    dense: bool = False
    save_steps: bool = False
    progress: bool = False
    compile: bool = False
    checkpoint: bool = False  # recompute each step in the backward pass (gradient="checkpoint")
    event: Any = None  # an Event to watch
    tape: Any = None  # a checkpoint tape recording the accepted steps (Checkpoint(checkpoints=k))


@dataclass
class Raw:
    """A loop's result in its own layout."""

    ys: torch.Tensor  # [n, N] or [B, n, N]
    stats: Stats
    status: Any
    fail_time: Any = None
    fail_dt: Any = None
    step_s: torch.Tensor | None = None
    step_y: torch.Tensor | None = None
    dense: Callable[[torch.Tensor], torch.Tensor] | None = None
    stiff_check: Callable[[], Any] | None = None  # lazily: does the failure look like stiffness?
    precision_hint: str | None = None  # set when rtol is below what the state's dtype resolves
    reversible: Any = None  # reversible solvers: (step grid, final solver state)
    next_dt: float | None = None  # global adaptive: the step size the controller would take next
    events: Any = None  # (event times, event states) when an Event was watched
