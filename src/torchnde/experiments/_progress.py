"""Progress of the harness's long stages: a tqdm bar on a terminal, plain periodic lines otherwise.

Each line says what is being done, how far it got and about how long is left:

    training node: 150/250 steps, 4.1 s elapsed, about 2.7 s left (loss=0.52, nfe=38)

```python
import time
from torchnde.experiments._progress import Progress
bar = Progress("counting", 3, interval=0.0)
for _ in range(3):
    time.sleep(0.01)
    bar.update(info={"value": 1.0})
bar.close()   # 'counting: 3/3 steps in 0.0 s' on stderr
```
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "seconds"]


def seconds(s: float) -> str:
    """``4.1 s``, ``2 min 05 s``, ``1 h 02 min``: a duration for people."""
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """How far a stage of ``total`` units got, on ``stream`` (default stderr).

    ``tqdm`` draws the bar when it is installed and ``stream`` is a terminal; otherwise a plain
    line is printed at most every ``interval`` seconds and once at the end. ``initial`` units
    were done before (a resumed stage): the time left is estimated from this run's rate only.
    ``enabled=False`` prints nothing.
    """

    def __init__(
        self,
        desc: str,
        total: int,
        *,
        initial: int = 0,
        enabled: bool = True,
        unit: str = "step",
        interval: float = 5.0,
        stream: TextIO | None = None,
    ) -> None:
        self.desc, self.total, self.n, self.initial = desc, int(total), int(initial), int(initial)
        self.enabled, self.unit, self.interval = enabled, unit, interval
        self.stream = stream if stream is not None else sys.stderr
        self.start = self._last = time.perf_counter()
        self._tqdm: Any = None
        self._closed = False
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._tqdm = tqdm(
                    total=self.total,
                    initial=self.n,
                    desc=desc,
                    unit=unit,
                    leave=False,
                    dynamic_ncols=True,
                    file=self.stream,
                )

    def update(self, n: int = 1, info: dict[str, Any] | None = None) -> None:
        """``n`` more units done; ``info``'s numbers (loss, nfe, ...) are shown beside the count."""
        self.n += n
        if not self.enabled:
            return
        post = {k: _short(v) for k, v in (info or {}).items() if isinstance(v, (int, float))}
        if self._tqdm is not None:
            self._tqdm.set_postfix(post, refresh=False)
            self._tqdm.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.interval and self.n < self.total:
            self._last = now
            extra = f" ({', '.join(f'{k}={v}' for k, v in post.items())})" if post else ""
            print(f"{self.line()}{extra}", file=self.stream, flush=True)

    def line(self) -> str:
        """``desc: n/total units, elapsed, about ... left``."""
        elapsed = time.perf_counter() - self.start
        done = self.n - self.initial
        text = f"{self.desc}: {self.n}/{self.total} {self.unit}s, {seconds(elapsed)} elapsed"
        if done > 0 and self.n < self.total:
            text += f", about {seconds(elapsed / done * (self.total - self.n))} left"
        return text

    def close(self) -> None:
        """End the bar (a final plain line: how many units in how long)."""
        if self._closed:
            return
        self._closed = True
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.enabled and self.n > self.initial:
            elapsed = time.perf_counter() - self.start
            print(
                f"{self.desc}: {self.n}/{self.total} {self.unit}s in {seconds(elapsed)}",
                file=self.stream,
                flush=True,
            )
