"""The checks of the user's inputs that need more than a line: whether a state is finite (cheaply),
and the messages for an empty or complex state and for times that are not strictly monotonic
(repeats named, with the fix)."""

from __future__ import annotations

import itertools
import math

import torch

__all__ = ["COMPLEX", "NOT_MONOTONIC", "all_finite", "empty_state", "first_few", "not_monotonic"]


COMPLEX = (
    "y0 has dtype {dtype}: solve integrates real states. Solve for its real and imaginary parts "
    "instead: y0 = torch.view_as_real(z0) (a trailing axis of 2), with f(t, y) computing on "
    "torch.view_as_complex(y) and returning torch.view_as_real(dz/dt); then z = "
    "torch.view_as_complex(sol.ys)"
)


def all_finite(y: torch.Tensor) -> bool:
    """Whether every entry is finite, with one reduction and one host read: the sum is NaN or
    infinite exactly when an entry is, or when it overflows (then the entries are checked one by
    one). A third of the cost of ``torch.isfinite(y).all()`` (two operations) on a small state."""
    y = y.detach()
    return math.isfinite(float(y.sum())) or bool(torch.isfinite(y).all())


def first_few(items: list, n: int = 5) -> str:
    """``items`` as text, the first ``n`` and how many more."""
    text = ", ".join(str(i[0] if isinstance(i, tuple) and len(i) == 1 else i) for i in items[:n])
    return text + (f" (and {len(items) - n} more)" if len(items) > n else "")


def empty_state(parts: list[torch.Tensor], is_tuple: bool, per_sample: bool) -> str:
    shapes = ", ".join(str(tuple(p.shape)) for p in parts)
    what = f"y0 {'parts have' if is_tuple else 'has'} shape {shapes}"
    if per_sample and parts[0].ndim and parts[0].shape[0] == 0:
        return (
            f"{what}: an empty batch (no samples), so there is nothing to solve. Skip the call when "
            "y0.shape[0] == 0 (or pass at least one sample)"
        )
    return (
        f"{what}, with no elements: there is nothing to solve. Pass a state with at least one "
        "element, or skip the call when y0.numel() == 0"
    )


NOT_MONOTONIC = (
    "t_eval must be strictly monotonic (all increasing or all decreasing, no repeats): "
    "sort it, e.g. torch.sort(t_eval).values"
)


def not_monotonic(times: list[float]) -> str:
    """Why ``times`` is not strictly monotonic, and the fix: repeats (``torch.unique``) or order."""
    counts: dict[float, list[int]] = {}
    for i, v in enumerate(times):
        counts.setdefault(v, []).append(i)
    repeats = {v: idx for v, idx in counts.items() if len(idx) > 1}
    if not repeats:
        return NOT_MONOTONIC
    listed = first_few([f"{v:g} (at indices {', '.join(map(str, idx))})" for v, idx in repeats.items()], 3)
    pairs = list(itertools.pairwise(times))
    if all(a <= b for a, b in pairs) or all(a >= b for a, b in pairs):  # sorted, with repeats
        return (
            f"t_eval repeats {listed}: output times must be distinct. Remove the repeats with "
            "torch.unique_consecutive(t_eval) (it keeps the order)"
        )
    return (
        f"t_eval is not monotonic and repeats {listed}: torch.unique(t_eval) sorts it and removes "
        "the repeats (add .flip(0) to integrate backwards)"
    )
