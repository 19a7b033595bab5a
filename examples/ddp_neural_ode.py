"""Train a neural ODE across processes: DistributedDataParallel under torchrun, the experiments' trainer.

The same script runs in one process and under ``torchrun``; with the same global batch the
parameters come out the same (to rounding), whatever the number of ranks:

```bash
python examples/ddp_neural_ode.py --out runs/ddp-1                                    # one process
torchrun --standalone --nproc_per_node=2 examples/ddp_neural_ode.py --out runs/ddp-2  # two, gloo on CPU
```

What makes it work (see ``docs/distributed.md``):

- the data is drawn from ``run.generator()``, common to every rank, and each step's global batch
  of indices too; each rank takes its contiguous block of it with ``run.shard``;
- the model is wrapped with ``run.ddp`` (``DistributedDataParallel``: rank 0's initial
  parameters on every rank, gradients averaged over the ranks in ``backward``), so with a global
  batch that the number of ranks divides, the averaged gradient is the global batch's;
- the solve is ``per_sample=True``: each trajectory has its own step size, so a shard's solution
  does not depend on which other rows share it (one global step size would be set by the hardest
  row of each shard, and the ranks would train on different discretisations);
- ``run.train`` averages the reported loss over the ranks, and rank 0 alone writes the
  checkpoint (``out/checkpoints/fit.pt``), ``metrics.json`` and ``report.md``.

Neural ODEs: Chen, Rubanova, Bettencourt and Duvenaud, *Neural Ordinary Differential Equations*,
NeurIPS 2018 (arXiv:1806.07366). DistributedDataParallel: Li et al., *PyTorch Distributed:
Experiences on Accelerating Data Parallel Training*, VLDB 2020 (arXiv:2006.15704).
"""

from __future__ import annotations

import argparse

import torch

import torchnde as nde
from torchnde.experiments import Run, experiment, run_experiment

NAME = "ddp-neural-ode"
SPIRAL = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)


class Field(torch.nn.Module):
    """``f(t, y) = MLP(y)``, 2-32-2 with tanh, in float64."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 32, dtype=torch.float64),
            torch.nn.Tanh(),
            torch.nn.Linear(32, 2, dtype=torch.float64),
        )

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


def spiral_data(run: Run, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` trajectories of the linear spiral ``dy/dt = y A^T`` from random starts (every rank
    draws the same ones: ``run.generator`` does not depend on the rank)."""
    y0 = torch.randn(n, 2, dtype=torch.float64, generator=run.generator())
    ts = torch.linspace(0.0, 1.0, 10, dtype=torch.float64)
    ys = nde.solve(lambda t, y: y @ SPIRAL.T, y0, ts, rtol=1e-9, atol=1e-11).ys
    return y0, ts, ys


# the command line's sizes (main() sets them before the run)
OPTIONS = {"steps": 20, "batch": 32, "trajectories": 256}


@experiment(
    NAME,
    title="A neural ODE trained with DistributedDataParallel (the torchrun recipe)",
    paper="Chen et al., Neural Ordinary Differential Equations, NeurIPS 2018",
    claim="a neural ODE fits spiral trajectories; here: the training loss falls",
)
def fit(run: Run) -> None:
    opts = OPTIONS
    y0, ts, ys = spiral_data(run, opts["trajectories"])
    field = Field()  # each rank draws its own; DDP gives every rank rank 0's (the run's seed)
    model = run.ddp(field)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    batches = run.generator(1)  # the global batches: the same sequence on every rank

    def step(i: int) -> dict[str, float]:
        rows = run.shard(torch.randperm(opts["trajectories"], generator=batches)[: opts["batch"]])
        sol = nde.solve(model, y0[rows], ts, "dopri5", rtol=1e-7, atol=1e-9, per_sample=True)
        loss = (sol.ys - ys[:, rows]).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()  # DDP averages the gradients over the ranks here
        optimiser.step()
        return {"loss": loss.item()}

    history = run.train("fit", step, opts["steps"], {"model": field, "optimiser": optimiser}, every=10)
    first, last = history[0]["loss"], history[-1]["loss"]
    run.metric("loss_first", first)
    run.metric("loss_last", last)
    run.check("training loss falls (last / first)", last / first, "<", 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (the ranks share it)")
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps (default 20)")
    parser.add_argument("--batch", type=int, default=32, help="global batch size (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    OPTIONS.update(steps=args.steps, batch=args.batch)
    doc = run_experiment(NAME, quick=True, seed=args.seed, out=args.out, progress=False, fresh=True)
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
