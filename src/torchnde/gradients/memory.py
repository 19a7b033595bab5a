"""Measure the memory a gradient strategy holds: bytes kept by the autograd graph after the
forward pass (counted through saved-tensor hooks, so deterministic), and the peak extra memory
allocated during the backward pass."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

__all__ = ["GraphMemory", "graph_memory"]


@dataclass(frozen=True)
class GraphMemory:
    """What :func:`graph_memory` measured.

    - ``retained_bytes``: bytes allocated during the forward pass and still allocated when it
      returns: everything the autograd graph keeps for backward (saved activations, the inputs
      that checkpointing keeps for recomputation, a strategy's saved final state) plus the
      outputs themselves. Counted from allocation events (CPU: the profiler; CUDA: the
      allocator's statistics), so it is deterministic for a deterministic forward pass. Run the
      forward once before measuring, so that one-off caches are not counted.
    - ``saved_bytes``/``saved_tensors``: the distinct storages (bytes) and the tensors that
      autograd's saved-tensor hooks saw saved and that are still held after the forward pass.
      This misses what does not pass through the hooks (non-reentrant checkpointing keeps its
      inputs in a closure), so compare strategies on ``retained_bytes``.
    - ``backward_peak_bytes``: the largest amount of memory allocated during ``backward`` above
      what was allocated when it started; ``None`` when no ``backward`` was given or the
      measurement was unavailable.
    """

    retained_bytes: int | None
    saved_bytes: int
    saved_tensors: int
    backward_peak_bytes: int | None


class _Held:
    """A saved tensor, wrapped so that we can tell whether the graph still holds it."""

    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


def graph_memory(
    forward: Callable[[], Any], backward: Callable[[Any], Any] | None = None, device: Any = "cpu"
) -> GraphMemory:
    """Run ``out = forward()`` measuring what it leaves allocated and what autograd saved, then
    (optionally) ``backward(out)`` measuring its peak allocation.

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
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out, retained = _net_allocation(forward, device)
    storages: dict[tuple[Any, int], int] = {}
    count = 0
    for box in list(held):
        t = box.tensor
        count += 1
        st = t.untyped_storage()
        storages[(t.device, st.data_ptr())] = st.nbytes()
    peak = None
    if backward is not None:
        _, peak = _net_allocation(lambda: backward(out), device, peak=True)
    return GraphMemory(retained, sum(storages.values()), count, peak)


def _net_allocation(
    fn: Callable[[], Any], device: torch.device, peak: bool = False
) -> tuple[Any, int | None]:
    """``fn()`` and the bytes it left allocated (or, with ``peak``, its peak allocation above
    the starting point)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        end = torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)
        return out, max(end - start, 0)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    try:  # allocation events (positive) and frees (negative), in time order
        events: list[tuple[int, int]] = []
        stack = list(prof.profiler.kineto_results.experimental_event_tree())  # type: ignore[union-attr]
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if str(node.tag).endswith("Allocation"):
                events.append((node.start_time_ns, int(node.extra_fields.alloc_size)))
    except (AttributeError, RuntimeError):  # the profiler's internals moved: no measurement
        return out, None
    running = top = 0
    for _, size in sorted(events):
        running += size
        top = max(top, running)
    return out, top if peak else running
