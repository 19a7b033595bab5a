"""SDE terms through ``solve``: each stochastic solver agrees with torchsde 0.2.6's same method
on the same Brownian increments, refuses what it does not support (naming the solvers that
do), and is differentiable with ``Backprop`` and ``Checkpoint``."""

from __future__ import annotations

import pytest
import torch
import torchsde

import torchnde as nde

from .sde_helpers import BATCH, DTYPE, SharedBrownian, SmallSDE, bm_shape, small_y0

TS = torch.linspace(0, 1, 5, dtype=DTYPE)


# (torchnde solver, torchsde method, options) for every noise type and calculus both support
_PAIRS = [
    ("euler", "euler", {}),
    ("milstein", "milstein", {}),
    ("srk", "srk", {}),
    ("heun", "heun", {}),
    ("midpoint", "midpoint", {}),
    ("euler_heun", "euler_heun", {}),
    ("reversible_heun", "reversible_heun", {}),
]
CASES = [
    (ours, theirs, noise, calculus)
    for ours, theirs, _ in _PAIRS
    for noise in ("diagonal", "scalar", "additive", "general")
    for calculus in ("ito", "stratonovich")
    if noise in nde.solvers.resolve_solver(ours, nde.SDETerm(abs, abs)).noises
    and calculus in nde.solvers.resolve_solver(ours, nde.SDETerm(abs, abs)).calculi
]


@pytest.mark.parametrize(("ours", "theirs", "noise", "calculus"), CASES)
def test_each_solver_agrees_with_torchsde_on_the_same_increments(ours, theirs, noise, calculus):
    sde = SmallSDE(noise, calculus)
    bm = nde.BrownianInterval(0.0, 1.0, bm_shape(noise), dtype=DTYPE, seed=3, levy_area=True)
    with torch.no_grad():
        sol = nde.solve(sde.term(bm), small_y0(), TS, solver=ours, dt=2.0**-6)
        ref = torchsde.sdeint(sde, small_y0(), TS, bm=SharedBrownian(bm), method=theirs, dt=2.0**-6)
    assert torch.allclose(sol.ys, ref, rtol=0, atol=1e-10)


def test_derivative_free_milstein_agrees_with_torchsdes_grad_free_milstein_for_ito():
    sde = SmallSDE("diagonal", "ito")
    bm = nde.BrownianInterval(0.0, 1.0, bm_shape("diagonal"), dtype=DTYPE, seed=4, levy_area=True)
    with torch.no_grad():
        sol = nde.solve(sde.term(bm), small_y0(), TS, solver=nde.Milstein(derivative_free=True), dt=2.0**-6)
        ref = torchsde.sdeint(sde, small_y0(), TS, bm=SharedBrownian(bm), method="milstein", dt=2.0**-6,
                              options={"grad_free": True})  # fmt: skip
    assert torch.allclose(sol.ys, ref, rtol=0, atol=1e-10)


def test_a_solver_refuses_a_noise_type_or_calculus_and_names_those_that_support_it():
    sde = SmallSDE("general", "ito")
    with pytest.raises(
        ValueError, match=r"'milstein' does not support general noise; solvers that do: 'euler'$"
    ):
        nde.solve(sde.term(None), small_y0(), TS, solver="milstein", dt=0.1)
    strat = SmallSDE("diagonal", "stratonovich")
    with pytest.raises(
        ValueError, match=r"'srk' does not support the stratonovich calculus.*'euler_heun', 'heun'"
    ):
        nde.solve(strat.term(None), small_y0(), TS, solver="srk", dt=0.1)
    with pytest.raises(
        ValueError, match=r"'tsit5' does not accept an SDE term .*solvers that do: 'euler_heun'"
    ):
        nde.solve(strat.term(None), small_y0(), TS, solver=nde.Tsit5(), dt=0.1)
    with pytest.raises(ValueError, match=r"'srk' does not accept an ODE term"):
        nde.solve(lambda t, y: -y, small_y0(), TS, solver=nde.SRK(), dt=0.1)
    with pytest.raises(
        ValueError, match=r"unknown solver 'milstien'; valid SDE solvers: .*Did you mean 'milstein'"
    ):
        nde.solve(strat.term(None), small_y0(), TS, solver="milstien", dt=0.1)
    assert nde.solvers.accepting(sde.term(None)) == ["euler"]


def test_unsupported_options_are_rejected_before_solving_with_the_fix():
    term = SmallSDE("diagonal", "ito").term(None)
    cases = [
        (dict(gradient="reversible"), "needs an algebraically reversible solver.*'reversible_heun'"),
        (dict(gradient=nde.Adjoint(rtol=1e-3)), r"stochastic adjoint takes fixed steps: Adjoint\(rtol=...\)"),
        (dict(per_sample=True, gradient="adjoint"), "stochastic adjoint is for the global layout"),
        (dict(dt=None), r"an SDE solve needs a step: pass dt=\.\.\. .* or rtol=\.\.\., atol=\.\.\."),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            nde.solve(term, small_y0(), TS, solver="euler", **{"dt": 0.1, **options})
    with pytest.raises(ValueError, match="pass increasing t_eval"):
        nde.solve(term, small_y0(), TS.flip(0), solver="euler", dt=0.1)
    strat = SmallSDE("diagonal", "stratonovich").term(None)
    with pytest.raises(
        ValueError,
        match=r"'reversible_heun' does not support per_sample=True .*: use per_sample=False, or one of "
        r"'euler_heun', 'heun', 'midpoint', 'milstein'$",
    ):
        nde.solve(strat, small_y0(), TS, solver="reversible_heun", dt=0.1, per_sample=True)


def test_the_diffusion_and_brownian_motion_are_checked_against_the_noise_type():
    y0 = small_y0()
    bad_shape = nde.SDETerm(lambda t, y: y, lambda t, y: y.unsqueeze(-1), "diagonal")
    with pytest.raises(ValueError, match=r"diagonal noise: g\(t, y\) must be shaped like y"):
        nde.solve(bad_shape, y0, TS, solver="euler", dt=0.1)
    not_scalar = nde.SDETerm(lambda t, y: y, lambda t, y: torch.stack([y, y], -1), "scalar")
    with pytest.raises(ValueError, match=r"scalar noise: g\(t, y\) must have shape \(\*y.shape, 1\)"):
        nde.solve(not_scalar, y0, TS, solver="euler", dt=0.1)
    wrong_bm = nde.BrownianInterval(0.0, 1.0, (BATCH, 3), dtype=DTYPE)
    with pytest.raises(ValueError, match=r"has shape \(8, 3\) but this SDE needs \(8, 2\)"):
        nde.solve(
            nde.SDETerm(lambda t, y: y, lambda t, y: y, brownian=wrong_bm), y0, TS, solver="euler", dt=0.1
        )
    no_levy = nde.BrownianInterval(0.0, 1.0, (BATCH, 2), dtype=DTYPE)
    with pytest.raises(ValueError, match="'srk' needs the space-time Lévy area"):
        nde.solve(nde.SDETerm(lambda t, y: y, lambda t, y: y, brownian=no_levy), y0, TS, solver="srk", dt=0.1)
    with pytest.raises(ValueError, match=r"unknown noise type 'diagonl'.*Did you mean 'diagonal'"):
        nde.SDETerm(abs, abs, noise="diagonl")
    with pytest.raises(ValueError, match="unknown calculus 'strat'"):
        nde.SDETerm(abs, abs, calculus="strat")


def test_the_default_solver_follows_the_noise_and_calculus():
    pick = nde.solvers.default_solver
    assert pick(nde.SDETerm(abs, abs)) == "srk"
    assert pick(nde.SDETerm(abs, abs, noise="general")) == "euler"
    assert pick(nde.SDETerm(abs, abs, calculus="stratonovich")) == "midpoint"
    assert pick(nde.ODETerm(abs)) == "tsit5"
    torch.manual_seed(0)
    sol = nde.solve(SmallSDE("diagonal", "ito").term(None), small_y0(), TS, dt=0.1)  # srk on a fresh path
    assert sol.success and sol.ys.shape == (5, BATCH, 2)


def test_outputs_between_steps_are_interpolated_linearly_and_the_path_is_fresh_per_solve():
    term = nde.SDETerm(lambda t, y: -y, lambda t, y: 0.3 * torch.ones_like(y))
    y0 = torch.ones(4, dtype=DTYPE)
    torch.manual_seed(1)
    sol = nde.solve(term, y0, torch.tensor([0.0, 0.05, 0.1], dtype=DTYPE), solver="euler", dt=0.1)
    assert torch.allclose(sol.ys[1], 0.5 * (sol.ys[0] + sol.ys[2]))
    assert sol.stats.steps == 1 and sol.stats.nfe == 3  # f and g at the start, g once checked
    again = nde.solve(term, y0, torch.tensor([0.0, 0.1], dtype=DTYPE), solver="euler", dt=0.1)
    assert not torch.equal(again.ys[-1], sol.ys[-1])  # a new Brownian path
    torch.manual_seed(1)
    same = nde.solve(term, y0, torch.tensor([0.0, 0.1], dtype=DTYPE), solver="euler", dt=0.1)
    assert torch.equal(same.ys[-1], sol.ys[-1])


SOLVERS = ["euler", "milstein", "srk", "heun", "midpoint", "euler_heun", "reversible_heun"]


@pytest.mark.parametrize(("solver", "noise"), [(s, "diagonal") for s in SOLVERS] + [("milstein", "scalar")])
def test_backprop_and_checkpoint_gradients_agree_and_match_finite_differences(solver, noise):
    calculus = "ito" if solver in ("euler", "milstein", "srk") else "stratonovich"
    sde = SmallSDE(noise, calculus)
    bm = nde.BrownianInterval(0.0, 1.0, bm_shape(noise), dtype=DTYPE, seed=5, levy_area=True)
    y0 = small_y0().requires_grad_(True)

    def loss(gradient="backprop"):
        sol = nde.solve(sde.term(bm), y0, TS, solver=solver, dt=2.0**-5, gradient=gradient)
        return (sol.ys**2).sum()

    params = [y0, sde.a, sde.b]
    grads = torch.autograd.grad(loss(), params)
    checkpointed = torch.autograd.grad(loss("checkpoint"), params)
    for g, c in zip(grads, checkpointed):
        assert torch.allclose(g, c, rtol=1e-10, atol=1e-12)
    eps = 1e-6
    with torch.no_grad():
        for p, g in zip(params, grads):
            index = (0, 1)
            p[index] += eps
            up = loss()
            p[index] -= 2 * eps
            down = loss()
            p[index] += eps
            assert abs((up - down) / (2 * eps) - g[index]) < 1e-6 * max(1.0, abs(float(g[index])))


@pytest.mark.parametrize("solver", ["euler", "srk"])
def test_budgeted_checkpoint_gradients_equal_backprop_on_the_same_path(solver):
    # regression: the replay of Checkpoint(checkpoints=k) rebuilt the step's vector field without
    # the diffusion and noise the stochastic solvers read (AttributeError: no attribute 'sde')
    sde = SmallSDE("diagonal", "ito")
    bm = nde.BrownianInterval(0.0, 1.0, bm_shape("diagonal"), dtype=DTYPE, seed=7, levy_area=True)
    grads, sols = [], []
    for gradient in ("backprop", nde.Checkpoint(checkpoints=3)):
        y0 = small_y0().requires_grad_(True)
        sol = nde.solve(sde.term(bm), y0, TS, solver=solver, dt=2.0**-5, gradient=gradient)
        grads.append(torch.autograd.grad((sol.ys**2).sum() + sol.ys[-1].sin().sum(), [y0, sde.a, sde.b]))
        sols.append(sol)
    for want, got in zip(*grads):
        assert float(want.abs().max()) > 0
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)
    assert torch.equal(sols[0].ys, sols[1].ys)
    stats = sols[1].backward_stats
    assert stats.steps >= 32 and stats.nfe > stats.steps  # the replays' drift and diffusion counted


def test_reversible_heun_undoes_its_steps_on_the_same_increments():
    sde = SmallSDE("general", "stratonovich")
    bm = nde.BrownianInterval(0.0, 1.0, bm_shape("general"), dtype=DTYPE, seed=6)
    problem = nde._loop.Problem.build(sde.f, small_y0(), TS, per_sample=False)
    problem.sde = nde._loop.sde.bind_sde(sde.term(bm), problem, nde.StochasticReversibleHeun(), None)
    func, solver = problem.func(), nde.StochasticReversibleHeun()
    y, state, h = small_y0(), None, 2.0**-6
    with torch.no_grad():
        for k in range(64):
            res = solver.step(func, k * h, y, func(k * h, y), h, False, state)
            y, state = res.y1, res.state
        for k in reversed(range(64)):
            y, state = solver.reverse_step(func, (k + 1) * h, y, state, h)
    assert torch.allclose(y, small_y0(), rtol=0, atol=1e-12) and torch.allclose(
        state.z, small_y0(), rtol=0, atol=1e-12
    )
