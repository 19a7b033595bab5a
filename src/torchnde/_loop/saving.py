"""Saving: outputs inside a step from the solver's continuous extension, and the dense
``sol.evaluate(t)`` built from the kept steps, for both layouts."""

from __future__ import annotations

import bisect
from collections.abc import Callable

import torch

from ..solvers import AbstractSolver

__all__ = ["global_dense", "interpolate", "interpolate_host", "per_sample_dense"]


def interpolate_host(
    solver: AbstractSolver, s: float, h: float, y: torch.Tensor, stages: torch.Tensor, s_out: list[float]
) -> torch.Tensor:
    """States ``[m, *state]`` at the times ``s_out`` inside the step ``[s, s + h]``, from its
    continuous extension."""
    poly = solver.dense_polynomial
    matrix_t = poly.matrix_t(y.dtype, y.device)  # [degree, S]
    degree = matrix_t.shape[0]
    powers = [[((si - s) / h) ** k for k in range(1, degree + 1)] for si in s_out]
    weights = torch.tensor(powers, dtype=y.dtype, device=y.device) @ matrix_t  # [m, S]: tiny
    out = torch.addmm(y.reshape(1, -1), weights, stages.reshape(-1, stages.shape[-1]).T, alpha=h)
    return out.view(len(s_out), *y.shape)


def global_dense(
    solver: AbstractSolver,
    pieces: list[tuple[float, float, torch.Tensor, torch.Tensor]],
    s0: float,
    s_end: float,
) -> Callable[[torch.Tensor], torch.Tensor]:
    starts = [p[0] for p in pieces]

    def dense(s: torch.Tensor) -> torch.Tensor:
        flat = s.reshape(-1).tolist()
        out = []
        for si in flat:
            if not (s0 - 1e-12 * abs(s0) <= si <= s_end + 1e-12 * abs(s_end)) or not pieces:
                raise ValueError(f"evaluate() time {si * 1:.6g} is outside the solved interval")
            k = min(max(bisect.bisect_right(starts, si) - 1, 0), len(pieces) - 1)
            start, h, y, stages = pieces[k]
            out.append(interpolate_host(solver, start, h, y, stages, [si])[0])
        return torch.stack(out).reshape(*s.shape, -1)  # flat per time: the evaluator unflattens

    return dense


def interpolate(
    solver: AbstractSolver, y: torch.Tensor, stages: torch.Tensor, h: torch.Tensor, theta: torch.Tensor
) -> torch.Tensor:
    """Continuous extension per sample: ``y [B, N]``, ``stages [B, N, S]``, ``h`` and ``theta``
    of shape ``[B, m]`` (or ``h [B, 1]``); returns ``[B, m, N]``. The ``[B, m]``-shaped ``y`` and
    ``stages`` of :func:`per_sample_dense` (one piece per time) broadcast the same way."""
    poly = solver.dense_polynomial
    coeffs = stages @ poly.matrix(y.dtype, y.device)  # [..., N, degree]
    powers = poly.powers(theta.to(y.dtype))  # [..., degree]
    if y.ndim == 2:  # one step per sample, m times in it
        return y.unsqueeze(1) + h.to(y.dtype).unsqueeze(-1) * (powers @ coeffs.transpose(1, 2))
    return y + h.to(y.dtype).unsqueeze(-1) * (coeffs @ powers.unsqueeze(-1)).squeeze(-1)


def per_sample_dense(
    solver: AbstractSolver, pieces: list[tuple[torch.Tensor, ...]], s_eval: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    B = s_eval.shape[0]
    if pieces:
        starts = torch.stack([p[0] for p in pieces])  # [K, B]
        hs = torch.stack([p[1] for p in pieces])
        ok = torch.stack([p[4] for p in pieces])
        ys0 = torch.stack([p[2] for p in pieces])  # [K, B, N]
        stages = torch.stack([p[3] for p in pieces])  # [K, B, N, S]

    def dense(s: torch.Tensor) -> torch.Tensor:
        shape = s.shape
        if s.ndim == 0:
            s = s.expand(B, 1)
        elif s.ndim == 1 and s.shape[0] == B:
            s = s.unsqueeze(-1)
        elif s.ndim == 1:
            s = s.expand(B, -1)
        if s.shape[0] != B:
            raise ValueError(
                f"per-sample evaluate() needs times of shape [batch] or [batch, m], got {tuple(shape)}"
            )
        lo, hi = s_eval[:, :1], s_eval[:, -1:]
        if not pieces or bool(((s < lo - 1e-12 * lo.abs()) | (s > hi + 1e-12 * hi.abs())).any()):
            raise ValueError("evaluate() time outside the solved interval")
        # piece k covers [start_k, start_k + h_k] for accepted pieces of each sample
        inside = (
            ok.unsqueeze(-1) & (starts.unsqueeze(-1) <= s) & (s <= (starts + hs).unsqueeze(-1))
        )  # [K, B, m]
        k = inside.int().argmax(0)  # [B, m]
        bidx = torch.arange(B, device=s.device).unsqueeze(-1).expand_as(k)
        st, h = starts[k, bidx], hs[k, bidx]
        theta = ((s - st) / torch.where(h > 0, h, 1.0)).clamp(0, 1)
        out = interpolate(solver, ys0[k, bidx], stages[k, bidx], h, theta)
        if len(shape) == 0:
            return out[:, 0]
        if len(shape) == 1 and shape[0] == B:
            return out[:, 0]
        return out

    return dense
