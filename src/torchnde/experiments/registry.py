"""Imports every experiment module of this package so that each registers itself."""

from __future__ import annotations

import importlib
import pkgutil

_HARNESS = {"_framework", "cli", "registry", "demo", "__main__"}

for _info in pkgutil.iter_modules(importlib.import_module(__package__).__path__):
    if _info.name not in _HARNESS and not _info.name.startswith("_"):
        importlib.import_module(f"{__package__}.{_info.name}")
