"""The scaled error norm of a step, ``|dt| * norm(e / (atol + rtol * max(|y0|, |y1|)))``, in the
loop's layout (a host float globally, a float64 ``[B]`` tensor per sample)."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from ..controllers import rms_norm
from ..solvers import AbstractSolver
from .problem import Problem, tuple_like

__all__ = ["ErrorNorm", "layout_tolerance", "scalar"]


@functools.lru_cache(maxsize=64)
def scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 0-d tensor of ``value``, shared between solves (never written to; created outside
    inference mode, so that a solve under ``torch.inference_mode`` cannot poison the cache)."""
    with torch.inference_mode(False):
        return torch.tensor(value, dtype=dtype, device=device)


def layout_tolerance(problem: Problem, tol: Any, name: str) -> Any:
    """A float, or the tolerance broadcast to the state in the loop's layout."""
    if isinstance(tol, (int, float)):
        return float(tol)
    parts = list(tol) if tuple_like(tol) else [tol]
    if len(parts) != len(problem.shapes):
        raise ValueError(f"{name} has {len(parts)} parts for a state of {len(problem.shapes)}")
    lead = (problem.batch,) if problem.per_sample else ()
    flat = []
    for p, shape in zip(parts, problem.shapes):
        p = torch.as_tensor(p, dtype=problem.dtype, device=problem.device)
        try:
            p = p.broadcast_to((*lead, *shape))
        except RuntimeError as err:
            raise ValueError(
                f"{name} of shape {tuple(p.shape)} does not broadcast to the state {(*lead, *shape)}"
            ) from err
        flat.append(p if not problem.is_tuple else p.reshape(*lead, -1))
    return torch.cat(flat, -1) if problem.is_tuple else flat[0]


class ErrorNorm:
    """``|dt| * combine(norm(e / (atol + rtol * max(|y0|, |y1|))))`` for one solve.

    In the global layout it returns a Python float (the step's one synchronisation, also for
    solvers with two estimates); per sample a float64 ``[B]`` tensor. The default RMS norm is
    split into a device-side 2-norm and a host-side division by ``sqrt(N)``.
    """

    def __init__(self, problem: Problem, solver: AbstractSolver, ctrl: Any):
        self.solver = solver
        self.rtol = layout_tolerance(problem, ctrl.rtol, "rtol")
        atol = layout_tolerance(problem, ctrl.atol, "atol")
        self.atol = (
            scalar(atol, problem.dtype, problem.device)
            if isinstance(atol, float)
            else torch.as_tensor(atol, dtype=problem.dtype, device=problem.device)
        )
        self.per_sample = problem.per_sample
        self._abs: tuple[Any, Any] = (None, None)
        user = ctrl.norm
        if problem.per_sample:
            norm = user or rms_norm
            self.norm = lambda x: norm(x.reshape(x.shape[0], -1)).to(torch.float64)
        else:
            if user is None:  # RMS: a device-side 2-norm, divided by sqrt(N) on the host
                self._tensor_norm, self._factor = torch.linalg.vector_norm, 1.0 / math.sqrt(problem.numel)
            else:
                self._tensor_norm, self._factor = (lambda x: user(x.reshape(-1))), 1.0
            tensor_norm, factor = self._tensor_norm, self._factor  # no reference to self: no cycle
            self.norm = lambda x: float(tensor_norm(x)) * factor
            # the same norm left on the device, a float64 0-d tensor (the fused compiled loop)
            self.device_norm = lambda x: tensor_norm(x).double() * factor

    def select(self, keep: torch.Tensor) -> None:
        """Follow a compacted per-sample batch: per-sample tolerances keep only ``keep``."""
        if isinstance(self.rtol, torch.Tensor) and self.rtol.ndim > 0:
            self.rtol = self.rtol[keep]
        if self.atol.ndim > 0:
            self.atol = self.atol[keep]
        self._abs = (None, None)

    def scale(self, y: torch.Tensor, y1: torch.Tensor | None = None) -> torch.Tensor:
        if y1 is None:
            big = y.abs()
        else:  # |y0| is the previous step's |y1| when that step was accepted
            a0 = self._abs[1] if self._abs[0] is y else y.abs()
            a1 = y1.abs()
            self._abs = (y1, a1)
            big = torch.maximum(a0, a1)
        if isinstance(self.rtol, float):
            return torch.add(self.atol, big, alpha=self.rtol)
        return torch.addcmul(self.atol, self.rtol, big)

    def __call__(self, y0: torch.Tensor, y1: torch.Tensor, errors: tuple[torch.Tensor, ...], h: Any) -> Any:
        grad = torch.is_grad_enabled()
        if grad:  # step-size decisions are not differentiated (cheaper than a no_grad context)
            torch.set_grad_enabled(False)
        try:
            scale = self.scale(y0, y1)
            if self.per_sample:
                norms = tuple(self.norm(e / scale) for e in errors)
                return self.solver.combine_error_norms(norms) * h
            if len(errors) == 1:
                norms = (self.norm(errors[0] / scale),)
            else:  # several estimates (DOP853): still one transfer to the host
                both = torch.stack([self._tensor_norm(e / scale) for e in errors]).tolist()
                norms = tuple(n * self._factor for n in both)
            return self.solver.combine_error_norms(norms) * abs(h)
        finally:
            if grad:
                torch.set_grad_enabled(True)

    def on_device(
        self, y0: torch.Tensor, y1: torch.Tensor, errors: tuple[torch.Tensor, ...], h: torch.Tensor
    ) -> torch.Tensor:
        """The global layout's norm left on the device, a float64 0-d tensor (a fused compiled
        block: :mod:`.fused`); no reuse of the previous step's ``|y1|`` (a traced block keeps no
        Python state) and no gradient."""
        with torch.no_grad():
            scale = self.scale(y0)
            scale = torch.maximum(scale, self.scale(y1))
            norms = tuple(self.device_norm(e / scale) for e in errors)
            return self.solver.combine_error_norms(norms) * h.abs()
