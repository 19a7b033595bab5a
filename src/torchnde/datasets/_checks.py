"""Argument checks shared by the dataset generators (errors at the boundary, naming the fix)."""

from __future__ import annotations

import torch


def check_count(value: int, name: str, minimum: int = 1) -> int:
    """``value`` if it is an integer ``>= minimum`` (not a bool), else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        need = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return value


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` if it is a floating torch dtype, else a ``TypeError``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch dtype (torch.float64, torch.float32), got {dtype!r}")
    return dtype
