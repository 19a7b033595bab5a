"""How the implicit solvers get df/dy: autograd (for a small state whose field treats a new axis
as a batch, one pass over N copies of the state; else one backward pass per row through the engine
for tiny states, one vectorised pass beyond), or ``jacobian="fd"``, forward differences of ``f``
(scipy's default).

The copies' Jacobian equals the row-by-row one, on a leading axis (an ``nn.Module``) and on a
trailing one (a field that unbinds its state); a field that reads across the new axis (a mean
over it, a branch on the whole tensor's norm, a product with a matrix on it) is found out by the
first call's check and gets the row-by-row Jacobian, still exact.

Autograd's two ways give the same matrix. The forward-difference one agrees with autograd's to
the order of the square root of the unit roundoff, costs ``N`` evaluations of ``f`` (``N + 1``
without a known ``f(t, y)``), and a solve with it takes the autograd solve's steps to within
its tolerance; unknown names are errors that list the valid ones.
"""

from __future__ import annotations

import pytest
import torch

import torchnde as nde
from torchnde._loop import problem as problem_module
from torchnde.solvers import jacobian as jacobian_module
from torchnde.solvers.jacobian import ROW_BY_ROW, StateCopies, finite_difference_jacobian, jacobians

F64 = torch.float64


def robertson(t, y):
    a, b, c = y.unbind(-1)
    return torch.stack([-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b], -1)


def _counted(f):
    calls = [0]

    def g(t, y):
        calls[0] += 1
        return f(t, y)

    return g, calls


@pytest.mark.parametrize("n", [2, 3, 5])
def test_row_by_row_and_vectorised_autograd_jacobians_agree(n, monkeypatch):
    gen = torch.Generator().manual_seed(n)
    w = torch.randn(n, n, dtype=F64, generator=gen)
    y = torch.randn(n, dtype=F64, generator=gen)
    t = torch.tensor(0.5, dtype=F64)

    def f(t, y):
        return torch.tanh(w @ y) * torch.cos(t) - y**3

    exact = torch.diag(-3 * y**2) + (1 - torch.tanh(w @ y) ** 2)[:, None] * w * torch.cos(t)
    got, _ = jacobians(f, t, y, batched=False)  # row by row up to ROW_BY_ROW = 3, else vectorised
    monkeypatch.setattr(jacobian_module, "ROW_BY_ROW", 0)  # vectorised at every size
    vectorised, _ = jacobians(f, t, y, batched=False)
    assert ROW_BY_ROW == 3
    torch.testing.assert_close(got, exact, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(vectorised, exact, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("y", [[0.9, 1e-5, 0.1], [0.02, 7e-8, 0.98], [1.0, 0.0, 0.0]])
def test_forward_differences_agree_with_autograd_to_sqrt_eps(y):
    y = torch.tensor(y, dtype=F64)
    t = torch.tensor(0.0, dtype=F64)
    exact, _ = jacobians(robertson, t, y, batched=False)
    f, calls = _counted(robertson)
    fd = finite_difference_jacobian(f, t, y, robertson(t, y), batched=False)
    assert calls[0] == 3  # one evaluation per column, f(t, y) given
    error = float((fd - exact).abs().max() / exact.abs().max())
    assert 0 < error < 1e-6  # differences (not the exact matrix), of order sqrt(eps) = 1.5e-8


def test_per_sample_forward_differences_are_one_matrix_per_sample():
    y = torch.tensor([[0.9, 1e-5, 0.1], [0.5, 2e-6, 0.5]], dtype=F64)
    t = torch.zeros(2, dtype=F64)
    f, calls = _counted(robertson)
    fd = finite_difference_jacobian(f, t, y, batched=True)
    assert fd.shape == (2, 3, 3) and calls[0] == 4  # f(t, y) too: not given
    for i in range(2):
        exact, _ = jacobians(robertson, t[i], y[i], batched=False)
        torch.testing.assert_close(fd[i], exact, rtol=1e-6, atol=1e-6 * float(exact.abs().max()))


@pytest.mark.parametrize("cls", [nde.solvers.Rodas5P, nde.solvers.Kvaerno5])
def test_a_solve_with_fd_jacobians_matches_the_autograd_solve(cls):
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    ts = torch.tensor([0.0, 1.0, 1e3, 1e5], dtype=F64)
    kw = dict(rtol=1e-6, atol=1e-10)
    auto = nde.solve(robertson, y0, ts, cls(), **kw)
    fd = nde.solve(robertson, y0, ts, cls(jacobian="fd"), **kw)
    assert fd.stats.steps == auto.stats.steps and fd.stats.rejected == auto.stats.rejected
    torch.testing.assert_close(fd.ys, auto.ys, rtol=1e-6, atol=1e-10)  # within the solve's tolerance


def test_rodas5p_fd_costs_two_more_evaluations_per_jacobian_on_a_3_state_one_by_one(monkeypatch):
    """Autograd's Jacobian evaluates f once (with its graph); forward differences reuse the
    step's f(t0, y0) and evaluate f once per column: 3 - 1 more for each Jacobian. On the
    state's copies both evaluate f once per Jacobian (the columns in one call on the stack),
    after the same check of three evaluations on the solve's first Jacobian."""
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    ts = torch.tensor([0.0, 1e5], dtype=F64)
    kw = dict(rtol=1e-6, atol=1e-10)
    auto = nde.solve(robertson, y0, ts, nde.solvers.Rodas5P(), **kw)
    fd = nde.solve(robertson, y0, ts, nde.solvers.Rodas5P(jacobian="fd"), **kw)
    assert fd.stats.nfe == auto.stats.nfe and fd.stats.steps == auto.stats.steps
    monkeypatch.setattr(problem_module, "COPIES_MAX", 0)  # one evaluation per column
    auto = nde.solve(robertson, y0, ts, nde.solvers.Rodas5P(), **kw)
    fd_rows = nde.solve(robertson, y0, ts, nde.solvers.Rodas5P(jacobian="fd"), **kw)
    assert fd_rows.stats.nfe - auto.stats.nfe == 2 * auto.stats.accepted  # a Jacobian per step start
    torch.testing.assert_close(fd.ys, fd_rows.ys, rtol=1e-12, atol=1e-16)  # the same differences


def test_per_sample_rodas5p_with_fd_matches_autograd():
    y0 = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.0, 0.1]], dtype=F64)
    ts = torch.tensor([0.0, 10.0, 1e3], dtype=F64)
    kw = dict(rtol=1e-6, atol=1e-10, per_sample=True)
    auto = nde.solve(robertson, y0, ts, nde.solvers.Rodas5P(), **kw)
    fd = nde.solve(robertson, y0, ts, nde.solvers.Rodas5P(jacobian="fd"), **kw)
    assert torch.equal(fd.stats.steps, auto.stats.steps)
    torch.testing.assert_close(fd.ys, auto.ys, rtol=1e-6, atol=1e-10)


def test_autograd_by_name_is_the_default():
    assert nde.solvers.Rodas5P(jacobian="autograd").jacobian is None
    assert nde.solvers.Kvaerno5(jacobian="autograd").jacobian is None


def test_an_unknown_jacobian_name_is_an_error_that_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"Rodas5P\(jacobian=...\) must be 'autograd'.*'fd'.*Did you mean 'fd'"
    ):
        nde.solvers.Rodas5P(jacobian="fdd")
    with pytest.raises(ValueError, match=r"Kvaerno5\(jacobian=...\).*got 'analytic'"):
        nde.solvers.Kvaerno5(jacobian="analytic")


class _Field:
    """A field carrying the copies' Jacobian, as the loop's own field does."""

    def __init__(self, f):
        self.f, self.calls = f, [0]
        self.copies = StateCopies(
            lambda s, y: f(torch.as_tensor(s, dtype=F64), y), self._count
        )  # time as the loop gives it

    def _count(self, k):
        self.calls[0] += k

    def __call__(self, t, y):
        self.calls[0] += 1
        return self.f(t, y)


def _row_by_row(f, t, y):
    return jacobians(f, t, y, batched=False)[0]  # a plain function: no copies attribute


def test_copies_jacobian_of_a_module_stacks_copies_on_a_leading_axis():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5)).double()
    field = _Field(lambda t, y: net(y))
    y, t = torch.randn(5, dtype=F64), torch.tensor(0.3, dtype=F64)
    got, _ = jacobians(field, t, y, batched=False)
    assert field.copies.axis == 0 and field.calls[0] == 4  # the check: f(y), f(y'), one stack; then one stack
    torch.testing.assert_close(got, _row_by_row(lambda t, y: net(y), t, y), rtol=1e-14, atol=1e-15)
    got, _ = jacobians(field, t, y + 1, batched=False)
    assert field.calls[0] == 5  # checked once: each later Jacobian is one evaluation
    torch.testing.assert_close(got, _row_by_row(lambda t, y: net(y), t, y + 1), rtol=1e-14, atol=1e-15)


def test_copies_jacobian_of_an_unbinding_field_stacks_copies_on_a_trailing_axis():
    def unbinding(t, y):  # unbind() splits the first axis: a stack [3, 3] on axis 0 is misread
        a, b, c = y.unbind()
        return torch.stack([-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b])

    field = _Field(unbinding)
    y, t = torch.tensor([0.9, 1e-5, 0.1], dtype=F64), torch.tensor(0.0, dtype=F64)
    got, _ = jacobians(field, t, y, batched=False)
    assert field.copies.axis == -1
    torch.testing.assert_close(got, _row_by_row(robertson, t, y), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(
    "name, f",
    [
        ("a mean over the whole tensor", lambda t, y: torch.sin(y) - y.mean()),
        ("a branch on the whole tensor's norm", lambda t, y: torch.sin(y) * (1.0 if y.norm() < 2 else -1.0)),
        (
            "a running sum over the flattened tensor",
            lambda t, y: torch.sin(y) + y.flatten().cumsum(0).view_as(y),
        ),
    ],
)
def test_a_field_that_reads_across_copies_gets_the_row_by_row_jacobian(name, f):
    field = _Field(f)
    y, t = torch.tensor([0.3, -0.2, 0.5, 1.1], dtype=F64), torch.tensor(0.0, dtype=F64)
    got, _ = jacobians(field, t, y, batched=False)
    assert not field.copies.usable, name
    torch.testing.assert_close(got, _row_by_row(f, t, y), rtol=1e-14, atol=1e-15)


def test_a_matrix_product_on_the_state_takes_copies_on_the_trailing_axis_only():
    w = torch.arange(16, dtype=F64).view(4, 4) / 10
    field = _Field(lambda t, y: w @ torch.tanh(y))  # w @ stack mixes a leading axis, not a trailing one
    y, t = torch.tensor([0.3, -0.2, 0.5, 1.1], dtype=F64), torch.tensor(0.0, dtype=F64)
    got, _ = jacobians(field, t, y, batched=False)
    assert field.copies.axis == -1
    torch.testing.assert_close(got, w * (1 - torch.tanh(y) ** 2), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("cls", [nde.solvers.Rodas5P, nde.solvers.Kvaerno5])
def test_a_solve_with_copies_jacobians_takes_the_row_by_row_solves_steps(cls, monkeypatch):
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    ts = torch.tensor([0.0, 1.0, 1e3, 1e5], dtype=F64)
    kw = dict(rtol=1e-6, atol=1e-10)
    copies = nde.solve(robertson, y0, ts, cls(), **kw)
    monkeypatch.setattr(problem_module, "COPIES_MAX", 0)  # the row-by-row Jacobian throughout
    rows = nde.solve(robertson, y0, ts, cls(), **kw)
    assert copies.stats.steps == rows.stats.steps and copies.stats.rejected == rows.stats.rejected
    assert copies.stats.nfe == rows.stats.nfe + 3  # the first Jacobian's check
    torch.testing.assert_close(copies.ys, rows.ys, rtol=1e-12, atol=1e-16)


def test_per_sample_copies_jacobian_is_one_matrix_per_sample():
    field = _Field(robertson)
    y = torch.tensor([[0.9, 1e-5, 0.1], [0.5, 2e-6, 0.5]], dtype=F64)
    t = torch.zeros(2, dtype=F64)
    got, _ = jacobians(field, t, y, batched=True)
    assert field.copies.axis == 0 and got.shape == (2, 3, 3)
    torch.testing.assert_close(got, jacobians(robertson, t, y, batched=True)[0], rtol=1e-14, atol=1e-15)


def test_a_batch_too_large_for_copies_takes_the_vectorised_way_for_that_call_only():
    field = _Field(robertson)
    big = torch.rand(jacobian_module.COPIES_ROWS // 3 + 1, 3, dtype=F64)
    t = torch.zeros(big.shape[0], dtype=F64)
    got, _ = jacobians(field, t, big, batched=True)
    assert field.copies.axis is None and field.copies.usable  # not checked, not ruled out
    torch.testing.assert_close(got, jacobians(robertson, t, big, batched=True)[0], rtol=1e-14, atol=1e-15)
    jacobians(field, t[:2], big[:2], batched=True)  # a batch that shrank below the limit
    assert field.copies.axis == 0


@pytest.mark.parametrize("cls", [nde.solvers.Rodas5P, nde.solvers.Kvaerno5])
def test_a_per_sample_solve_with_copies_jacobians_takes_the_row_by_row_solves_steps(cls, monkeypatch):
    y0 = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.0, 0.1], [0.95, 0.0, 0.05]], dtype=F64)
    ts = torch.tensor([0.0, 10.0, 1e3], dtype=F64)
    kw = dict(rtol=1e-6, atol=1e-10, per_sample=True)
    copies = nde.solve(robertson, y0, ts, cls(), **kw)
    monkeypatch.setattr(problem_module, "COPIES_MAX", 0)
    rows = nde.solve(robertson, y0, ts, cls(), **kw)
    assert torch.equal(copies.stats.steps, rows.stats.steps)
    torch.testing.assert_close(copies.ys, rows.ys, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("solver", ["rodas5p", "kvaerno5"])
def test_gradients_through_copies_jacobians_pass_gradcheck(solver):
    """Rodas5P differentiates through its Jacobian (the copies' pass recorded with
    ``create_graph``); Kvaerno5's implicit-function step takes one at every stage. (A field that
    reads ``t`` keeps Rodas5P on the row-by-row pass, which gives ``df/dt`` with ``df/dy``.)"""
    gen = torch.Generator().manual_seed(1)
    w = (0.3 * torch.randn(3, 3, dtype=F64, generator=gen)).requires_grad_()
    y0 = torch.randn(3, dtype=F64, generator=gen).requires_grad_()
    lam = torch.tensor([-1.0, -100.0, -1000.0], dtype=F64)
    ts = torch.linspace(0, 1, 4, dtype=F64)
    seen = []

    def outputs(y0, w):
        def f(t, y):
            seen.append(y.shape)
            return lam * y + torch.tanh(y @ w.T)  # takes copies on a leading axis; autonomous

        return nde.solve(f, y0, ts, solver, dt=0.05).ys

    assert torch.autograd.gradcheck(outputs, (y0, w), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)
    assert seen.count((3, 3)) > 20  # the Jacobians came from the copies (the check alone: 1)


def _forced_robertson(t, y):  # unbinds its state: copies on a trailing axis, times as [N]
    a, b, c = y.unbind()
    k = 0.04 * (1 + 0.5 * torch.sin(t / 10))
    return torch.stack([-k * a + 1e4 * b * c, k * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b])


_W = torch.arange(9, dtype=F64).view(3, 3) / 10


def _forced_module(t, y):  # copies on a leading axis, times as [N, 1]
    return torch.tanh(y @ _W) * torch.cos(t) - y


@pytest.mark.parametrize(("f", "axis"), [(_forced_robertson, -1), (_forced_module, 0)])
def test_a_time_dependent_field_gets_df_dt_from_the_same_copies_pass(f, axis):
    field = _Field(f)
    y, t = torch.tensor([0.9, 1e-5, 0.1], dtype=F64), 0.7
    got = jacobians(field, t, y, batched=False, with_time=True)
    assert field.copies.axis == axis and field.copies.timed
    want = jacobians(f, torch.tensor(t, dtype=F64), y, batched=False, with_time=True)
    torch.testing.assert_close(got[0], want[0], rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(got[1], want[1], rtol=1e-14, atol=1e-15)


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")  # the row-by-row pass's float(t)
def test_a_field_that_reads_t_as_a_float_gets_the_row_by_row_time_derivative():
    def f(t, y):
        return -y * (1.0 + float(t))  # float(t) of a time per copy raises: not taken

    field = _Field(f)
    y = torch.tensor([0.9, 0.2, 0.1], dtype=F64)
    got = jacobians(field, torch.tensor(0.5, dtype=F64), y, batched=False, with_time=True)
    assert field.copies.timed is False and field.copies.usable
    torch.testing.assert_close(got[0], -1.5 * torch.eye(3, dtype=F64), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(got[1], torch.zeros(3, dtype=F64), rtol=0, atol=0)  # float(t): no graph


def test_a_rodas5p_solve_of_a_time_dependent_field_takes_the_row_by_row_solves_steps(monkeypatch):
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    ts = torch.tensor([0.0, 1.0, 1e2], dtype=F64)
    copies = nde.solve(_forced_robertson, y0, ts, "rodas5p", rtol=1e-6, atol=1e-10)
    monkeypatch.setattr(problem_module, "COPIES_MAX", 0)
    rows = nde.solve(_forced_robertson, y0, ts, "rodas5p", rtol=1e-6, atol=1e-10)
    assert copies.stats.steps == rows.stats.steps and copies.stats.nfe == rows.stats.nfe + 7  # two checks
    torch.testing.assert_close(copies.ys, rows.ys, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("f", [robertson, _forced_robertson], ids=["leading", "trailing"])
def test_forward_differences_on_the_copies_are_the_column_by_column_ones_in_one_call(f):
    field = _Field(f)
    y, t = torch.tensor([0.9, 1e-5, 0.1], dtype=F64), torch.tensor(0.3, dtype=F64)
    f0 = f(t, y)
    field.copies._ready(t, y, 3, 1, False)  # the solve's first Jacobian makes this check
    before = field.calls[0]
    together = finite_difference_jacobian(field, t, y, f0, batched=False)
    assert field.calls[0] == before + 1
    one_by_one = finite_difference_jacobian(f, t, y, f0, batched=False)
    torch.testing.assert_close(together, one_by_one, rtol=1e-12, atol=1e-16)


def _oscillators(t, y):  # a state [2, d]: positions and momenta, split on the first axis
    q, p = y
    return torch.stack([p, -torch.sin(q) - 100.0 * p])


def test_a_small_multi_dimensional_state_takes_the_copies_and_a_large_one_does_not(monkeypatch):
    y0 = torch.tensor([[1.0, 0.5, -0.3], [0.0, 0.1, 0.2]], dtype=F64)  # [2, 3]: 6 unknowns
    ts = torch.tensor([0.0, 1.0, 5.0], dtype=F64)
    copies = nde.solve(_oscillators, y0, ts, "rodas5p", rtol=1e-8, atol=1e-10)
    monkeypatch.setattr(problem_module, "COPIES_ANY_SHAPE", 0)
    rows = nde.solve(_oscillators, y0, ts, "rodas5p", rtol=1e-8, atol=1e-10)
    # the check: f(y), f(y'), the trailing stack (the leading one, [6, 2, 3], fails to unpack: not counted)
    assert copies.stats.steps == rows.stats.steps and copies.stats.nfe == rows.stats.nfe + 3
    torch.testing.assert_close(copies.ys, rows.ys, rtol=1e-12, atol=1e-15)
    monkeypatch.undo()
    big = torch.randn(2, 9, dtype=F64, generator=torch.Generator().manual_seed(0))  # 18 unknowns
    a = nde.solve(_oscillators, big, ts, "rodas5p", rtol=1e-6, atol=1e-9)
    monkeypatch.setattr(problem_module, "COPIES_ANY_SHAPE", 0)
    b = nde.solve(_oscillators, big, ts, "rodas5p", rtol=1e-6, atol=1e-9)
    assert a.stats.nfe == b.stats.nfe  # no check, no copies: beyond 16 unknowns of a 2-D state


@pytest.mark.parametrize("solver", ["rodas5p", "kvaerno5"])
@pytest.mark.parametrize("field", ["state", "time-dependent"])
def test_checkpointed_implicit_steps_replay_exactly_with_the_copies(solver, field):
    """The copies' once-per-solve checks run in the forward pass and not when ``Checkpoint``
    recomputes a step; their saved tensors are kept from torch.utils.checkpoint's hooks, which
    would otherwise see the recomputed step save other tensors than the forward one did."""
    gen = torch.Generator().manual_seed(2)
    w = (0.3 * torch.randn(3, 3, dtype=F64, generator=gen)).requires_grad_()
    y0 = torch.randn(3, dtype=F64, generator=gen).requires_grad_()
    lam = torch.tensor([-1.0, -100.0, -1000.0], dtype=F64)
    ts = torch.linspace(0, 1, 4, dtype=F64)

    def f(t, y):
        out = lam * y + torch.tanh(y @ w.T)
        return out * (1 + 0.1 * torch.sin(t)) if field == "time-dependent" else out

    grads = {}
    for gradient in ("backprop", "checkpoint"):
        sol = nde.solve(f, y0, ts, solver, rtol=1e-6, atol=1e-8, gradient=gradient)
        grads[gradient] = torch.autograd.grad(sol.ys.square().sum(), (y0, w))
    for got, want in zip(grads["checkpoint"], grads["backprop"]):
        assert float((got - want).abs().max() / want.abs().max()) < 1e-10
