"""The benchmark groups: which problem, which candidates, and the acceptance targets.

Group keys (the row names in ``core.md``/``core.json``):

- ``node_fwd/no_grad/b16``, ``node_fwd/no_grad/b1024``: neural ODE forward solve under
  ``torch.no_grad()``; torchnde (global step) vs torchdiffeq, torchode, diffrax, scipy; plus
  "f alone": as many bare vector-field calls as torchnde makes (a floor, not a peer).
- ``node_fwd/grad/b16``, ``node_fwd/grad/b1024``: the same with grad enabled (parameters require
  grad, so the autograd graph is recorded; no backward); torch libraries only.
- ``per_sample/no_grad/b1024``: torchnde ``per_sample=True`` vs torchode (per-sample by design).
- ``compile/{no_grad,grad}/b{16,1024}``: torchnde's ``solve(compile=True)`` (the subject: its
  loop compiled in blocks of steps); ``f`` wrapped in ``torch.compile``, used by torchnde and by
  torchdiffeq; the eager rows re-timed alongside, and diffrax (jit) without gradients.
- ``rk4/{no_grad,grad}/b1``: 1000 fixed RK4 steps; time per step vs a hand-written loop and
  torchdiffeq's ``rk4``.
- ``train/backprop/b256``, ``train/adjoint/b256``: one training iteration (solve, MSE on the 10
  saved points, backward) with each gradient strategy, beside torchdiffeq's ``odeint`` /
  ``odeint_adjoint`` and diffrax's ``RecursiveCheckpointAdjoint`` / ``BacksolveAdjoint``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import torchnde as nde

from .common import Candidate
from .jax_peer import diffrax_dopri5
from .peers import (
    count_calls,
    hand_written_rk4,
    scipy_rk45,
    torchdiffeq_dopri5,
    torchdiffeq_rk4,
    torchnde_dopri5,
    torchnde_rk4,
    torchode_dopri5,
    vector_field_only,
)
from .problems import ATOL, RTOL, Problem, neural_ode, rk4_problem
from .training import diffrax_training, torch_strategies, torch_training, training_problem

RK4_DT = 1e-3


@dataclass
class Group:
    key: str
    title: str
    problem: Problem
    subject: str  # the candidate key whose time is the numerator of every ratio
    build: Callable[[], list[Candidate]]  # built just before the group runs
    per_step: bool = False  # compare time per step rather than time per solve
    targets: dict[str, float] = field(default_factory=dict)  # peer key -> target for subject/peer
    note: str = ""


def _mode(grad: bool) -> str:
    return "grad" if grad else "no_grad"


def _node_group(problem: Problem, grad: bool, targets: dict[str, float]) -> Group:
    f = problem.field

    def build() -> list[Candidate]:
        cands = [
            torchnde_dopri5("torchnde", "torchnde dopri5 (global step)", problem, f, grad),
            torchdiffeq_dopri5("torchdiffeq", "torchdiffeq dopri5", problem, f, grad),
            torchode_dopri5("torchode", "torchode Dopri5 (per-sample)", problem, f, grad),
        ]
        if not grad:
            cands.append(diffrax_dopri5("diffrax", "diffrax Dopri5", problem))
            cands.append(scipy_rk45("scipy", "scipy RK45", problem))
        n = count_calls(
            lambda fn: nde.solve(fn, problem.y0, problem.t_eval, "dopri5", rtol=RTOL, atol=ATOL), f
        )
        cands.append(vector_field_only("f_only", f"f alone × {n} calls", problem, f, grad, n))
        return cands

    b = problem.batch
    what = "grad enabled, no backward" if grad else "torch.no_grad()"
    return Group(
        f"node_fwd/{_mode(grad)}/b{b}",
        f"Neural ODE forward, {what}, batch {b}",
        problem,
        "torchnde",
        build,
        targets=targets,
    )


def _per_sample_group(problem: Problem, targets: dict[str, float], timeout_s: float) -> Group:
    f = problem.field

    def build() -> list[Candidate]:
        compiled = torchnde_dopri5(
            "torchnde_ps_step",
            "torchnde per_sample=True, step under torch.compile",
            problem,
            f,
            False,
            per_sample=True,
            compile_step=True,
        )
        compiled.first_call_timeout_s = timeout_s
        compiled.note = "first call = compile"
        return [
            torchnde_dopri5(
                "torchnde_ps", "torchnde dopri5 per_sample=True", problem, f, False, per_sample=True
            ),
            torchode_dopri5("torchode", "torchode Dopri5 (per-sample)", problem, f, False),
            torchnde_dopri5("torchnde", "torchnde dopri5 (global step, for reference)", problem, f, False),
            compiled,
        ]

    b = problem.batch
    return Group(
        f"per_sample/no_grad/b{b}",
        f"Per-sample step sizes, torch.no_grad(), batch {b}",
        problem,
        "torchnde_ps",
        build,
        targets=targets,
    )


def _compile_group(problem: Problem, grad: bool, timeout_s: float, targets: dict[str, float]) -> Group:
    f = problem.field

    def build() -> list[Candidate]:
        torch._dynamo.reset()  # each group compiles afresh: its first call is the compile time
        fc = torch.compile(f, dynamic=False)
        step = "torchnde dopri5, step under torch.compile (solve(compile=True))"
        cands = [
            torchnde_dopri5("torchnde_compiled", "torchnde dopri5 + compiled f", problem, fc, grad),
            torchdiffeq_dopri5("torchdiffeq_compiled", "torchdiffeq dopri5 + compiled f", problem, fc, grad),
            torchnde_dopri5("torchnde_step", step, problem, f, grad, compile_step=True),
            torchnde_dopri5("torchnde", "torchnde dopri5 (eager f)", problem, f, grad),
            torchdiffeq_dopri5("torchdiffeq", "torchdiffeq dopri5 (eager f)", problem, f, grad),
        ]
        for c in cands[:3]:
            c.first_call_timeout_s = timeout_s
            c.note = "first call = compile"
        if not grad:
            cands.append(diffrax_dopri5("diffrax", "diffrax Dopri5", problem))
        return cands

    b = problem.batch
    what = "grad enabled" if grad else "torch.no_grad()"
    return Group(
        f"compile/{_mode(grad)}/b{b}",
        f"solve(compile=True) and torch.compile(f) (dynamic=False), {what}, batch {b}",
        problem,
        "torchnde_step",
        build,
        targets=targets,
    )


def _rk4_group(problem: Problem, grad: bool, targets: dict[str, float]) -> Group:
    def build() -> list[Candidate]:
        return [
            torchnde_rk4("torchnde", f"torchnde rk4, dt={RK4_DT:g}", problem, RK4_DT, grad),
            hand_written_rk4("hand", "hand-written PyTorch RK4 loop", problem, RK4_DT, grad),
            torchdiffeq_rk4("torchdiffeq", "torchdiffeq rk4 (step_size)", problem, RK4_DT, grad),
        ]

    what = "grad enabled" if grad else "torch.no_grad()"
    return Group(
        f"rk4/{_mode(grad)}/b1",
        f"Fixed-step RK4, 1000 steps of {RK4_DT:g} on [0, 1], {what}, batch 1",
        problem,
        "torchnde",
        build,
        per_step=True,
        targets=targets,
    )


def _train_group(adjoint: bool, targets: dict[str, float]) -> Group:
    problem, target = training_problem()

    def build() -> list[Candidate]:
        rows = torch_strategies(problem)
        if adjoint:
            keys = [
                "torchnde_adjoint",
                "torchdiffeq_adjoint",
                "torchdiffeq_adjoint_semi",
                "torchnde_adjoint_full",
            ]
        else:
            keys = ["torchnde_backprop", "torchdiffeq", "torchnde_checkpoint", "torchnde_reversible"]
        cands = [torch_training(k, rows[k][0], problem, target, rows[k][1]) for k in keys]
        label = "diffrax BacksolveAdjoint" if adjoint else "diffrax RecursiveCheckpointAdjoint (its default)"
        cands.append(diffrax_training("diffrax", label, problem, target, backsolve=adjoint))
        return cands

    kind = "adjoint" if adjoint else "backprop"
    return Group(
        f"train/{kind}/b{problem.batch}",
        f"One training iteration (solve + MSE on 10 points + backward), {kind}, batch {problem.batch}",
        problem,
        "torchnde_adjoint" if adjoint else "torchnde_backprop",
        build,
        targets=targets,
    )


def all_groups(compile_timeout_s: float, with_compile: bool = True) -> list[Group]:
    """Every group, in run order. ``targets`` hold the acceptance targets (torchnde / peer)."""
    b16, b1024, small = neural_ode(16), neural_ode(1024), rk4_problem()
    groups = [
        _node_group(b16, False, {"torchdiffeq": 0.35}),
        _node_group(b1024, False, {"torchdiffeq": 0.8}),
        _node_group(b16, True, {}),
        _node_group(b1024, True, {}),
        _per_sample_group(b1024, {"torchode": 0.8}, compile_timeout_s),
    ]
    if with_compile:
        # issue 19: solve(compile=True) at most 0.4x eager and 3x diffrax at batch 16, 1.3x diffrax at 1024
        targets = {(False, 16): {"torchnde": 0.4, "diffrax": 3.0}, (False, 1024): {"diffrax": 1.3}}
        groups += [
            _compile_group(p, grad, compile_timeout_s, targets.get((grad, p.batch), {}))
            for grad in (False, True)
            for p in (b16, b1024)
        ]
    groups += [_rk4_group(small, False, {"hand": 1.15}), _rk4_group(small, True, {})]
    groups += [_train_group(False, {"torchdiffeq": 0.7}), _train_group(True, {"torchdiffeq_adjoint": 0.5})]
    return groups
