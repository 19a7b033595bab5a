"""Memory held between forward and backward, measured deterministically with
``graph_memory``: Backprop grows with the number of steps, Checkpoint with the number of
states, Adjoint and Reversible not at all."""

from __future__ import annotations

import gc

import pytest
import torch

import torchnde as nde


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2))


def _retained(strategy, solver, steps):
    net = _net()
    y0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    gradient = {
        "backprop": nde.Backprop(),
        "checkpoint": nde.Checkpoint(),
        "adjoint": nde.Adjoint(params=net),
        "reversible": nde.Reversible(params=net),
    }[strategy]

    def forward():
        f = lambda t, y: net(y)  # noqa: E731
        return nde.solve(f, y0, torch.tensor([0.0, 1.0]), solver, dt=1.0 / steps, gradient=gradient).ys

    forward()  # one-off caches (tableau tensors) are not the graph's
    mem = nde.graph_memory(forward, lambda ys: ys.square().sum().backward())
    assert mem.backward_peak_bytes is not None and mem.backward_peak_bytes > 0
    return mem.retained_bytes


@pytest.mark.parametrize(
    ("strategy", "solver", "low", "high"),
    [
        ("backprop", "rk4", 10.0, None),
        ("adjoint", "rk4", None, 1.2),
        ("reversible", "reversible_heun", None, 1.2),
    ],
)
def test_memory_growth_from_8_to_128_steps(strategy, solver, low, high):
    growth = _retained(strategy, solver, 128) / _retained(strategy, solver, 8)
    if low is not None:
        assert growth >= low, f"{strategy}: {growth:.2f}x"
    if high is not None:
        assert growth <= high, f"{strategy}: {growth:.2f}x"


def test_checkpoint_holds_a_fraction_of_backprop():
    ratio = _retained("checkpoint", "rk4", 128) / _retained("backprop", "rk4", 128)
    assert ratio <= 0.2, f"checkpoint / backprop = {ratio:.3f}"


def test_measurement_is_deterministic():
    assert _retained("backprop", "rk4", 16) == _retained("backprop", "rk4", 16)


def test_saved_tensor_hooks_see_the_backprop_graph():
    net = _net()
    y0 = torch.randn(4, 2)
    mem = nde.graph_memory(
        lambda: nde.solve(lambda t, y: net(y), y0, torch.tensor([0.0, 1.0]), "rk4", dt=0.25).ys
    )
    # 4 steps x 4 evaluations, each saving at least its 4 x 64 hidden activations
    assert mem.saved_tensors > 16 and mem.saved_bytes >= 16 * 4 * 64 * 4
    assert mem.backward_peak_bytes is None


@pytest.mark.parametrize(
    "gradient",
    ["backprop", "adjoint", nde.Checkpoint(checkpoints=2), "reversible"],
    ids=["backprop", "adjoint", "checkpoint-budget", "reversible"],
)
def test_a_solve_leaves_no_reference_cycle_holding_its_tensors(gradient):
    """Memory is freed when the solution is dropped, not at the next garbage collection.
    (``Checkpoint()`` is left out: ``torch.utils.checkpoint``'s non-reentrant hooks form cycles
    of their own, which only the garbage collector frees.)"""
    net = torch.nn.Linear(2, 2).double()
    solver, kw = ("reversible_heun", {"dt": 0.05}) if gradient == "reversible" else ("dopri5", {})
    y0 = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    gc.collect()
    gc.disable()
    try:
        sol = nde.solve(lambda t, y: net(y), y0, torch.linspace(0, 1, 4, dtype=torch.float64), solver,
                        gradient=gradient, **kw)  # fmt: skip
        sol.ys.sum().backward()
        del sol
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        leaked = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert found == 0, leaked[:20]


def test_graph_memory_prints_nothing(capfd):
    net = _net()
    y0 = torch.randn(4, 2)
    forward = lambda: nde.solve(lambda t, y: net(y), y0, torch.tensor([0.0, 1.0]), "rk4", dt=0.25).ys  # noqa: E731
    mem = nde.graph_memory(forward, lambda ys: ys.square().sum().backward())
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert mem.retained_bytes > 0 and mem.backward_peak_bytes > 0


def test_retained_bytes_count_each_storage_still_alive_once():
    def forward():
        scratch = torch.ones(1000, dtype=torch.float64)  # freed before forward returns
        kept = scratch * 2.0  # 8000 bytes
        return kept.view(10, 100).t(), kept[:10], torch.tensor([1.0, 2.0], dtype=torch.float64)

    mem = nde.graph_memory(forward)
    assert mem.retained_bytes == 8000 + 16  # views share their base's storage; torch.tensor counts


def test_backward_peak_counts_what_backward_allocates_above_its_start():
    w = torch.zeros(1000, dtype=torch.float64, requires_grad=True)
    # forward keeps 8 bytes (the sum); backward makes the 8000-byte gradient of w (kept as w.grad)
    mem = nde.graph_memory(lambda: (w * 3.0).sum(), lambda loss: loss.backward())
    assert mem.retained_bytes == 8
    assert 8000 <= mem.backward_peak_bytes <= 8000 + 64
    assert torch.equal(w.grad, torch.full_like(w, 3.0))
