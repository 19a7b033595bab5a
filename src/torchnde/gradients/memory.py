"""Measure the memory a gradient strategy holds: bytes kept by the autograd graph after the
forward pass, and the peak extra memory allocated during the backward pass. Both are counted
from the storages that torch operators allocate and free (a dispatch mode that sees every
operator, and a weak reference on every new storage that fires when it is freed; on CUDA the
allocator's statistics), so they are deterministic, quiet (no profiler) and cheap."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["GraphMemory", "graph_memory"]


@dataclass(frozen=True)
class GraphMemory:
    """What :func:`graph_memory` measured.

    - ``retained_bytes``: bytes allocated during the forward pass and still allocated when it
      returns: everything the autograd graph keeps for backward (saved activations, the inputs
      that checkpointing keeps for recomputation, a strategy's saved final state) plus the
      outputs themselves. Counted from the storages torch operators allocate and free (CPU;
      CUDA: the allocator's statistics), so it is deterministic for a deterministic forward
      pass. Run the forward once before measuring, so that one-off caches are not counted.
    - ``saved_bytes``/``saved_tensors``: the distinct storages (bytes) and the tensors that
      autograd's saved-tensor hooks saw saved and that are still held after the forward pass.
      This misses what does not pass through the hooks (non-reentrant checkpointing keeps its
      inputs in a closure), so compare strategies on ``retained_bytes``.
    - ``backward_peak_bytes``: the largest amount of memory allocated during ``backward`` above
      what was allocated when it started (frees of what the forward pass kept count against
      it); ``None`` when no ``backward`` was given.
    """

    retained_bytes: int
    saved_bytes: int
    saved_tensors: int
    backward_peak_bytes: int | None


class _Held:
    """A saved tensor, wrapped so that we can tell whether the graph still holds it."""

    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


class _Allocations(TorchDispatchMode):
    """The bytes of the storages that torch operators allocated while the mode was active and
    that are still alive (``live``), and the most that were alive at once (``peak``).

    Every operator's outputs pass through :meth:`__torch_dispatch__`; an output of an operator
    that does not return an alias of an input (its schema's returns carry no alias annotation)
    owns a new storage, which is counted and watched by a weak reference whose callback
    subtracts it when the storage is freed. Allocations outside operators (an operator's
    internal workspace) are not seen."""

    # ``torch.tensor(data)`` builds its tensor outside the dispatcher and hands it over here.
    _FRESH_ALIASES = frozenset({"aten::lift_fresh"})

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._fresh: dict[Any, bool] = {}
        self._watch: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        fresh = self._fresh.get(func)
        if fresh is None:
            schema = func._schema
            fresh = schema.name in self._FRESH_ALIASES or all(r.alias_info is None for r in schema.returns)
            self._fresh[func] = fresh
        if fresh:
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self._count(t.untyped_storage())
        return out

    def _count(self, storage: Any) -> None:
        key, size = id(storage), storage.nbytes()
        if size == 0 or key in self._watch:
            return
        self._watch[key] = weakref.ref(storage, lambda _, key=key, size=size: self._freed(key, size))
        self.live += size
        self.peak = max(self.peak, self.live)

    def _freed(self, key: int, size: int) -> None:
        self._watch.pop(key, None)
        self.live -= size

    def reset_peak(self) -> int:
        """Start a new peak from what is alive now; returns that."""
        self.peak = self.live
        return self.live


def graph_memory(
    forward: Callable[[], Any], backward: Callable[[Any], Any] | None = None, device: Any = "cpu"
) -> GraphMemory:
    """Run ``out = forward()`` measuring what it leaves allocated and what autograd saved, then
    (optionally) ``backward(out)`` measuring its peak allocation.

    It prints nothing, and the forward and backward passes run at about the speed of the
    measured code (one Python call per operator on CPU, none on CUDA).

    ```python
    import torch, torchnde as nde
    net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))
    y0 = torch.randn(8, 2)
    run = lambda: nde.solve(lambda t, y: net(y), y0, torch.tensor([0.0, 1.0]), "rk4", dt=0.1).ys
    mem = nde.graph_memory(run, lambda ys: ys.square().sum().backward())
    mem.retained_bytes  # what the forward pass keeps until backward
    ```
    """
    held: weakref.WeakSet[_Held] = weakref.WeakSet()

    def pack(tensor: torch.Tensor) -> _Held:
        box = _Held(tensor)
        held.add(box)
        return box

    def unpack(box: _Held) -> torch.Tensor:
        return box.tensor

    device = torch.device(device)
    counter = None if device.type == "cuda" else _Allocations()
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out, retained = _net_allocation(forward, device, counter)
    storages: dict[tuple[Any, int], int] = {}
    count = 0
    for box in list(held):
        t = box.tensor
        count += 1
        st = t.untyped_storage()
        storages[(t.device, st.data_ptr())] = st.nbytes()
    peak = None
    if backward is not None:
        _, peak = _net_allocation(lambda: backward(out), device, counter, peak=True)
    return GraphMemory(retained, sum(storages.values()), count, peak)


def _net_allocation(
    fn: Callable[[], Any], device: torch.device, counter: _Allocations | None, peak: bool = False
) -> tuple[Any, int]:
    """``fn()`` and the bytes it left allocated (or, with ``peak``, its peak allocation above
    the starting point)."""
    if counter is None:  # CUDA: the caching allocator keeps the statistics
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        end = torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)
        return out, max(end - start, 0)
    start = counter.reset_peak()
    with counter:
        out = fn()
    return out, max((counter.peak if peak else counter.live) - start, 0)
