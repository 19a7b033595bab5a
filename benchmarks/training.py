"""Training-iteration rows: one forward solve, an MSE loss on the saved points, and the
backward pass, for each gradient strategy and each peer library.

The problem is the neural ODE of the core rows (MLP 2-64-64-2, tanh, dopri5 at rtol 1e-5,
atol 1e-7, 10 outputs on [0, T]) at batch 256, with a fixed random target ``[10, 256, 2]``.
A row's ``run`` is what a training step costs apart from the optimiser: solve, loss, backward,
and clearing the gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import torchnde as nde

from .common import Candidate, Probe, short_error
from .jax_peer import diffrax_available, diffrax_dopri5_solve
from .peers import CountingField, _final
from .problems import ATOL, RTOL, Problem, make_field, make_y0

BATCH = 256

SolveYs = Callable[[Callable, torch.Tensor, torch.Tensor], torch.Tensor]


def training_problem(horizon: float = 1.0, batch: int = BATCH) -> tuple[Problem, torch.Tensor]:
    """The neural ODE on ``[0, horizon]`` and its regression target ``randn(10, batch, 2)``."""
    problem = Problem(
        f"MLP 2-64-64-2, batch {batch}, T={horizon:g}",
        make_field((2, 64, 64, 2)),
        make_y0(batch, 2),
        torch.linspace(0.0, horizon, 10),
    )
    target = torch.randn(10, batch, 2, generator=torch.Generator().manual_seed(5))
    return problem, target


def torch_strategies(problem: Problem) -> dict[str, tuple[str, SolveYs]]:
    """``key -> (label, solve_ys(f, y0, t_eval))`` for every torch row, gradient included."""
    import torchdiffeq

    field = problem.field
    params = tuple(field.parameters())

    def nde_rows(gradient: Any, solver: str = "dopri5", **kw: Any) -> SolveYs:
        def solve_ys(f: Callable, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if not kw:
                return nde.solve(f, y0, t, solver, rtol=RTOL, atol=ATOL, gradient=gradient).ys
            return nde.solve(f, y0, t, solver, gradient=gradient, **kw).ys

        return solve_ys

    def tdq(adjoint: bool, seminorm: bool = False) -> SolveYs:
        def solve_ys(f: Callable, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if not adjoint:
                return torchdiffeq.odeint(f, y0, t, rtol=RTOL, atol=ATOL, method="dopri5")
            options = {"norm": "seminorm"} if seminorm else None
            return torchdiffeq.odeint_adjoint(
                f,
                y0,
                t,
                rtol=RTOL,
                atol=ATOL,
                method="dopri5",
                adjoint_params=params,
                adjoint_options=options,
            )

        return solve_ys

    return {
        "torchnde_backprop": ("torchnde Backprop", nde_rows(nde.Backprop())),
        "torchnde_checkpoint": ("torchnde Checkpoint", nde_rows(nde.Checkpoint())),
        "torchnde_adjoint": ("torchnde Adjoint (seminorm, default)", nde_rows(nde.Adjoint(params=params))),
        "torchnde_adjoint_full": (
            "torchnde Adjoint(seminorm=False)",
            nde_rows(nde.Adjoint(params=params, seminorm=False)),
        ),
        "torchnde_reversible": (
            "torchnde Reversible (reversible_heun, dt=0.05)",
            nde_rows(nde.Reversible(params=params), "reversible_heun", dt=0.05),
        ),
        "torchdiffeq": ("torchdiffeq odeint (backprop)", tdq(False)),
        "torchdiffeq_adjoint": ("torchdiffeq odeint_adjoint (default norm)", tdq(True)),
        "torchdiffeq_adjoint_semi": ("torchdiffeq odeint_adjoint (seminorm)", tdq(True, True)),
    }


def torch_training(
    key: str, label: str, problem: Problem, target: torch.Tensor, solve_ys: SolveYs
) -> Candidate:
    field, y0, t_eval = problem.field, problem.y0, problem.t_eval

    def step(f: Callable) -> torch.Tensor:
        ys = solve_ys(f, y0, t_eval)
        loss = (ys - target).square().mean()
        loss.backward()
        field.zero_grad(set_to_none=True)
        return ys

    def probe() -> Probe:
        counted = CountingField(field)
        ys = solve_ys(counted, y0, t_eval)
        forward = counted.calls
        (ys - target).square().mean().backward()
        field.zero_grad(set_to_none=True)
        return Probe(counted.calls, None, None, _final(ys[-1]), {"forward_calls": forward})

    return Candidate(key, label, run=lambda: step(field), probe=probe)


def diffrax_training(
    key: str, label: str, problem: Problem, target: torch.Tensor, backsolve: bool
) -> Candidate:
    """diffrax Dopri5 under ``jax.jit(jax.value_and_grad(loss))``: ``RecursiveCheckpointAdjoint``
    (its default, checkpointed backprop) or ``BacksolveAdjoint`` (the continuous adjoint)."""
    missing = diffrax_available()
    if missing is not None:
        return Candidate(key, label, error=missing)
    try:
        grad_fn, params, y0 = _diffrax_grad_fn(problem, target, backsolve)
    except Exception as err:  # a diffrax API change must not stop the run
        return Candidate(key, label, error=short_error(err))

    def run() -> Any:
        import jax

        return jax.block_until_ready(grad_fn(params, y0))

    def probe() -> Probe:
        loss, _ = grad_fn(params, y0)
        return Probe(None, None, None, None, {"loss": float(loss)})

    return Candidate(key, label, run=run, probe=probe, note="jit; first call = compile")


def _diffrax_grad_fn(problem: Problem, target: torch.Tensor, backsolve: bool) -> tuple[Any, Any, Any]:
    import diffrax
    import jax
    import jax.numpy as jnp

    params, y0, dopri5 = diffrax_dopri5_solve(problem)
    tgt = jnp.asarray(target.numpy(), jnp.float32)
    adjoint = diffrax.BacksolveAdjoint() if backsolve else diffrax.RecursiveCheckpointAdjoint()

    def loss(args: Any, y_init: Any) -> Any:
        return jnp.mean((dopri5(args, y_init, adjoint=adjoint).ys - tgt) ** 2)

    return jax.jit(jax.value_and_grad(loss)), params, y0


def diffrax_memory_bytes(problem: Problem, target: torch.Tensor, backsolve: bool) -> int | None:
    """XLA's temporary-buffer size for the compiled loss-and-gradient function (its peak working
    memory, forward and backward together), or ``None`` without diffrax."""
    if diffrax_available() is not None:
        return None
    grad_fn, params, y0 = _diffrax_grad_fn(problem, target, backsolve)
    analysis = grad_fn.lower(params, y0).compile().memory_analysis()
    return int(analysis.temp_size_in_bytes) if analysis is not None else None


def measure_memory(solve_ys: SolveYs, problem: Problem, target: torch.Tensor) -> nde.GraphMemory:
    """Bytes a torch row keeps between forward and backward, and its backward peak."""
    field, y0, t_eval = problem.field, problem.y0, problem.t_eval

    def forward() -> torch.Tensor:
        return (solve_ys(field, y0, t_eval) - target).square().mean()

    forward().backward()  # one-off caches are not the graph's
    field.zero_grad(set_to_none=True)
    mem = nde.graph_memory(forward, lambda loss: loss.backward())
    field.zero_grad(set_to_none=True)
    return mem


def seminorm_nfe(
    problem_width: int = 128, horizon: float = 1.0, n_save: int = 2, loss: str = "sum"
) -> dict[str, Any]:
    """Backward evaluations with and without the seminorm, torchnde and torchdiffeq, on an MLP
    2-W-W-2 (W=128: 17,154 parameters), batch 256, dopri5 at rtol 1e-5, atol 1e-7."""
    import torchdiffeq

    field = make_field((2, problem_width, problem_width, 2))
    params = tuple(field.parameters())
    y0 = make_y0(BATCH, 2)
    t_eval = torch.linspace(0.0, horizon, n_save)
    target = torch.randn(n_save, BATCH, 2, generator=torch.Generator().manual_seed(5))
    counted = CountingField(field)

    def reduce(ys: torch.Tensor) -> torch.Tensor:
        err = (ys - target).square()
        return err.sum() if loss == "sum" else err.mean()

    out: dict[str, Any] = {
        "params": sum(p.numel() for p in params),
        "horizon": horizon,
        "n_save": n_save,
        "loss": loss,
    }
    for seminorm in (False, True):
        sol = nde.solve(counted, y0, t_eval, "dopri5", rtol=RTOL, atol=ATOL,
                        gradient=nde.Adjoint(params=params, seminorm=seminorm))  # fmt: skip
        reduce(sol.ys).backward()
        out[f"torchnde_{'semi' if seminorm else 'full'}"] = sol.backward_stats.nfe
        options = {"norm": "seminorm"} if seminorm else None
        ys = torchdiffeq.odeint_adjoint(counted, y0, t_eval, rtol=RTOL, atol=ATOL, method="dopri5",
                                        adjoint_params=params, adjoint_options=options)  # fmt: skip
        counted.calls = 0
        reduce(ys).backward()
        out[f"torchdiffeq_{'semi' if seminorm else 'full'}"] = counted.calls
        field.zero_grad(set_to_none=True)
    for lib in ("torchnde", "torchdiffeq"):
        out[f"{lib}_cut"] = 1.0 - out[f"{lib}_semi"] / out[f"{lib}_full"]
    return out
