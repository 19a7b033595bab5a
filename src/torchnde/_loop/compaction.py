"""Per-sample compaction: finished samples leave the working batch, so that later steps pay only
for the samples still running.

Every per-sample tensor of the loop lives on one :class:`Samples` object, and every stateful
helper holding per-sample data (the error norm's tolerances, the controller's memory, an event
watch) is registered with the :class:`Compaction`: a compaction gathers all of them at once, so a
new piece of per-sample state cannot be forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .problem import Problem

__all__ = ["COMPACT", "Compaction", "Samples", "verified_rows"]

# Compact the working batch when at most this fraction of it is still running.
COMPACT = 0.5

# The per-sample results, written back into every sample's row when the batch shrinks.
RESULTS = ("ys", "status", "nfe", "steps", "acc", "forced", "fail_t", "fail_dt", "s", "y")


class Samples:
    """The working batch of a per-sample solve: every attribute is a tensor whose leading axis
    is the working batch (assign new per-sample state here and compaction follows it)."""

    def __init__(self, **tensors: torch.Tensor):
        self.__dict__.update(tensors)

    def select(self, keep: torch.Tensor) -> None:
        for name, value in self.__dict__.items():
            self.__dict__[name] = value[keep]


class Compaction:
    """Which rows of the full batch the working batch holds (``rows``), every sample's results
    once its rows leave (``full``), and the helpers to follow a compaction."""

    def __init__(self, enabled: bool, batch: int, device: torch.device):
        self.enabled = enabled
        self.rows = torch.arange(batch, device=device)
        self.full: dict[str, torch.Tensor] = {}
        self.helpers: list[Any] = []

    def register(self, helper: Any) -> None:
        """A helper with ``select(keep)`` (or ``None``, for stateless ones)."""
        if helper is not None:
            self.helpers.append(helper)

    def store(self, samples: Samples) -> None:
        """Write the working batch's results into their rows of the full results. The first
        store comes from the uncompacted batch, whose tensors become the full results (the
        working batch is re-gathered into new tensors right after)."""
        for name in RESULTS:
            value = getattr(samples, name)
            full = self.full.get(name)
            if full is None:
                self.full[name] = value
            else:
                full[self.rows] = value

    def maybe(self, samples: Samples, n_still: int, check: Callable[[torch.Tensor], Any]) -> None:
        """Compact once at most :data:`COMPACT` of the working batch is running, provided
        ``check(keep)`` (``f`` evaluated on the sub-batch) returns the sub-batch's derivative;
        ``None`` there means ``f`` couples the rows: never compact again."""
        if not self.enabled or not 0 < n_still <= COMPACT * len(self.rows):
            return
        keep = torch.nonzero_static(samples.running, size=n_still).squeeze(1)  # no sync: size known
        f0 = check(keep)
        if f0 is None:
            self.enabled = False
            return
        self.store(samples)
        self.rows = self.rows[keep]
        samples.select(keep)
        samples.f0 = f0
        for helper in self.helpers:
            helper.select(keep)

    def results(self, samples: Samples) -> dict[str, torch.Tensor]:
        """Every sample's results, in the original order."""
        self.store(samples)
        return self.full


def verified_rows(
    func: Callable, s: torch.Tensor, y: torch.Tensor, f0: torch.Tensor | None, problem: Problem
) -> torch.Tensor | None:
    """``f`` on a sub-batch, checked against what it gave those rows inside the full batch
    (``f0``; for methods without FSAL the check is only that ``f`` runs and keeps the shape).

    ``None`` when ``f`` does not treat rows independently (it closes over per-sample tensors,
    or couples the batch): the solve then keeps the full batch to the end.
    """
    try:
        out = func(s, y)
    except Exception:  # any failure of f on a sub-batch means: do not compact
        return None
    if out.shape != y.shape:
        return None
    if f0 is not None:
        scale = f0.abs().amax() if f0.numel() else f0.new_zeros(())
        tol = 1e-4 if problem.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-10
        if not bool(((out - f0).abs() <= tol * (scale + 1.0)).all()):
            return None
    return out
