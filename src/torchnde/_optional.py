"""Optional dependencies: imported where they are needed, with an error that names the extra.

The core (``solve``, the solvers, gradient strategies, models and ``compat``) needs only the
required dependencies (``torch``, ``numpy``). The datasets' reference solutions, the experiments'
figures and equation discovery need more; each of those imports it through :func:`require`,
which raises :class:`MissingDependency` naming the pip extra that brings it::

    from torchnde._optional import require
    solve_ivp = require("scipy.integrate", extra="experiments", purpose="a reference solution").solve_ivp

:func:`missing` answers without importing (for a check before a long run).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from types import ModuleType

__all__ = ["MissingDependency", "install_hint", "missing", "require"]

# The pip name of each optional import whose distribution is named differently.
_PIP_NAMES = {"sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow"}


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def install_hint(packages: Iterable[str], extra: str) -> str:
    """``pip install "torchnde[extra]"`` (or the packages alone)."""
    names = " ".join(sorted({_PIP_NAMES.get(p, p) for p in packages}))
    return f'pip install "torchnde[{extra}]"  (or just: pip install {names})'


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def require(module: str, *, extra: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` (e.g. ``"scipy.integrate"``); if its package is not installed, raise
    :class:`MissingDependency` naming ``pip install "torchnde[extra]"``. An installed package
    that fails to import for another reason re-raises that error unchanged."""
    try:
        importlib.import_module(_top(module))  # the package first: a cached submodule of a package
        return importlib.import_module(module)  # that is gone (or blocked) must not be returned
    except ModuleNotFoundError as err:
        if err.name is None or _top(err.name) != _top(module):
            raise  # the package is there but something it imports is not: not ours to explain
        what = purpose or f"this part of torchnde ({module})"
        raise MissingDependency(
            f"{what} needs {_top(module)!r}, an optional dependency that is not installed: "
            f"{install_hint([_top(module)], extra)}"
        ) from err


def missing(modules: Iterable[str]) -> list[str]:
    """The top-level packages of ``modules`` that are not installed (found without importing)."""
    out: list[str] = []
    for module in modules:
        top = _top(module)
        try:
            found = importlib.util.find_spec(top) is not None
        except ValueError:  # a module set to None in sys.modules (blocked): not importable
            found = False
        if top not in out and not found:
            out.append(top)
    return out
