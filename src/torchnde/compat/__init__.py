"""Drop-in shims for code written against other libraries (``compat.torchdiffeq``)."""

from . import torchdiffeq as torchdiffeq

__all__ = ["torchdiffeq"]
