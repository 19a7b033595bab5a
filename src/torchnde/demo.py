"""``make demo``: solve a small problem and print the result (until the main job exists)."""

from __future__ import annotations

import math

import torch

import torchnde as nde


def main() -> None:
    """Solve the harmonic oscillator and a batch of decays, and print what came out."""
    torch.set_default_dtype(torch.float64)

    def oscillator(
        t: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, v = y
        return v, -x

    ts = torch.linspace(0, 2 * math.pi, 5)
    sol = nde.solve(
        oscillator, (torch.tensor(1.0), torch.tensor(0.0)), ts, solver="dopri8", rtol=1e-10, atol=1e-12
    )
    print("harmonic oscillator x(t) = cos t with dopri8:")
    for t, x in zip(ts.tolist(), sol.ys[0].tolist()):
        print(f"  t = {t:6.3f}   x = {x:+.12f}   cos t = {math.cos(t):+.12f}")
    print(f"  stats: {sol.stats.as_dict()}")

    rates = torch.tensor([0.5, 1.0, 5.0, 50.0])
    sol = nde.solve(lambda t, y: -rates * y, torch.ones(4), torch.tensor([0.0, 1.0]), per_sample=True)
    print("per-sample decays y' = -k y to t = 1 (each sample has its own step size):")
    for k, y, steps in zip(rates.tolist(), sol.ys[-1].tolist(), sol.stats.steps.tolist()):
        print(f"  k = {k:5.1f}   y(1) = {y:.10f}   exp(-k) = {math.exp(-k):.10f}   steps = {steps}")


if __name__ == "__main__":
    main()
