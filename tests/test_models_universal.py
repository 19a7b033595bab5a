"""UniversalODE: the hybrid field, its parameters and switches, and the staged training recipe."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchnde as nde
from torchnde.models.universal import UniversalODE, fit_staged, make_step, trajectory_loss

DT = torch.float64


def known_lv(t, u, alpha, delta):
    return torch.stack([alpha * u[..., 0], -delta * u[..., 1]], dim=-1)


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).to(DT)


def test_forward_is_the_solve_of_known_plus_network_time_first():
    net = small_net()
    model = UniversalODE(known_lv, net, params={"alpha": 1.3, "delta": 1.8}, rtol=1e-9, atol=1e-11)
    y0 = torch.tensor([0.4, 2.0], dtype=DT)
    t = torch.linspace(0, 1, 11, dtype=DT)
    ys = model(y0, t)
    assert ys.shape == (11, 2)
    ref = nde.solve(lambda s, u: known_lv(s, u, 1.3, 1.8) + net(u), y0, t, rtol=1e-9, atol=1e-11).ys
    assert torch.allclose(ys, ref, atol=1e-12)
    assert model.nfe > 0


def test_batched_initial_states_give_batch_trajectories():
    model = UniversalODE(known_lv, small_net(), params={"alpha": 1.0, "delta": 1.0})
    ys = model(torch.rand(5, 2, dtype=DT) + 0.5, torch.linspace(0, 0.5, 4, dtype=DT))
    assert ys.shape == (4, 5, 2)


def test_network_off_leaves_the_mechanistic_model_and_restores_after():
    model = UniversalODE(known_lv, small_net(), params={"alpha": 1.3, "delta": 1.8})
    y = torch.tensor([[0.5, 1.5]], dtype=DT)
    t0 = torch.tensor(0.0, dtype=DT)
    with model.network_off():
        assert torch.equal(model.vector_field(t0, y), known_lv(t0, y, 1.3, 1.8))
    assert model.network_enabled
    assert not torch.equal(model.vector_field(t0, y), known_lv(t0, y, 1.3, 1.8))


def test_learned_term_is_the_network_alone():
    net = small_net()
    model = UniversalODE(known_lv, net, params={"alpha": 1.3, "delta": 1.8})
    y = torch.rand(7, 2, dtype=DT)
    assert torch.equal(model.learned_term(y), net(y))


def test_time_dependent_network_receives_t():
    class Forced(nn.Module):
        def forward(self, t, y):
            return torch.cos(t) * torch.ones_like(y)

    model = UniversalODE(None, Forced(), rtol=1e-10, atol=1e-12)
    ys = model(torch.zeros(1, dtype=DT), torch.tensor([0.0, 1.0], dtype=DT))
    assert float(ys[-1]) == pytest.approx(math.sin(1.0), abs=1e-9)
    assert float(model.learned_term(torch.zeros(1, dtype=DT), t=0.0)) == pytest.approx(1.0)


def test_trainable_and_fixed_parameters_are_parameters_and_buffers():
    model = UniversalODE(known_lv, small_net(), params={"alpha": 1.3, "delta": 1.8}, trainable=["alpha"])
    names = [n for n, _ in model.named_parameters()]
    assert "physics.alpha" in names and not any("delta" in n for n in names)
    assert model.params["delta"].item() == pytest.approx(1.8)
    assert "_fixed_delta" in dict(model.named_buffers())
    frozen = UniversalODE(known_lv, small_net(), params={"alpha": 1.3, "delta": 1.8}, trainable=False)
    assert list(frozen.physics_parameters()) == []


def test_positive_parameters_live_in_log_space():
    model = UniversalODE(known_lv, small_net(), params={"alpha": 1.3, "delta": 1.8}, positive=["delta"])
    assert model.physics["delta"].item() == pytest.approx(math.log(1.8))
    assert model.params["delta"].item() == pytest.approx(1.8)
    assert model.physics["alpha"].item() == pytest.approx(1.3)


def test_gradient_of_a_physical_parameter_matches_finite_differences():
    model = UniversalODE(
        known_lv, small_net(), params={"alpha": 1.3, "delta": 1.8}, positive=["delta"], rtol=1e-10, atol=1e-12
    )
    y0 = torch.tensor([0.4, 2.0], dtype=DT)
    t = torch.linspace(0, 1, 6, dtype=DT)
    data = torch.zeros(6, 2, dtype=DT)
    loss = trajectory_loss(model, y0, t, data)
    loss.backward()
    for name in ("alpha", "delta"):
        p = model.physics[name]
        h = 1e-6
        with torch.no_grad():
            p += h
            up = float(trajectory_loss(model, y0, t, data))
            p -= 2 * h
            down = float(trajectory_loss(model, y0, t, data))
            p += h
        assert float(p.grad) == pytest.approx((up - down) / (2 * h), rel=1e-5)


def test_gradcheck_through_the_hybrid_solve():
    model = UniversalODE(
        known_lv, small_net(), params={"alpha": 1.3, "delta": 1.8}, trainable=False, dt=0.05, solver="rk4"
    )
    t = torch.linspace(0, 0.5, 3, dtype=DT)
    y0 = torch.tensor([0.4, 2.0], dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: model(y, t), (y0,))


def test_invalid_configurations_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="neither"):
        UniversalODE(None, None)
    with pytest.raises(ValueError, match="not parameters"):
        UniversalODE(known_lv, small_net(), params={"alpha": 1.0, "delta": 1.0}, trainable=["beta"])
    with pytest.raises(ValueError, match="positive"):
        UniversalODE(known_lv, small_net(), params={"alpha": -1.0, "delta": 1.0}, positive=True)
    with pytest.raises(TypeError, match="unknown option"):
        UniversalODE(known_lv, small_net(), params={"alpha": 1.0, "delta": 1.0}, tolerance=1e-3)
    with pytest.raises(ValueError, match="t_eval"):
        UniversalODE(known_lv, small_net(), params={"alpha": 1.0, "delta": 1.0})(
            torch.ones(2, dtype=DT), None
        )
    with pytest.raises(RuntimeError, match="no network"):
        UniversalODE(known_lv, None, params={"alpha": 1.0, "delta": 1.0}).learned_term(
            torch.ones(2, dtype=DT)
        )


def _decay_data():
    t = torch.linspace(0, 2, 21, dtype=DT)
    return t, 2.0 * torch.exp(-0.7 * t)[:, None]


def test_mechanistic_stage_fits_the_physics_with_the_network_off():
    t, data = _decay_data()
    net = nn.Linear(1, 1).to(DT)
    model = UniversalODE(lambda s, y, k: -k * y, net, params={"k": 0.2}, positive=True)
    seen = []

    def train(tag, step, steps, state):
        seen.append((tag, sorted(state)))
        return [step(i) for i in range(steps)]

    result = fit_staged(model, data[0], t, data, mechanistic_steps=300, network_steps=0, lr=0.05, train=train)
    assert model.params["k"].item() == pytest.approx(0.7, rel=1e-3)
    assert seen == [("ude-mechanistic", ["model", "opt"])]
    losses = [h["loss"] for h in result.histories["mechanistic"]]
    assert losses[-1] < 1e-4 * losses[0]
    assert model.network_enabled  # switched back on after the stage


def test_network_stages_with_lbfgs_reduce_the_loss_and_can_fit_y0():
    t, data = _decay_data()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).to(DT)
    model = UniversalODE(lambda s, y, k: -k * y, net, params={"k": 0.3}, trainable=False)
    start = data[0] + 0.1
    result = fit_staged(
        model, start, t, data, network_steps=50, lbfgs_steps=3, lbfgs_iterations=10, lr=0.02, fit_y0=True
    )
    adam = [h["loss"] for h in result.histories["network"]]
    lbfgs = [h["loss"] for h in result.histories["lbfgs"]]
    assert len(adam) == 50 and len(lbfgs) == 3
    assert lbfgs[-1] < adam[0] * 1e-2
    assert float(result.y0) == pytest.approx(2.0, abs=0.05)
    assert result.final_loss == lbfgs[-1]


def test_make_step_runs_adam_and_lbfgs_one_step_per_call():
    t, data = _decay_data()
    model = UniversalODE(lambda s, y, k: -k * y, None, params={"k": 0.3})
    lbfgs = torch.optim.LBFGS(model.parameters(), max_iter=5, line_search_fn="strong_wolfe")
    step = make_step(model, data[0], t, data, lbfgs)
    initial = trajectory_loss(model, data[0], t, data).item()
    first = step(0)["loss"]
    second = step(1)["loss"]
    assert first < 1e-3 * initial and second <= first
    assert model.params["k"].item() == pytest.approx(0.7, rel=1e-4)
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    info = make_step(model, data[0], t, data, adam)(0)
    assert set(info) == {"loss", "nfe"} and info["nfe"] > 0


def test_fit_staged_rejects_bad_arguments():
    t, data = _decay_data()
    model = UniversalODE(lambda s, y, k: -k * y, None, params={"k": 0.3}, trainable=False)
    with pytest.raises(ValueError, match="nothing to train"):
        fit_staged(model, data[0], t, data, network_steps=5)
    with pytest.raises(ValueError, match="non-negative"):
        fit_staged(model, data[0], t, data, network_steps=-1)
    with pytest.raises(TypeError, match="UniversalODE"):
        fit_staged(nn.Linear(1, 1), data[0], t, data)
    with pytest.raises(ValueError, match="shape"):
        trajectory_loss(model, data[0], t, data[:5])


SEED_WITH_AN_EARLIER_BEST = 5


def _decay_model(physics: bool = False) -> UniversalODE:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1)).to(DT)
    return UniversalODE(lambda s, y, k: -k * y, net, params={"k": 0.3}, trainable=physics)


def test_restarts_retrain_from_fresh_draws_while_above_target_and_keep_the_best_attempt():
    t, data = _decay_data()
    model = _decay_model(physics=True)
    tags, k_at_start = [], []

    def train(tag, step, steps, state):
        tags.append(tag)
        if tag.endswith("network"):
            k_at_start.append(state["model"].params["k"].item())
        return [step(i) for i in range(steps)]

    # two Adam steps and one short L-BFGS step cannot reach 1e-12: every restart runs
    result = fit_staged(
        model,
        data[0],
        t,
        data,
        network_steps=2,
        lbfgs_steps=1,
        lbfgs_iterations=2,
        lr=0.05,
        target_loss=1e-12,
        restarts=3,
        seed=SEED_WITH_AN_EARLIER_BEST,
        train=train,
    )
    assert result.restarts == 3 and len(result.attempts) == 4
    assert len(set(result.attempts)) == 4  # each restart is a different initialisation
    assert result.kept == min(range(4), key=result.attempts.__getitem__)
    assert result.kept < 3  # this seed exercises putting an earlier attempt's parameters back
    assert result.final_loss == result.attempts[result.kept]
    assert k_at_start == pytest.approx([0.3] * 4)  # the physics restarts from its given value
    assert tags[:2] == ["ude-network", "ude-lbfgs"]
    assert tags[2:] == [f"ude-restart{r}-{s}" for r in (1, 2, 3) for s in ("network", "lbfgs")]
    with torch.no_grad():  # the L-BFGS stage reports the loss after its step: the model's loss now
        assert trajectory_loss(model, data[0], t, data).item() == pytest.approx(result.final_loss, rel=1e-9)


def test_restarts_stop_as_soon_as_an_attempt_reaches_the_target():
    t, data = _decay_data()
    model = _decay_model()
    result = fit_staged(model, data[0], t, data, network_steps=3, lr=0.05, target_loss=1e3, restarts=3)
    assert result.restarts == 0 and result.kept == 0 and len(result.attempts) == 1
    assert result.attempts[0] == result.final_loss <= 1e3


def test_restarts_are_seeded_and_leave_the_global_generator_alone():
    t, data = _decay_data()
    runs = []
    for _ in range(2):
        model = _decay_model()
        before = torch.random.get_rng_state()
        result = fit_staged(
            model, data[0], t, data, network_steps=2, lr=0.05, target_loss=1e-12, restarts=2, seed=11
        )
        assert torch.equal(torch.random.get_rng_state(), before)
        runs.append((result.attempts, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_restarts_reset_a_fitted_initial_state():
    t, data = _decay_data()
    model = _decay_model()
    start = data[0] + 0.5
    result = fit_staged(
        model, start, t, data, network_steps=5, lr=0.05, fit_y0=True, target_loss=1e-12, restarts=1, seed=3
    )
    # each attempt takes at most five Adam steps of about lr from the given start
    assert abs(float(result.y0) - float(start)) <= 5 * 0.05 + 1e-9
    assert len(result.attempts) == 2


def test_restarts_reject_bad_arguments_naming_the_fix():
    t, data = _decay_data()
    model = _decay_model()
    with pytest.raises(ValueError, match="pass target_loss"):
        fit_staged(model, data[0], t, data, network_steps=1, restarts=2)
    with pytest.raises(ValueError, match="target_loss must be a positive"):
        fit_staged(model, data[0], t, data, network_steps=1, target_loss=-1.0)
    with pytest.raises(ValueError, match="restarts must be a non-negative"):
        fit_staged(model, data[0], t, data, network_steps=1, target_loss=1.0, restarts=-1)
    plain = UniversalODE(lambda s, y, k: -k * y, lambda y: 0 * y, params={"k": 0.3})
    with pytest.raises(ValueError, match="reset_parameters"):
        fit_staged(plain, data[0], t, data, network_steps=1, target_loss=1.0, restarts=1)
