"""Names a user may misspell: the closest valid one ("did you mean 'dopri5'?"), and a class
decorator that rejects unknown keyword arguments with the valid ones and that suggestion.

Every place that lists valid names (solvers, gradient strategies, ``solve``'s and the models'
options, ``compat`` methods and options, experiments, ...) appends :func:`did_you_mean`::

    raise ValueError(f"unknown solver {name!r}; valid solvers: {', '.join(valid)}.{did_you_mean(name, valid)}")
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["checked_keywords", "closest", "did_you_mean"]

T = TypeVar("T", bound=type)
_CUTOFF = 0.6


def closest(name: Any, valid: Iterable[Any]) -> list[str]:
    """The valid names closest to ``name``: those of the best difflib ratio (case-insensitive),
    if it is at least 0.6; several on a tie (``'dopri6'``: ``['dopri5', 'dopri8']``)."""
    target = str(name).lower()
    scored = []
    for v in dict.fromkeys(str(v) for v in valid):
        matcher = difflib.SequenceMatcher(None, target, v.lower())
        if matcher.real_quick_ratio() >= _CUTOFF and matcher.quick_ratio() >= _CUTOFF:
            scored.append((matcher.ratio(), v))
    best = max((r for r, _ in scored), default=0.0)
    return [v for r, v in scored if r >= _CUTOFF and r == best]


def _either(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def did_you_mean(names: Any, valid: Iterable[Any]) -> str:
    """``" Did you mean 'dopri5'?"`` for the closest valid name(s) to ``names`` (one name, or
    several: ``" Did you mean 'rtol' for 'rtoll', 'atol' for 'atl'?"``), or ``""`` when none is
    close."""
    valid = list(valid)
    names = [names] if isinstance(names, str) or not isinstance(names, Iterable) else list(names)
    pairs = [(n, close) for n in names if (close := closest(n, valid))]
    if not pairs:
        return ""
    if len(names) == 1:
        return f" Did you mean {_either(pairs[0][1])}?"
    return " Did you mean " + ", ".join(f"{_either(c)} for {n!r}" for n, c in pairs) + "?"


def checked_keywords(cls: T) -> T:
    """Make ``cls(...)`` reject an unknown keyword argument with a ``TypeError`` that lists the
    valid ones and names the closest (``PIDController(rtoll=1e-3)``: did you mean 'rtol'?).
    Apply it above ``@dataclass``; subclasses with their own ``__init__`` are not affected."""
    init: Callable[..., None] = cls.__init__  # type: ignore[misc]
    params = list(inspect.signature(init).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return cls  # it takes any keyword itself
    valid = [p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY]
    known = frozenset(valid)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if not known.issuperset(kwargs):
            bad = sorted(set(kwargs) - known)
            raise TypeError(
                f"{type(self).__name__}() got unknown option(s) {bad}; valid options: "
                f"{', '.join(valid)}.{did_you_mean(bad, valid)}"
            )
        init(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[misc]
    return cls
