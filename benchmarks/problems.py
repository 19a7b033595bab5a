"""The benchmark problems: an MLP vector field, its numpy twin, reference solutions, and the
hand-written RK4 loop that the fixed-step rows compare against."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

T0, T1 = 0.0, 1.0
RTOL, ATOL = 1e-5, 1e-7
N_SAVE = 10


class MLPField(nn.Module):
    """``f(t, y) = MLP(y)``: Linear layers with tanh between them (``t`` is ignored)."""

    def __init__(self, widths: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.Linear(w_in, w_out))
            if i < len(widths) - 2:
                layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(W, b), ...]`` per Linear layer as float64 numpy arrays (``y @ W.T + b``)."""
        return [
            (m.weight.detach().double().numpy().copy(), m.bias.detach().double().numpy().copy())
            for m in self.net
            if isinstance(m, nn.Linear)
        ]


@dataclass
class Problem:
    """One initial value problem: the vector field, ``y0 [batch, dim]`` and the output times."""

    name: str
    field: MLPField
    y0: torch.Tensor
    t_eval: torch.Tensor

    @property
    def batch(self) -> int:
        return self.y0.shape[0]


def make_field(widths: tuple[int, ...]) -> MLPField:
    """The MLP with ``torch.manual_seed(0)`` weights (the same for every library)."""
    torch.manual_seed(0)
    return MLPField(widths)


def make_y0(batch: int, dim: int) -> torch.Tensor:
    """``randn(batch, dim)`` from a generator seeded with 1 (independent of the weights)."""
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(1))


def neural_ode(batch: int) -> Problem:
    """MLP 2-64-64-2 (tanh), ``y0 = randn(batch, 2)``, 10 outputs on [0, 1]."""
    return Problem(
        f"MLP 2-64-64-2, batch {batch}",
        make_field((2, 64, 64, 2)),
        make_y0(batch, 2),
        torch.linspace(T0, T1, N_SAVE),
    )


def rk4_problem() -> Problem:
    """MLP 2-16-2 (tanh), batch 1, outputs at 0 and 1."""
    return Problem("MLP 2-16-2, batch 1", make_field((2, 16, 2)), make_y0(1, 2), torch.tensor([T0, T1]))


def numpy_field(field: MLPField, batch: int) -> Callable[[float, np.ndarray], np.ndarray]:
    """The same MLP in float64 numpy on the flattened state ``[batch * dim]`` (for scipy)."""
    layers = field.weights()
    dim = layers[0][0].shape[1]

    def f(t: float, y: np.ndarray) -> np.ndarray:
        h = y.reshape(batch, dim)
        for i, (w, b) in enumerate(layers):
            h = h @ w.T + b
            if i < len(layers) - 1:
                h = np.tanh(h)
        return h.reshape(-1)

    return f


def reference_final(problem: Problem) -> np.ndarray:
    """``y(t_eval[-1])`` from scipy's DOP853 in float64 at rtol 1e-11, atol 1e-13."""
    from scipy.integrate import solve_ivp

    f = numpy_field(problem.field, problem.batch)
    y0 = problem.y0.double().numpy().reshape(-1)
    t0, t1 = float(problem.t_eval[0]), float(problem.t_eval[-1])
    sol = solve_ivp(f, (t0, t1), y0, method="DOP853", rtol=1e-11, atol=1e-13)
    if not sol.success:
        raise RuntimeError(f"reference solve failed: {sol.message}")
    return sol.y[:, -1].reshape(problem.y0.shape)


def hand_rk4(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], y0: torch.Tensor, t0: float, dt: float, n: int
) -> torch.Tensor:
    """The plain-PyTorch classical RK4 loop: ``dt`` a Python float, ``t`` a 0-d tensor."""
    y = y0
    t = torch.tensor(t0)
    for i in range(n):
        t_half = torch.tensor(t0 + (i + 0.5) * dt)
        t_next = torch.tensor(t0 + (i + 1) * dt)
        k1 = f(t, y)
        k2 = f(t_half, y + dt / 2 * k1)
        k3 = f(t_half, y + dt / 2 * k2)
        k4 = f(t_next, y + dt * k3)
        y = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t = t_next
    return y
