"""Sync discipline: at most one host synchronisation per step, none inside a step.

A read of a tensor's value on the host (``item``, ``float``, ``bool``, ``int``, ``tolist``) is
what synchronises with an accelerator; on CPU the same calls are counted to check the loop.
"""

from __future__ import annotations

import pytest
import torch

import torchnde as nde

_READS = ("item", "tolist", "__float__", "__bool__", "__int__", "__index__")


@pytest.fixture
def host_reads(monkeypatch):
    count = [0]
    for name in _READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            count[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return count


def _field(t, y):
    return torch.sin(t) * y - 0.5 * y**3


def _y0(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(0))


# The few reads outside the loop: t_eval's check, y0's finiteness check, Hairer's initial step
# (three norms), and (fixed steps) one finiteness check at the end.
_SETUP = 6


@pytest.mark.parametrize("name", ["dopri5", "tsit5", "dopri8", "bosh3"])
def test_adaptive_global_solve_reads_the_host_once_per_step(name, host_reads):
    y0 = _y0(8, 3)
    ts = torch.linspace(0, 5, 11, dtype=torch.float64)
    sol = nde.solve(_field, y0, ts, name, rtol=1e-8, atol=1e-10)
    assert sol.stats.steps > 10
    assert host_reads[0] <= sol.stats.steps + _SETUP


def test_fixed_step_global_solve_does_not_read_the_host_per_step(host_reads):
    sol = nde.solve(_field, _y0(4, 2, dtype=torch.float32), torch.linspace(0, 1, 5), "rk4", dt=0.01)
    assert sol.stats.steps == 100
    assert host_reads[0] <= _SETUP


@pytest.mark.parametrize("adaptive", [True, False])
def test_per_sample_solve_reads_the_host_once_per_step(adaptive, host_reads):
    """Plus one read each time finished samples leave the batch (at most log2(batch) times):
    the check that f gives the remaining rows the same derivatives on their own."""
    y0 = _y0(8, 3)
    ends = torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 5.0, 5.0], dtype=torch.float64)
    ts = torch.stack([torch.linspace(0, 1, 11, dtype=torch.float64) * e for e in ends])
    kw = {"rtol": 1e-8, "atol": 1e-10} if adaptive else {"solver": "rk4", "dt": 0.05}
    sol = nde.solve(_field, y0, ts, per_sample=True, **kw)
    iterations = int(sol.stats.steps.max())
    assert iterations > 10
    assert host_reads[0] <= iterations + _SETUP + 3  # log2(8) compactions


@pytest.mark.parametrize("gradient", ["adjoint", "reversible"])
def test_sde_gradient_passes_do_not_read_the_host_per_step(gradient, host_reads):
    """The stochastic adjoint's and reversible Heun's backward loops stay on the device: the host
    reads of a solve and its backward pass do not grow with the number of steps."""
    w = torch.tensor([[-0.5, 0.2], [0.1, -0.3]], dtype=torch.float64, requires_grad=True)
    bm = nde.BrownianInterval(0.0, 1.0, (4, 2), dtype=torch.float64, seed=0)
    term = nde.SDETerm(
        lambda t, y: y @ w.T, lambda t, y: 0.2 * torch.cos(y), calculus="stratonovich", brownian=bm
    )
    reads = []
    for steps in (16, 64):
        before = host_reads[0]
        sol = nde.solve(
            term, _y0(4, 2), torch.tensor([0.0, 1.0]), "reversible_heun", dt=1 / steps, gradient=gradient
        )
        sol.ys[-1].sum().backward()
        assert sol.backward_stats.steps == steps
        reads.append(host_reads[0] - before)
    assert reads[0] == reads[1] <= _SETUP
