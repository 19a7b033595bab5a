"""Shared test helpers: the solver registry and small reference problems."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import scipy.linalg
import torch

import torchnde as nde

ALL_SOLVERS = nde.solvers.names()
# symplectic methods integrate a separable pair (q, p) only; every other solver takes any state
PAIR_SOLVERS = [n for n in ALL_SOLVERS if nde.solvers.resolve_solver(n).separable_pair]
GENERAL_SOLVERS = [n for n in ALL_SOLVERS if n not in PAIR_SOLVERS]
ADAPTIVE_SOLVERS = [n for n in ALL_SOLVERS if nde.solvers.resolve_solver(n).adaptive]
TABLEAU_SOLVERS = [n for n in ALL_SOLVERS if hasattr(nde.solvers.resolve_solver(n), "tableau")]
EXPLICIT_SOLVERS = [
    n for n in ALL_SOLVERS if isinstance(nde.solvers.resolve_solver(n), nde.solvers.ExplicitRungeKutta)
]


def linear_problem(seed: int = 0, n: int = 3, scale: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """A random, mildly contracting linear system ``y' = A y`` and its initial state (float64)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64) * scale / n**0.5
    a = a - 0.5 * torch.eye(n, dtype=torch.float64)
    y0 = torch.randn(n, generator=gen, dtype=torch.float64)
    return a, y0


def expm_solution(a: torch.Tensor, y0: torch.Tensor, t: float) -> torch.Tensor:
    """Exact ``exp(A t) y0``."""
    return torch.from_numpy(scipy.linalg.expm(a.numpy() * t) @ y0.numpy())


def fit_slope(hs: list[float], errs: list[float]) -> float:
    """Least-squares slope of log(err) against log(h)."""
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def flat_grad(module: torch.nn.Module) -> torch.Tensor:
    """Every parameter's ``.grad`` concatenated into one vector (zeros where it is ``None``)."""
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in module.parameters()]
    )


def central_difference(
    loss: Callable[[], torch.Tensor], param: torch.Tensor, index: tuple[int, ...], eps: float = 1e-6
) -> float:
    """``d loss / d param[index]`` by a central difference of step ``eps`` (``param`` restored)."""
    with torch.no_grad():
        original = param[index].item()
        param[index] = original + eps
        up = float(loss())
        param[index] = original - eps
        down = float(loss())
        param[index] = original
    return (up - down) / (2 * eps)


def piecewise_jump_exact(t_jump: float, backwards: bool) -> float:
    """The end value of y' = +-1 + 0.1 y (+1 before t_jump, -1 after) on [0, 1], y = 1 at the
    start (at t = 1 when ``backwards``), in closed form: the jump tests' reference."""
    if backwards:  # from y(1) = 1 down to t = 0
        y_jump = -9.0 * math.exp(0.1 * (t_jump - 1)) + 10
        return (y_jump + 10) * math.exp(-0.1 * t_jump) - 10
    y_jump = 11.0 * math.exp(0.1 * t_jump) - 10
    return (y_jump - 10) * math.exp(0.1 * (1 - t_jump)) + 10


@contextmanager
def registered_toy(
    name: str = "toy-linear", *, known_failure: str | None = None, extra: Callable | None = None
) -> Iterator[dict]:
    """Register a small experiment (a linear fit, one figure, two checks: one passes, one cannot).

    Yields a dict whose ``"steps"`` counts the training steps run; a test sets
    ``run.metrics["crash_at"] = i`` to make step ``i`` raise ``KeyboardInterrupt``.
    ``known_failure`` records the check that cannot pass as a known failure with that reason;
    ``extra(run)`` is called after the checks (to record more, e.g. seed-dependent ones).
    """
    from torchnde.experiments import _framework as fw

    calls = {"steps": 0}

    def run_toy(run: fw.Run) -> None:
        import matplotlib.pyplot as plt

        x = torch.linspace(-1, 1, 32).unsqueeze(1)
        y = 3 * x + 1
        model = torch.nn.Linear(1, 1)
        opt = torch.optim.Adam(model.parameters(), lr=0.1)

        def step(i: int) -> dict:
            calls["steps"] += 1
            if run.metrics.get("crash_at") == i:
                raise KeyboardInterrupt
            opt.zero_grad()
            loss = (model(x) - y).pow(2).mean()
            loss.backward()
            opt.step()
            return {"loss": loss.detach()}

        history = run.train("fit", step, run.pick(60, 120), {"model": model, "opt": opt}, every=10)
        run.metric("final_loss", history[-1]["loss"])
        run.metric("steps_run", len(history))
        run.check("slope", model.weight.item(), ">=", 2.5, claim="3")
        run.check("impossible", 1.0, "<=", 0.0, known_failure=known_failure)
        if extra is not None:
            extra(run)
        fig, ax = plt.subplots()
        ax.plot([h["loss"] for h in history])
        ax.set(xlabel="step", ylabel="loss")
        run.figure("loss", fig, "training loss")
        run.note("a toy")

    fw._load_all()
    fw._REGISTRY[name] = fw.Experiment(name, "Toy", "nobody 2026", "a line", run_toy)
    try:
        yield calls
    finally:
        del fw._REGISTRY[name]
