"""Drop-in shims for code written against other libraries (``compat.torchdiffeq``,
``compat.torchsde``)."""

from . import torchdiffeq as torchdiffeq
from . import torchsde as torchsde

__all__ = ["torchdiffeq", "torchsde"]
