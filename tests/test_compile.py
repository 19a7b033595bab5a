"""``solve(compile=True)``: the compiled solve gives the eager result, compiles once per shape
(also for a field that counts its calls in a Python attribute), and the field's counter counts
every call that ran."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import torchnde as nde
from torchnde._loop import fused, stepping


def _field():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3, generator=gen, dtype=torch.float64)

    def f(t, y):
        return torch.tanh(y @ w) * torch.cos(t) - 0.1 * y

    return f


class CountingField(torch.nn.Module):
    """A small MLP field that counts its calls in a Python attribute, as torchdiffeq's examples do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
        self.nfe = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.net(y)


@pytest.fixture
def graphs(monkeypatch):
    """Count the graphs compiled (dynamo's tracing and guards, run without code generation, in
    a fraction of inductor's compile time), with fused blocks of one step (a shorter trace; the
    block logic is the same for any length)."""
    counter = CompileCounter()
    monkeypatch.setattr(stepping, "BACKEND", counter)
    monkeypatch.setattr(fused, "BLOCK", 1)
    return counter


_KW = {"solver": "dopri5", "rtol": 1e-6, "atol": 1e-8}


def _y0(seed: int) -> torch.Tensor:
    return torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile's CPU backend needs a C++ compiler (apt-get install g++)",
)
def test_per_sample_step_under_inductor_matches_eager():
    f = _field()
    y0 = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ts = torch.linspace(0, 2, 5, dtype=torch.float64)
    kw = {"solver": "dopri5", "rtol": 1e-8, "atol": 1e-10, "per_sample": True}
    eager = nde.solve(f, y0, ts, **kw)
    compiled = nde.solve(f, y0, ts, compile=True, **kw)
    again = nde.solve(f, y0 * 0.5, ts, compile=True, **kw)  # reuses the compiled step
    assert torch.allclose(compiled.ys, eager.ys, rtol=1e-12, atol=1e-13)
    for key, value in eager.stats.as_dict().items():
        got = compiled.stats.as_dict()[key]
        assert torch.equal(torch.as_tensor(got), torch.as_tensor(value)), key
    assert torch.allclose(again.ys, nde.solve(f, y0 * 0.5, ts, **kw).ys, rtol=1e-12, atol=1e-13)


def test_fused_solve_matches_eager_solution_stats_and_status(graphs):
    f = _field()
    y0 = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ts = torch.linspace(0, 2, 5, dtype=torch.float64)
    # a first step far too large: rejected until it fits
    kw = {"solver": "dopri5", "controller": nde.PIDController(rtol=1e-8, atol=1e-10, dt0=1.0), "throw": False}
    for options in (kw, {**kw, "max_steps": 5}):  # the second fails after its fifth step
        eager = nde.solve(f, y0, ts, **options)
        compiled = nde.solve(f, y0, ts, compile=True, **options)
        assert compiled.status == eager.status
        assert compiled.stats.as_dict() == eager.stats.as_dict()
        assert torch.allclose(compiled.ys, eager.ys, rtol=1e-12, atol=1e-13, equal_nan=True)
    assert eager.status == nde.Status.MAX_STEPS and torch.isnan(eager.ys[-1]).all()
    assert compiled.stats.rejected > 0
    assert graphs.frame_count == 2  # a new max_steps is a new value, not a new graph


def test_fused_solve_compiles_once_and_the_fields_counter_counts_every_call(graphs):
    f = CountingField()
    ts = torch.linspace(0, 1, 6, dtype=torch.float64)
    first = nde.solve(f, _y0(0), ts, compile=True, **_KW)
    compiled_first = graphs.frame_count
    # the first block (with the initial step size), and the next blocks' graph if there are any
    assert compiled_first == 1 + (first.stats.steps > fused.BLOCK)
    for seed in (1, 2):  # new values, the same shapes: no new graph
        before = f.nfe
        sol = nde.solve(f, _y0(seed), ts * (1 + seed / 10), compile=True, **_KW)
        eager = nde.solve(f, _y0(seed), ts * (1 + seed / 10), **_KW)
        assert graphs.frame_count == compiled_first
        assert torch.allclose(sol.ys, eager.ys, rtol=1e-12, atol=1e-13)
        assert sol.stats.as_dict() == eager.stats.as_dict()
        # every call ran: f0 (eager), the initial step's trial, and six per step of each block,
        # padding steps after the end included; the eager solve's calls are its stats' nfe
        blocks = math.ceil(sol.stats.steps / fused.BLOCK)
        assert f.nfe - before == 2 + 6 * fused.BLOCK * blocks + eager.stats.nfe


@pytest.mark.parametrize("layout", ["per_sample", "global step"])
def test_compiled_step_compiles_once_and_the_fields_counter_counts_every_call(graphs, layout):
    f = CountingField()
    ts = torch.linspace(0, 1, 6, dtype=torch.float64)
    # dense output is not fused: the global layout compiles the step alone
    kw = {**_KW, "per_sample": True} if layout == "per_sample" else {**_KW, "dense": True}
    # per sample: one sample, so that no sample finishing first changes the batch's shape
    y0s = [_y0(seed)[:1] if layout == "per_sample" else _y0(seed) for seed in (0, 1)]
    nde.solve(f, y0s[0], ts, compile=True, **kw)
    compiled_first = graphs.frame_count  # per sample: y0, then a y that requires grad
    before = f.nfe
    sol = nde.solve(f, y0s[1], ts * 1.5, compile=True, **kw)
    compiled_calls, before = f.nfe - before, f.nfe
    eager = nde.solve(f, y0s[1], ts * 1.5, **kw)
    assert graphs.frame_count == compiled_first  # new values, the same shapes: no new graph
    assert compiled_calls == f.nfe - before > 0  # the step calls f as the eager step does
    assert torch.allclose(sol.ys, eager.ys, rtol=1e-12, atol=1e-13)


_CALLS = 0


def _globally_counted(t, y):
    global _CALLS  # a global: the trace reads it as a constant
    _CALLS += 1
    return torch.tanh(y)


def test_a_counter_in_a_global_recompiles_and_warns_once(graphs):
    ts = torch.tensor([0.0, 0.75], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="global") as caught:  # three fixed steps, one step compiled
        sol = nde.solve(_globally_counted, _y0(0), ts, solver="rk4", dt=0.25, compile=True)
    assert sol.stats.steps == 3
    assert graphs.frame_count == 3  # recompiled on every step: the warning says so once
    assert sum("compiled its" in str(w.message) for w in caught) == 1
