"""torchdiffeq's ``ode_demo``-style training, side by side: one training iteration (forward
solve, loss, backward, optimiser step) through ``torchdiffeq.odeint``/``odeint_adjoint`` and
through ``torchnde.compat.torchdiffeq.odeint``/``odeint_adjoint``.

The problem (written from the description of torchdiffeq's ``examples/ode_demo.py``): the cubic
spiral ``dy/dt = (y**3) @ A`` with ``A = [[-0.1, 2], [-2, -0.1]]``, ``y0 = [[2, 0]]``, its true
trajectory at 1000 points on ``[0, 25]`` from a tight solve; a model ``Linear(2, 50) -> Tanh ->
Linear(50, 2)`` applied to ``y**3`` (weights ``normal(std=0.1)``, biases 0, seeded); minibatches
of 20 random start points with 10 time steps; RMSprop at lr 1e-3; loss ``mean |pred - true|``;
dopri5 at torchdiffeq's defaults (rtol 1e-7, atol 1e-9). float32, one thread.

``python -m benchmarks.ode_demo [--out DIR] [--quick]`` writes ``ode_demo.json`` and ``ode_demo.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .common import Candidate, Settings, configure_threads, fmt_time, measure_group

TRUE_A = [[-0.1, 2.0], [-2.0, -0.1]]
DATA_SIZE = 1000
T_END = 25.0
BATCH_TIME = 10
BATCH_SIZE = 20
LR = 1e-3


class Spiral(torch.nn.Module):
    """The true dynamics ``(y**3) @ A``."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("a", torch.tensor(TRUE_A, dtype=dtype))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.mm(y**3, self.a) if y.ndim == 2 else (y**3) @ self.a


class ODEFunc(torch.nn.Module):
    """``Linear(2, 50) -> Tanh -> Linear(50, 2)`` on ``y**3``; weights ``normal(0, 0.1)``, biases 0."""

    def __init__(self, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.Tanh(), torch.nn.Linear(50, 2))
        with torch.no_grad():
            for m in self.net:
                if isinstance(m, torch.nn.Linear):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.1)
                    m.bias.zero_()
        self.to(dtype)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y**3)


def true_data(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t, true_y)``: 1000 times on ``[0, 25]`` and the trajectory ``[1000, 1, 2]`` from a
    float64 solve at rtol 1e-10, atol 1e-12 (torchnde's own dopri5), cast to ``dtype``."""
    import torchnde as nde

    t = torch.linspace(0.0, T_END, DATA_SIZE, dtype=torch.float64)
    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        ys = nde.solve(Spiral(torch.float64), y0, t, "dopri5", rtol=1e-10, atol=1e-12, max_steps=10**6).ys
    return t.to(dtype), ys.to(dtype)


def batches(t: torch.Tensor, true_y: torch.Tensor, seed: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless seeded minibatches ``(batch_y0 [20, 1, 2], batch_t [10], batch_y [10, 20, 1, 2])``."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        s = torch.randperm(DATA_SIZE - BATCH_TIME, generator=gen)[:BATCH_SIZE]
        batch_y = torch.stack([true_y[s + i] for i in range(BATCH_TIME)], dim=0)
        yield true_y[s], t[:BATCH_TIME], batch_y


class Trainer:
    """A seeded model, its RMSprop and its minibatch stream; ``step()`` is one iteration."""

    def __init__(self, odeint: Callable, adjoint: bool, data: tuple[torch.Tensor, torch.Tensor],
                 seed: int = 0, dtype: torch.dtype = torch.float32):  # fmt: skip
        self.odeint, self.adjoint = odeint, adjoint
        self.func = ODEFunc(seed, dtype)
        self.opt = torch.optim.RMSprop(self.func.parameters(), lr=LR)
        self.stream = batches(*data, seed=seed)

    def step(self) -> float:
        batch_y0, batch_t, batch_y = next(self.stream)
        self.opt.zero_grad()
        pred = self.odeint(self.func, batch_y0, batch_t, method="dopri5")  # rtol 1e-7, atol 1e-9
        loss = torch.mean(torch.abs(pred - batch_y))
        loss.backward()
        self.opt.step()
        return loss.item()


def interfaces() -> dict[str, tuple[str, Callable, bool]]:
    """``key -> (label, odeint function, is adjoint)``."""
    import torchdiffeq

    from torchnde.compat import torchdiffeq as compat

    return {
        "torchdiffeq": ("torchdiffeq.odeint", torchdiffeq.odeint, False),
        "torchnde": ("torchnde.compat.torchdiffeq.odeint", compat.odeint, False),
        "torchdiffeq_adjoint": ("torchdiffeq.odeint_adjoint", torchdiffeq.odeint_adjoint, True),
        "torchnde_adjoint": ("torchnde.compat.torchdiffeq.odeint_adjoint", compat.odeint_adjoint, True),
    }


QUICK = Settings(
    warmup=2, repeats=7, min_repeats=3, group_budget_s=5.0, min_sample_s=0.05, compile_timeout_s=60.0
)
FULL = Settings(
    warmup=3, repeats=31, min_repeats=11, group_budget_s=40.0, min_sample_s=0.2, compile_timeout_s=60.0
)


def run(settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    data = true_data(torch.float32)
    trainers = {key: Trainer(fn, adj, data) for key, (_, fn, adj) in interfaces().items()}
    labels = {key: label for key, (label, _, _) in interfaces().items()}
    # the same seeded model and minibatches: the first losses agree (tests/test_compat_ode_demo.py)
    first = {key: [tr.step() for _ in range(3)] for key, tr in trainers.items()}
    candidates = [Candidate(key, labels[key], run=tr.step) for key, tr in trainers.items()]
    # each pair repeats the same number of iterations per sample, so both trainers are timed over
    # the same stretch of training (later iterations take more steps as the spiral is learnt)
    timings = measure_group(
        candidates,
        settings,
        log,
        shared_inner=(("torchdiffeq", "torchnde"), ("torchdiffeq_adjoint", "torchnde_adjoint")),
    )
    rows = {}
    for key, timing in timings.items():
        rows[key] = {
            "label": labels[key],
            "median_s": timing.median_s,
            "min_s": timing.min_s,
            "samples": len(timing.times_s),
            "inner": timing.inner,
            "first_losses": first[key],
        }

    def paired(base: str, ours: str) -> float:
        """The median over samples of each sample's ratio: sample i of both ran the same iterations."""
        pairs = zip(timings[base].times_s, timings[ours].times_s)
        return statistics.median(b / o for b, o in pairs)

    ratios = {
        "odeint": paired("torchdiffeq", "torchnde"),
        "odeint_adjoint": paired("torchdiffeq_adjoint", "torchnde_adjoint"),
    }
    return {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
        "speedup": ratios,
    }


def markdown(result: dict[str, Any]) -> str:
    rows, speedup = result["rows"], result["speedup"]
    lines = [
        "# ode_demo training iteration: torchdiffeq vs torchnde.compat.torchdiffeq",
        "",
        "torchdiffeq's `examples/ode_demo.py` setting: `dy/dt = (y**3) @ A` spiral, model "
        "Linear(2, 50)-Tanh-Linear(50, 2) on `y**3`, batch 20 start points x 10 time steps, RMSprop lr "
        "1e-3, loss mean |pred - true|, dopri5 at rtol 1e-7, atol 1e-9, float32, one thread. One "
        "iteration = forward solve, loss, backward, optimiser step; time = median over interleaved "
        "samples (each sample the mean of `inner` back-to-back iterations on fresh minibatches; both "
        "interfaces of a pair run the same `inner`, so sample i of both covers the same stretch of training, "
        "and the speed-up is the median over samples of sample i's ratio).",
        "",
        "| interface | median / iteration | min | samples x inner | speed-up vs torchdiffeq |",
        "|---|---:|---:|---:|---:|",
    ]
    pairs = {"torchnde": "odeint", "torchnde_adjoint": "odeint_adjoint"}
    for key, r in rows.items():
        ratio = f"{speedup[pairs[key]]:.2f}x" if key in pairs else "—"
        lines.append(
            f"| `{r['label']}` | {fmt_time(r['median_s'])} | {fmt_time(r['min_s'])} | "
            f"{r['samples']} x {r['inner']} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ode_demo", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    configure_threads()
    result = run(QUICK if args.quick else FULL, lambda s: print(s, file=sys.stderr, flush=True))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ode_demo.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "ode_demo.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
