"""Checkpointing with a memory budget (``torchnde.gradients.schedule``): the online tape keeps
at most ``budget`` carries, the bisection sweep reproduces plain backprop's gradients, its
recomputation stays within ``recompute_bound``, and the memory held after the forward pass
does not grow with the number of steps.

The "solver" is a toy loop of RK4 steps (first-same-as-last: the carry is ``(y, f(y))``) of a
small MLP field, with varying step sizes logged per step as an adaptive loop would."""

from __future__ import annotations

import math
import weakref

import pytest
import torch

from torchnde.gradients.memory import graph_memory
from torchnde.gradients.schedule import CheckpointedSolve, CheckpointTape, recompute_bound, sweep

DIM, WIDTH, BATCH = 4, 16, 8


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(DIM, WIDTH), torch.nn.Tanh(), torch.nn.Linear(WIDTH, DIM)
    ).double()


class ToyLoop:
    """The context of ``CheckpointedSolve``: ``n`` RK4 steps; outputs are ``y0`` (emitted by
    step 0), the state after every ``every``-th step, and the final state. A forcing ``c``
    enters only the first half of the steps; ``unused`` enters none."""

    def __init__(self, net, n, every=3, extra_record=True):
        self.net, self.n, self.every, self.extra_record = net, n, every, extra_record
        self.c = torch.linspace(-0.5, 0.5, DIM, dtype=torch.float64, requires_grad=True)
        self.unused = torch.ones(DIM, dtype=torch.float64, requires_grad=True)
        self.hs = [0.05 * (1.0 + 0.5 * math.sin(k)) for k in range(n)]  # "accepted step sizes"
        self.rows: list[list[int]] = []
        row = 0
        for k in range(n):
            count = (k == 0) + ((every is not None and (k + 1) % every == 0) or k + 1 == n)
            self.rows.append(list(range(row, row + count)))
            row += count

    def params(self):
        return (*self.net.parameters(), self.c, self.unused)

    def field(self, k, y):
        out = self.net(y)
        return out + self.c if k < self.n // 2 else out

    def initial_carry(self, y0):
        return (y0, self.field(0, y0))

    def transition(self, k, carry):
        y, k1 = carry
        h = self.hs[k]
        k2 = self.field(k, y + 0.5 * h * k1)
        k3 = self.field(k, y + 0.5 * h * k2)
        k4 = self.field(k, y + h * k3)
        y1 = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        outs = (y,) if k == 0 else ()
        if (self.every is not None and (k + 1) % self.every == 0) or k + 1 == self.n:
            outs = (*outs, y1)
        return (y1, self.field(k + 1, y1)), outs

    def outputs_of(self, k):
        return self.rows[k]

    def run_forward(self, carry, tape):
        outs, k = [], 0
        while True:
            if k < self.n or self.extra_record:
                tape.record(carry)  # the carry before a step that may not be taken
            if k == self.n:
                break
            carry, o = self.transition(k, carry)
            outs.extend(o)
            k += 1
        tape.finish(self.n)
        return torch.stack(outs)

    def plain(self, y0):
        """The same loop, differentiated by plain backprop."""
        carry, outs = self.initial_carry(y0), []
        for k in range(self.n):
            carry, o = self.transition(k, carry)
            outs.extend(o)
        return torch.stack(outs)


def _y0():
    return torch.randn(BATCH, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _gradients(loop, ys_of, y0):
    y0 = y0.clone().requires_grad_()
    ys = ys_of(y0)
    weights = torch.randn(ys.shape, dtype=ys.dtype, generator=torch.Generator().manual_seed(2))
    grads = torch.autograd.grad((weights * ys).sum(), (y0, *loop.params()), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, (y0, *loop.params()))]


def _assert_close(actual, expected, rel=1e-12):
    for a, e in zip(actual, expected, strict=True):
        assert (a - e).norm() <= rel * max(e.norm(), 1e-300), f"{(a - e).norm()} vs {e.norm()}"


@pytest.mark.parametrize("budget", [1, 2, 3, 8])
@pytest.mark.parametrize("n", [1, 2, 7, 64, 129])
def test_gradients_equal_plain_backprop_and_recomputation_within_bound(n, budget):
    loop = ToyLoop(_net(), n)
    y0 = _y0()
    expected = _gradients(loop, loop.plain, y0)
    actual = _gradients(loop, lambda y: CheckpointedSolve.apply(loop, budget, y, *loop.params()), y0)
    _assert_close(actual, expected)
    assert loop.n_steps == n
    assert loop.checkpoints_held <= budget
    # every step receives a gradient here, so the sweep replays exactly the bound's count
    assert loop.recomputed_steps <= recompute_bound(n, budget)
    assert loop.recomputed_steps == recompute_bound(n, budget)


def test_parameters_unused_by_some_steps_get_their_exact_gradients():
    loop = ToyLoop(_net(), 40, every=None)
    y0 = _y0()
    expected = _gradients(loop, loop.plain, y0)
    actual = _gradients(loop, lambda y: CheckpointedSolve.apply(loop, 3, y, *loop.params()), y0)
    _assert_close(actual[:-1], expected[:-1])
    assert actual[-2].abs().sum() > 0  # the forcing, used by the first half of the steps only
    assert torch.equal(actual[-1], torch.zeros(DIM, dtype=torch.float64))  # used by no step


def test_parameters_not_requiring_grad_are_skipped():
    loop = ToyLoop(_net(), 10)
    loop.c.requires_grad_(False)
    y0 = _y0().requires_grad_()
    weight = loop.net[0].weight
    ys = CheckpointedSolve.apply(loop, 2, y0, *loop.params())
    ys.sum().backward()
    assert loop.c.grad is None and weight.grad is not None and y0.grad is not None
    y0_plain = y0.detach().clone().requires_grad_()
    g = torch.autograd.grad(loop.plain(y0_plain).sum(), (y0_plain, weight))
    _assert_close((y0.grad, weight.grad), g)


def test_sweep_alone_matches_backprop_from_the_final_carry():
    loop = ToyLoop(_net(), 29, every=None)
    params = loop.params()

    def loss_of(carry):  # depends on both entries of the final carry
        return carry[0].square().sum() + carry[1].sin().sum()

    y0 = _y0().requires_grad_()
    carry = loop.initial_carry(y0)
    for k in range(loop.n):
        carry, _ = loop.transition(k, carry)
    expected = torch.autograd.grad(loss_of(carry), (y0, *params), allow_unused=True)
    expected = [torch.zeros_like(p) if g is None else g for g, p in zip(expected, (y0, *params))]

    tape = CheckpointTape(4)
    with torch.no_grad():
        carry = loop.initial_carry(y0)
        for k in range(loop.n):
            tape.record(carry)
            carry, _ = loop.transition(k, carry)
    tape.finish(loop.n)
    grad_final = (2 * carry[0], carry[1].cos())
    lam0, grads, replayed = sweep(tape, loop.transition, grad_final, lambda k: None, params)
    assert replayed == recompute_bound(loop.n, 4)
    # lambda_0 pulled back through the initial carry (y0, f(t0, y0))
    y0_leaf = y0.detach().requires_grad_()
    init = torch.autograd.grad(loop.initial_carry(y0_leaf), (y0_leaf, *params), lam0, allow_unused=True)
    actual = [init[0], *(g if i is None else g + i for g, i in zip(grads, init[1:]))]
    _assert_close(actual[:-1], expected[:-1])
    assert torch.equal(actual[-1], torch.zeros(DIM, dtype=torch.float64))


@pytest.mark.parametrize(("n", "budget"), [(129, 1), (128, 8), (1000, 3)])
def test_backward_sweep_keeps_only_logarithmically_many_recomputed_carries(n, budget):
    loop = ToyLoop(_net(), n)
    live: weakref.WeakSet = weakref.WeakSet()
    peak = 0
    replay = loop.transition

    def transition(k, carry):
        nonlocal peak
        out = replay(k, carry)
        live.add(out[0][0])
        peak = max(peak, len(live))
        return out

    loop.transition = transition
    ys = CheckpointedSolve.apply(loop, budget, _y0().requires_grad_(), *loop.params())
    live.clear()
    peak = 0
    ys.sum().backward()
    longest = max(stop - start for start, stop in _tape_segments(n, budget))
    assert peak <= math.ceil(math.log2(longest)) + 1, (peak, longest)


def _tape_segments(n, budget):
    tape = CheckpointTape(budget)
    for _ in range(n):
        tape.record(())
    tape.finish(n)
    return tape.segments


@pytest.mark.parametrize("budget", [1, 2, 3, 5, 8])
def test_tape_never_holds_more_than_the_budget(budget):
    for n in [1, 2, 3, 7, 8, 9, 16, 17, 64, 100]:
        for extra in (False, True):
            tape = CheckpointTape(budget)
            for k in range(n + extra):
                tape.record((torch.tensor(float(k)),))
                assert len(tape) <= budget + 1  # the latest carry waits for the next record
            tape.finish(n)
            assert len(tape) <= budget
            assert tape.indices[0] == 0 and all(i % tape.spacing == 0 for i in tape.indices)
            assert all(tape.carry(i)[0].item() == i for i in tape.indices)
            assert tape.indices == list(range(0, n, tape.spacing))
            assert all(stop - start <= tape.spacing for start, stop in tape.segments)
            assert tape.segments[-1][1] == n


def test_tape_rejects_a_step_count_that_does_not_match_its_records():
    tape = CheckpointTape(2)
    for k in range(5):
        tape.record((torch.tensor(float(k)),))
    with pytest.raises(ValueError, match="finish"):
        tape.finish(3)
    with pytest.raises(ValueError, match="budget"):
        CheckpointTape(0)


def test_recompute_bound_grows_like_n_log_n_over_budget():
    for budget in (1, 2, 3, 8, 13):
        for n in range(1, 600):
            bound = recompute_bound(n, budget)
            if n <= budget:
                assert bound == n  # every carry kept: one replay per step
                continue
            levels = math.log2(n / budget)
            assert n * (1 + math.floor(levels) / 4) <= bound <= n * (1 + math.ceil(levels) / 2)
    # doubling the steps at a fixed budget adds about n/2 per doubling, not a factor
    assert recompute_bound(1024, 8) == 1024 * (1 + 7 / 2)
    assert recompute_bound(2048, 8) == 2048 * (1 + 8 / 2)
    # a larger budget recomputes less
    assert recompute_bound(1024, 64) < recompute_bound(1024, 8) < recompute_bound(1024, 1)


def test_unclaimed_outputs_are_rejected():
    loop = ToyLoop(_net(), 5)
    loop.rows[0] = []  # y0's row belongs to no step
    with pytest.raises(ValueError, match="exactly one step"):
        CheckpointedSolve.apply(loop, 2, _y0().requires_grad_(), *loop.params())


def _retained(n, checkpointed):
    loop = ToyLoop(_net(), n, every=None)  # one output (and y0): no growth from the outputs
    y0 = _y0().requires_grad_()
    if checkpointed:
        forward = lambda: CheckpointedSolve.apply(loop, 8, y0, *loop.params())  # noqa: E731
    else:
        forward = lambda: loop.plain(y0)  # noqa: E731
    forward()
    mem = graph_memory(forward, lambda ys: ys.sum().backward())
    assert mem.retained_bytes is not None
    return mem.retained_bytes


def test_memory_after_the_forward_pass_is_bounded_by_the_budget_not_the_steps():
    growth = _retained(128, True) / _retained(8, True)
    assert growth <= 1.2, f"checkpointed: {growth:.2f}x"
    growth = _retained(128, False) / _retained(8, False)
    assert growth > 8, f"plain backprop: {growth:.2f}x"
