"""The tensors a vector field differentiates through, found from the autograd graph of one
evaluation of ``f`` (``Adjoint``/``Reversible`` with ``params=None``; see :class:`torchnde.Adjoint`).

``f`` is evaluated once at the initial time and (detached) state with grad recording on, and
its graph is walked from the output back along ``grad_fn.next_functions``:

- a leaf tensor that requires grad (an ``AccumulateGrad`` node's ``variable``: a parameter, a
  closed-over tensor) is collected;
- a node created *before* this evaluation is the ``grad_fn`` of a non-leaf tensor that ``f``
  closes over (``W = base * 2`` computed outside ``f``). That tensor itself is collected, not
  the leaves behind it: the adjoint differentiates with respect to it, and autograd carries its
  gradient on to ``base`` once, through the solve's own autograd node. (Differentiating with
  respect to ``base`` inside the adjoint would run backwards through ``W``'s graph at every
  evaluation of the adjoint field, and the second such pass fails once the first has freed
  that graph's saved tensors.) Which nodes predate the evaluation is read from autograd's
  per-thread sequence numbers; the tensor belonging to such a node is picked out by a second
  evaluation of ``f`` that records the tensors its torch operations take (only when there is
  one).

What one evaluation cannot see: tensors used only in branches not taken at the initial point,
and tensors created afresh inside ``f`` at each call (those cannot be differentiated anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["discover"]


def discover(f: Callable, t0: torch.Tensor, y0: Any, owner: str = "Adjoint") -> tuple[torch.Tensor, ...]:
    """The tensors requiring grad that ``f(t0, y0)`` depends on through autograd, in the order
    the graph walk meets them: leaves, then non-leaf tensors ``f`` closes over. ``y0`` is a
    tensor or a tuple of tensors (detached here). Evaluates ``f`` once (twice when ``f`` closes
    over a non-leaf tensor); raises ``ValueError`` naming ``owner(params=...)`` when ``f``
    depends on a tensor computed outside it that cannot be identified."""
    y = tuple(p.detach() for p in y0) if isinstance(y0, (tuple, list)) else y0.detach()
    with torch.enable_grad():
        mark = _next_node_number()
        out = f(t0, y)
        leaves, frontier = _walk(_tensors(out), mark)
    if not frontier:
        return tuple(leaves)
    return (*leaves, *_identify(f, t0, y, frontier, owner))


def _next_node_number() -> int:
    """A number at most that of every autograd node this thread creates from now on (a fresh
    tensor, not a module-level one: one created under ``torch.inference_mode`` at import would
    be an inference tensor, unusable here)."""
    node = torch.empty(0, requires_grad=True).view(0).grad_fn
    return node._sequence_nr()  # type: ignore[union-attr]


def _tensors(obj: Any) -> list[torch.Tensor]:
    """The tensors in ``obj`` (a tensor, or nested tuples, lists and dicts of them)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for x in obj for t in _tensors(x)]
    if isinstance(obj, dict):
        return [t for x in obj.values() for t in _tensors(x)]
    return []


def _walk(outputs: list[torch.Tensor], mark: int) -> tuple[list[torch.Tensor], dict[tuple[Any, int], None]]:
    """Leaves requiring grad reached from ``outputs``, and the edges ``(node, output_nr)`` into
    nodes numbered below ``mark`` (created before the evaluation), in the order met."""
    leaves: dict[int, torch.Tensor] = {}
    frontier: dict[tuple[Any, int], None] = {}
    seen: set[Any] = set()
    stack: list[tuple[Any, int]] = []
    for o in reversed(outputs):
        if o.requires_grad and o.grad_fn is None:  # f returned a leaf as it is
            leaves.setdefault(id(o), o)
        elif o.grad_fn is not None:
            stack.append((o.grad_fn, o.output_nr))
    while stack:
        node, nr = stack.pop()
        variable = getattr(node, "variable", None)  # an AccumulateGrad node's leaf
        if variable is not None:
            leaves.setdefault(id(variable), variable)
        elif node._sequence_nr() < mark:
            frontier.setdefault((node, nr), None)
        elif node not in seen:
            seen.add(node)
            stack.extend((n, i) for n, i in reversed(node.next_functions) if n is not None)
    return list(leaves.values()), frontier


class _Recorder(TorchFunctionMode):
    """Records, among the tensors torch operations are called with, those whose autograd edge
    ``(grad_fn, output_nr)`` is one of ``wanted``."""

    def __init__(self, wanted: dict[tuple[Any, int], None]):
        super().__init__()
        self.wanted = wanted
        self.found: dict[tuple[Any, int], torch.Tensor] = {}

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.offer(args)
        if kwargs:
            self.offer(kwargs)
        return func(*args, **(kwargs or {}))

    def offer(self, obj: Any) -> None:
        for t in _tensors(obj):
            if t.grad_fn is not None:
                edge = (t.grad_fn, t.output_nr)
                if edge in self.wanted:
                    self.found.setdefault(edge, t)


def _identify(
    f: Callable, t0: torch.Tensor, y: Any, frontier: dict[tuple[Any, int], None], owner: str
) -> list[torch.Tensor]:
    """The non-leaf tensors behind the ``frontier`` edges, from a recorded evaluation of ``f``."""
    recorder = _Recorder(frontier)
    with torch.enable_grad(), recorder:
        out = f(t0, y)
    recorder.offer(out)
    missing = [node for node, nr in frontier if (node, nr) not in recorder.found]
    if missing:
        names = ", ".join(sorted({type(node).__name__ for node in missing}))
        raise ValueError(
            f"{owner}: f uses a tensor that requires grad and was computed outside f (its grad_fn is "
            f"{names}), but torchnde could not tell which tensor it is; pass {owner}(params=[...]) "
            "listing the tensors to differentiate"
        )
    return [recorder.found[edge] for edge in frontier]
