"""Drop-in shims for code written against other libraries (``compat.torchdiffeq``,
``compat.torchsde``, ``compat.torchcde``)."""

from . import torchcde as torchcde
from . import torchdiffeq as torchdiffeq
from . import torchsde as torchsde

__all__ = ["torchcde", "torchdiffeq", "torchsde"]
