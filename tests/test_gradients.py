"""Every gradient strategy gives the right gradient: against finite differences
(``gradcheck``, float64) with respect to ``y0``, the parameters of ``f`` and the times, and
against ``Backprop`` (exactly for ``Checkpoint`` and ``Reversible``, to the tolerance for
``Adjoint``)."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde

from .helpers import ADAPTIVE_SOLVERS, EXPLICIT_SOLVERS

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _inputs(times: bool = False):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3, dtype=torch.float64, generator=gen).requires_grad_()
    y0 = torch.randn(2, 3, dtype=torch.float64, generator=gen).requires_grad_()
    ts = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64, requires_grad=times)
    return y0, w, ts


def _field(w):
    def f(t, y):
        return torch.tanh(y @ w) * torch.cos(t)

    return f


def _strategy(name, w):
    return {
        "backprop": nde.Backprop(),
        "checkpoint": nde.Checkpoint(),
        "adjoint": nde.Adjoint(params=[w]),
        "reversible": nde.Reversible(params=[w]),
    }[name]


def _options(solver):
    """Fixed steps of 0.1; adaptive methods tight enough that the step sizes' own (not
    differentiated) dependence on the inputs stays below gradcheck's tolerance."""
    if solver not in ADAPTIVE_SOLVERS:
        return {"dt": 0.1}
    order = nde.solvers.resolve_solver(solver).order
    return TIGHT if order >= 4 else {"rtol": 10.0 ** -(3 * order), "atol": 10.0 ** -(3 * order + 2)}


@pytest.mark.parametrize("strategy", ["backprop", "checkpoint"])
@pytest.mark.parametrize("solver", EXPLICIT_SOLVERS)
def test_exact_strategies_pass_gradcheck_for_every_solver(strategy, solver):
    """y0 and parameters, any step sizes: the discretised gradient is exact."""
    y0, w, ts = _inputs()

    def outputs(y0, w):
        return nde.solve(_field(w), y0, ts, solver, gradient=_strategy(strategy, w), **_options(solver)).ys

    assert torch.autograd.gradcheck(outputs, (y0, w), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


HIGH_ORDER = [n for n in EXPLICIT_SOLVERS if nde.solvers.resolve_solver(n).order >= 4]
LOW_ORDER = [n for n in EXPLICIT_SOLVERS if n not in HIGH_ORDER]


@pytest.mark.parametrize("solver", HIGH_ORDER)
def test_adjoint_passes_gradcheck(solver):
    """The continuous adjoint matches finite differences of the forward solve when both are
    accurate: tight tolerances, or a fourth-order method with small fixed steps."""
    y0, w, ts = _inputs()
    opts = TIGHT if solver in ADAPTIVE_SOLVERS else {"dt": 0.01}

    def outputs(y0, w):
        return nde.solve(_field(w), y0, ts, solver, gradient=nde.Adjoint(params=[w]), **opts).ys

    assert torch.autograd.gradcheck(outputs, (y0, w), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("solver", LOW_ORDER)
def test_low_order_adjoint_converges_to_the_exact_gradient(solver):
    """A low-order method cannot make the adjoint accurate enough for gradcheck in a few
    steps; instead, with fixed steps the adjoint's gap to Backprop's (exact discretised)
    gradient shrinks by about 2^order when dt halves."""
    y0, w, ts = _inputs()
    order = nde.solvers.resolve_solver(solver).order
    gaps = []
    for dt in (0.05, 0.025):
        grads = {}
        for name in ("backprop", "adjoint"):
            sol = nde.solve(_field(w), y0, ts, solver, dt=dt, gradient=_strategy(name, w))
            grads[name] = torch.autograd.grad(sol.ys.square().sum(), (y0, w))
        gaps.append(max(float((a - b).abs().max()) for a, b in zip(grads["adjoint"], grads["backprop"])))
    assert gaps[0] / gaps[1] > 2.0 ** (order - 0.5), gaps


@pytest.mark.parametrize(
    ("strategy", "solver"),
    [
        *[
            (g, s)
            for g in ("backprop", "checkpoint", "adjoint")
            for s in ("dopri5", "tsit5", "dopri8", "rk4")
        ],
        ("reversible", "reversible_heun"),
    ],
)
def test_time_gradients_pass_gradcheck(strategy, solver):
    """The time gradients are the exact flow's; finite differences of the discrete solve see
    them when the discretisation is accurate (tight tolerances, or small fixed steps)."""
    y0, w, ts = _inputs(times=True)
    options = TIGHT if solver in ADAPTIVE_SOLVERS else {"dt": 0.01 if solver == "rk4" else 0.001}

    def outputs(y0, w, ts):
        return nde.solve(_field(w), y0, ts, solver, gradient=_strategy(strategy, w), **options).ys

    assert torch.autograd.gradcheck(outputs, (y0, w, ts), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_time_gradients_backwards_in_time():
    y0, w, ts = _inputs(times=True)
    ts_back = ts.detach().flip(0).requires_grad_()

    def outputs(y0, w, ts):
        return nde.solve(_field(w), y0, ts, "dopri5", **TIGHT).ys

    assert torch.autograd.gradcheck(outputs, (y0, w, ts_back), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("strategy", ["checkpoint", "adjoint"])
@pytest.mark.parametrize("solver", ["rk4", "dopri5", "tsit5", "dopri8", "bosh3"])
def test_strategies_agree_with_backprop(strategy, solver):
    """Checkpoint equals Backprop to 1e-10 on the same steps; the adjoint to 1e-6 at tight
    tolerance (fixed steps: dt small enough for a 4th-order method)."""
    y0, w, ts = _inputs()
    opts = TIGHT if solver in ADAPTIVE_SOLVERS else {"dt": 0.002}
    grads = {}
    for name in ("backprop", strategy):
        sol = nde.solve(_field(w), y0, ts, solver, gradient=_strategy(name, w), **opts)
        loss = (sol.ys * torch.linspace(-1, 1, 6, dtype=torch.float64).view(2, 3)).sum()
        grads[name] = torch.autograd.grad(loss, (y0, w))
    tol = 1e-10 if strategy == "checkpoint" else 1e-6
    for got, want in zip(grads[strategy], grads["backprop"]):
        assert float((got - want).abs().max() / want.abs().max()) < tol


def test_reversible_agrees_with_backprop_on_the_same_steps():
    y0, w, ts = _inputs(times=True)
    grads = {}
    for name in ("backprop", "reversible"):
        sol = nde.solve(_field(w), y0, ts, "reversible_heun", dt=0.01, gradient=_strategy(name, w))
        grads[name] = torch.autograd.grad(sol.ys.square().sum(), (y0, w, ts))
    for got, want in zip(grads["reversible"], grads["backprop"]):
        assert float((got - want).abs().max() / want.abs().max()) < 1e-10


@pytest.mark.parametrize("strategy", ["backprop", "reversible"])
def test_reversible_heun_passes_gradcheck(strategy):
    y0, w, ts = _inputs()

    def outputs(y0, w):
        return nde.solve(_field(w), y0, ts, "reversible_heun", dt=0.05, gradient=_strategy(strategy, w)).ys

    assert torch.autograd.gradcheck(outputs, (y0, w), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("strategy", ["backprop", "checkpoint", "adjoint", "reversible"])
def test_tuple_states_get_gradients(strategy):
    """A pendulum as (q, p) with a trainable stiffness: every strategy matches Backprop."""
    k0 = torch.tensor(1.3, dtype=torch.float64)
    q0 = torch.tensor([0.4, -0.2], dtype=torch.float64)
    p0 = torch.tensor([0.1, 0.3], dtype=torch.float64)
    ts = torch.linspace(0, 2, 5, dtype=torch.float64)
    solver, opts = ("reversible_heun", {"dt": 0.01}) if strategy == "reversible" else ("dopri5", TIGHT)

    def grads(name):
        k, q, p = (x.clone().requires_grad_() for x in (k0, q0, p0))

        def f(t, y):
            return y[1], -k * torch.sin(y[0])

        sol = nde.solve(
            f, (q, p), ts, solver, gradient=_strategy(name, k) if name != "backprop" else name, **opts
        )
        loss = sol.ys[0].square().sum() + (sol.ys[1] * sol.ys[0]).sum()
        return torch.autograd.grad(loss, (k, q, p))

    for got, want in zip(grads(strategy), grads("backprop")):
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    ("strategy", "solver", "options"),
    [
        ("backprop", "rk4", {"dt": 0.1}),
        ("backprop", "dopri5", TIGHT),
        ("checkpoint", "rk4", {"dt": 0.1}),
        ("checkpoint", "dopri5", TIGHT),
        ("adjoint", "dopri5", TIGHT),
        ("reversible", "reversible_heun", {"dt": 0.05}),
    ],
)
def test_per_sample_gradients_pass_gradcheck(strategy, solver, options):
    y0, w, ts = _inputs(times=True)

    def outputs(y0, w, ts):
        gradient = _strategy(strategy, w)
        return nde.solve(_field(w), y0, ts, solver, per_sample=True, gradient=gradient, **options).ys

    exact_times = solver == "dopri5"  # fixed steps: the time derivative is the flow's, not the grid's
    inputs = (y0, w, ts) if exact_times else (y0, w, ts.detach())
    assert torch.autograd.gradcheck(outputs, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("strategy", ["checkpoint", "adjoint"])
def test_per_sample_time_spans_agree_with_backprop(strategy):
    """Each sample its own output times; the adjoint solves them together in normalised time."""
    y0, w, _ = _inputs()
    y0 = torch.cat([y0, y0.flip(0)]).detach().requires_grad_()
    ts = torch.tensor(
        [[0.0, 0.5, 1.0], [0.2, 0.4, 0.9], [0.0, 0.1, 2.0], [-1.0, 0.5, 0.6]], dtype=torch.float64
    ).requires_grad_()
    grads = {}
    for name in ("backprop", strategy):
        sol = nde.solve(_field(w), y0, ts, "dopri5", per_sample=True, gradient=_strategy(name, w), **TIGHT)
        weights = torch.linspace(-1, 1, sol.ys.numel(), dtype=torch.float64).view_as(sol.ys)
        grads[name] = torch.autograd.grad((sol.ys * weights).sum(), (y0, w, ts))
    tol = 1e-10 if strategy == "checkpoint" else 1e-6
    for got, want in zip(grads[strategy], grads["backprop"]):
        assert float((got - want).abs().max() / want.abs().max()) < tol


def test_per_sample_time_spans_get_time_gradients():
    y0, w, _ = _inputs()
    ts = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.4, 0.9]], dtype=torch.float64, requires_grad=True)

    def outputs(y0, w, ts):
        return nde.solve(_field(w), y0, ts, "dopri5", per_sample=True, **TIGHT).ys

    assert torch.autograd.gradcheck(outputs, (y0, w, ts), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_per_sample_checkpoint_equals_backprop():
    y0, w, ts = _inputs()
    grads = {}
    for name in ("backprop", "checkpoint"):
        sol = nde.solve(_field(w), y0, ts, "tsit5", per_sample=True, gradient=name, rtol=1e-8, atol=1e-10)
        grads[name] = torch.autograd.grad(sol.ys.square().sum(), (y0, w))
    for got, want in zip(grads["checkpoint"], grads["backprop"]):
        assert float((got - want).abs().max() / want.abs().max()) < 1e-10


def test_double_backward_through_backprop():
    y0, w, ts = _inputs()

    def outputs(y0, w):
        return nde.solve(_field(w), y0, ts, "dopri5", rtol=1e-8, atol=1e-10).ys

    assert torch.autograd.gradgradcheck(outputs, (y0, w), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_module_parameters_are_the_adjoint_default():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, y):
            return self.net(y)

    f = Field()
    y0 = torch.randn(4, 2, dtype=torch.float64)
    ts = torch.linspace(0, 1, 3, dtype=torch.float64)
    grads = {}
    for name in ("backprop", "adjoint"):
        sol = nde.solve(f, y0, ts, "dopri5", gradient=name, **TIGHT)
        grads[name] = torch.autograd.grad(sol.ys.square().sum(), list(net.parameters()))
    for got, want in zip(grads["adjoint"], grads["backprop"]):
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-10)


def test_adjoint_reports_backward_work_and_seminorm_saves_evaluations():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2)).double()
    y0 = torch.randn(16, 2, dtype=torch.float64)
    ts = torch.linspace(0, 1, 5, dtype=torch.float64)
    nfe = {}
    for seminorm in (True, False):
        sol = nde.solve(
            lambda t, y: net(y), y0, ts, "dopri5", rtol=1e-6, atol=1e-8,
            gradient=nde.Adjoint(params=net, seminorm=seminorm),
        )  # fmt: skip
        assert sol.backward_stats is not None and sol.backward_stats.nfe == 0
        sol.ys.square().sum().backward()
        nfe[seminorm] = sol.backward_stats.nfe
    assert 0 < nfe[True] < nfe[False]


def test_no_graph_is_built_under_no_grad():
    y0, w, ts = _inputs()
    with torch.no_grad():
        for name in ("backprop", "checkpoint", "adjoint"):
            sol = nde.solve(_field(w), y0, ts, "dopri5", gradient=_strategy(name, w))
            assert sol.ys.grad_fn is None
        sol = nde.solve(_field(w), y0, ts, "reversible_heun", dt=0.1, gradient=_strategy("reversible", w))
        assert sol.ys.grad_fn is None


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid strategies: adjoint, backprop, checkpoint, reversible"):
        nde.solve(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), gradient="magic")


def test_reversible_needs_a_reversible_solver():
    with pytest.raises(ValueError, match="solver='reversible_heun'"):
        nde.solve(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), gradient="reversible")


def test_reversible_per_sample_needs_one_time_grid():
    y0 = torch.ones(2, 2)
    with pytest.raises(ValueError, match="per-sample time spans"):
        nde.solve(lambda t, y: -y, y0, torch.tensor([[0.0, 1.0], [0.0, 2.0]]), "reversible_heun", dt=0.1,
                  per_sample=True)  # fmt: skip


def test_adjoint_options_are_validated():
    with pytest.raises(ValueError, match="rtol"):
        nde.Adjoint(rtol=-1.0)
    with pytest.raises(ValueError, match="unknown solver"):
        nde.Adjoint(solver="nope")
    with pytest.raises(TypeError, match="params"):
        nde.solve(lambda t, y: -y, torch.ones(2, requires_grad=True), torch.tensor([0.0, 1.0]),
                  gradient=nde.Adjoint(params=[1.0]))  # fmt: skip


def test_global_only_adjoint_options_are_rejected_per_sample_before_solving():
    y0 = torch.ones(2, 1, dtype=torch.float64, requires_grad=True)
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return -y

    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for strategy in (nde.Adjoint(norm=lambda x: x.abs().max()), nde.Adjoint(jump_ts=[0.5])):
        with pytest.raises(ValueError, match="global layout"):
            nde.solve(f, y0, ts, per_sample=True, gradient=strategy)
    assert calls[0] == 0


def test_adjoint_time_channel_steers_the_steps_and_leaves_the_gradients():
    """``Adjoint(time_channel=True)`` integrates ``tau' = -a . df/dt`` with the augmented system:
    for a field depending on ``t`` its error costs steps (under the full norm), while the
    gradients, the times' included, stay those of the plain adjoint to its tolerance."""
    w = torch.tensor([[-0.3, 1.0], [-1.0, -0.2]], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)

    def f(t, y):
        return (w @ y) * torch.cos(3 * t)

    results = []
    for timed in (False, True):
        ts = torch.linspace(0, 1.2, 5, dtype=torch.float64, requires_grad=True)
        sol = nde.solve(f, y0, ts, "dopri5", rtol=1e-8, atol=1e-8,
                        gradient=nde.Adjoint(params=[w], seminorm=False, time_channel=timed))  # fmt: skip
        grads = torch.autograd.grad(sol.ys.square().sum(), (y0, w, ts))
        results.append((sol.backward_stats.steps, grads))
    (plain_steps, plain), (timed_steps, timed_grads) = results
    assert timed_steps > plain_steps
    for a, b in zip(plain, timed_grads):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


def test_adjoint_time_channel_needs_the_global_layout():
    y0 = torch.ones(2, 1, dtype=torch.float64, requires_grad=True)
    sol = nde.solve(lambda t, y: -y * t, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), per_sample=True,
                    gradient=nde.Adjoint(time_channel=True))  # fmt: skip
    with pytest.raises(ValueError, match=r"time_channel=True.*global layout"):
        sol.ys.sum().backward()
    with pytest.raises(TypeError, match="time_channel"):
        nde.Adjoint(time_channel=1)


def test_the_adjoints_engine_call_and_its_public_fallback_give_the_same_vjp(monkeypatch):
    from torchnde.gradients import adjoint
    from torchnde.solvers import jacobian

    assert jacobian.autograd_engine() is not None  # torch 2.13: the probe accepts the engine call
    w = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    cot = torch.randn(4, 3, dtype=torch.float64)
    fast = adjoint._vjp(torch.tanh(y @ w), (y, w), cot, False)
    monkeypatch.setattr(jacobian, "_ENGINE", [None])  # a torch without it, or whose probe failed
    public = adjoint._vjp(torch.tanh(y @ w), (y, w), cot, False)
    assert all(torch.equal(a, b) for a, b in zip(fast, public))
    assert w.grad is None and y.grad is None  # nothing accumulated into .grad
