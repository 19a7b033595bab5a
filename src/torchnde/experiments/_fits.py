"""Fits the experiments share."""

from __future__ import annotations

import math

__all__ = ["loglog_slope"]


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """The least-squares slope of ``log y`` against ``log x``.

    ```python
    from torchnde.experiments._fits import loglog_slope
    loglog_slope([1, 2, 4], [3, 12, 48])   # 2.0
    ```
    """
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)
