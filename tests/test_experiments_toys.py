"""The toy reproductions: ANODE (g1d, spheres), SONODE oscillators, Dissecting NODEs, RNODE.

The fast tests check the pieces the experiments are built from (exact reference solutions,
fields, read-outs); the slow ones run each quick tier end to end and assert its criteria.
"""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as nde
from torchnde.experiments import names, rnode, run_experiment
from torchnde.experiments.anode import FirstCoordinates, TimeMLP
from torchnde.experiments.dissecting import _forced_relaxation
from torchnde.experiments.rnode import (
    _concat_mlp,
    _eight_gaussians,
    _eight_gaussians_log_density,
    _gaussian_nll,
    _two_spirals,
)

TOY_EXPERIMENTS = [
    "anode-g1d",
    "anode-spheres",
    "sonode-oscillators",
    "dissecting-reflection",
    "rnode-regularisation",
]


def test_toy_experiments_are_registered():
    assert set(TOY_EXPERIMENTS) <= set(names())


def test_forced_relaxation_reference_solves_the_ode():
    t = torch.linspace(0, 1, 21, dtype=torch.float64)
    z0 = torch.linspace(-1, 1, 7, dtype=torch.float64).reshape(-1, 1)
    exact = _forced_relaxation(z0, t)

    def f(s, z):
        return -z + 2 * torch.sin(2 * math.pi * s)

    numeric = nde.solve(f, z0, t, solver="dopri8", rtol=1e-12, atol=1e-12).ys
    torch.testing.assert_close(numeric, exact, rtol=0, atol=1e-10)
    # it goes up then down: no autonomous 1-D field has such trajectories
    assert (exact[1:, 3] - exact[:-1, 3]).max() > 0 > (exact[1:, 3] - exact[:-1, 3]).min()


def test_time_mlp_sees_time_only_when_time_dependent():
    torch.manual_seed(0)
    y = torch.randn(4, 3)
    f = TimeMLP(3, 8)
    assert f(torch.tensor(0.0), y).shape == (4, 3)
    assert not torch.allclose(f(torch.tensor(0.0), y), f(torch.tensor(1.0), y))
    g = TimeMLP(3, 8, time_dependent=False, out=1)
    torch.testing.assert_close(g(torch.tensor(0.0), y), g(torch.tensor(1.0), y))
    assert g(torch.tensor(0.0), y).shape == (4, 1)


def test_first_coordinates_reads_out_the_leading_channels():
    h = torch.arange(12.0).reshape(2, 2, 3)
    assert torch.equal(FirstCoordinates(2)(h), h[..., :2])
    assert list(FirstCoordinates(1).parameters()) == []


def _run_quick(name: str, tmp_path) -> dict:
    doc = run_experiment(name, quick=True, out=tmp_path, progress=False)
    assert doc["quick"] and doc["seed"] == 0
    assert list(tmp_path.glob("*.png")), "the experiment wrote no figure"
    assert (tmp_path / "report.md").exists()
    assert doc["figure_problems"] == {}, doc["figure_problems"]  # labelled, nothing overlaps
    return doc


def _failed(doc: dict) -> list[str]:
    return [
        f"{c['name']}: {c['measured']} {c['op']} {c['threshold']}" for c in doc["checks"] if not c["passed"]
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["anode-g1d", "anode-spheres", "dissecting-reflection"])
def test_quick_tier_passes(name, tmp_path):
    doc = _run_quick(name, tmp_path)
    assert doc["passed"], _failed(doc)


def _sonode_problem(tol: float):
    """Seed-0 oscillator data (float64) and a SONODE with the experiment's ELU field."""
    from torch import nn

    from torchnde.datasets.systems import damped_oscillators
    from torchnde.models import SecondOrderNeuralODE

    data = damped_oscillators(n=30, seed=0, dtype=torch.float64)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 20), nn.ELU(), nn.Linear(20, 20), nn.ELU(), nn.Linear(20, 1)).double()
    model = SecondOrderNeuralODE(net, t_span=(0.0, 10.0), solver="dopri5", rtol=tol, atol=tol)
    return data.t, data.clean, net, model


def _loss_and_grad(net, predict, target) -> tuple[torch.Tensor, torch.Tensor]:
    net.zero_grad()
    pred = predict()
    (pred - target).pow(2).mean().backward()
    return pred.detach(), torch.cat([p.grad.reshape(-1) for p in net.parameters()])


def test_sonode_equals_a_first_order_node_on_the_stacked_state_at_the_experiments_tolerance():
    # the experiment's SONODE (tuple state, dopri5 at 1e-3) against a hand-written first-order
    # field on cat([x, v]) with the same network: same steps, so the same numbers to rounding
    t, z, net, model = _sonode_problem(1e-3)
    x0, v0 = z[0, :, :1], z[0, :, 1:]

    def stacked(s, y):
        return torch.cat([y[:, 1:], net(y)], dim=-1)

    pa, ga = _loss_and_grad(net, lambda: torch.cat(model(x0, t, v0=v0, return_velocity=True), -1), z)
    pb, gb = _loss_and_grad(
        net, lambda: nde.solve(stacked, z[0], t, solver="dopri5", rtol=1e-3, atol=1e-3).ys, z
    )
    torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-10)
    # the random initial field is unstable: the loss starts far above the data's scale
    assert (pa - z).pow(2).mean() > 10 * z.pow(2).mean()


def test_sonode_trajectory_and_gradient_match_torchdiffeq_on_the_repositorys_layout():
    # Norcliffe et al.'s scripts stack positions over velocities ([2n, 1]) and call torchdiffeq
    torchdiffeq = pytest.importorskip("torchdiffeq")
    t, z, net, model = _sonode_problem(1e-9)
    x0, v0 = z[0, :, :1], z[0, :, 1:]
    n = x0.shape[0]

    def repo_field(s, y):
        x, v = y[:n], y[n:]
        return torch.cat([v, net(torch.cat([x, v], dim=1))])

    def reference():
        out = torchdiffeq.odeint(repo_field, torch.cat([x0, v0]), t, rtol=1e-9, atol=1e-9, method="dopri5")
        return torch.cat([out[:, :n], out[:, n:]], dim=-1)

    pa, ga = _loss_and_grad(net, lambda: torch.cat(model(x0, t, v0=v0, return_velocity=True), -1), z)
    pb, gb = _loss_and_grad(net, reference, z)
    torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-5 * float(gb.abs().max()))


@pytest.fixture(scope="module")
def sonode_quick(tmp_path_factory) -> dict:
    return _run_quick("sonode-oscillators", tmp_path_factory.mktemp("sonode"))


@pytest.mark.slow
def test_sonode_quick_tier_recovers_the_damped_oscillator_law(sonode_quick):
    law = [c for c in sonode_quick["checks"] if "coefficient" in c["name"]]
    assert len(law) == 2
    assert all(c["passed"] for c in law), _failed(sonode_quick)
    fit = sonode_quick["metrics"]["sonode_acceleration_fit"]
    assert fit["c_x"] == pytest.approx(-1.01, rel=0.25) and fit["c_v"] == pytest.approx(-0.2, rel=0.25)


@pytest.mark.slow
def test_sonode_quick_tier_shows_adams_memory_of_the_initial_blow_up(sonode_quick):
    m = sonode_quick["metrics"]
    # SONODE's random initial field blows up over t in [0, 10]: a far larger first loss and gradient
    assert m["initial_mse"]["SONODE"] > 10 * m["initial_mse"]["ANODE(1)"]
    assert m["first_gradient_norm"]["SONODE"] > 10 * m["first_gradient_norm"]["ANODE(1)"]
    # from the same weights, clearing Adam's moments once after the transient removes the plateau
    restarted = m["diagnostic_final_mse_adam_restarted_after_50"]
    assert restarted["SONODE"] < 0.1 * m["final_mse"]["SONODE"]
    assert restarted["SONODE"] <= restarted["ANODE(1)"]


@pytest.mark.slow
def test_sonode_quick_tier_passes_with_the_mse_claim_recorded_as_not_reproduced(sonode_quick):
    assert sonode_quick["passed"], _failed(sonode_quick)
    known = [c for c in sonode_quick["checks"] if c["known_failure"] is not None]
    assert [c["name"] for c in known] == ["SONODE final MSE / ANODE(1) final MSE"]
    ratio = sonode_quick["metrics"]["final_mse"]["SONODE"] / sonode_quick["metrics"]["final_mse"]["ANODE(1)"]
    assert known[0]["measured"] == pytest.approx(ratio)
    # still not reproduced (seed 0: ratio 5.5 at 250 iterations, 60 at 1,000): if this fails, the claim
    # reproduces, so update the README's models table, the gallery and sonode.py, and drop known_failure
    assert known[0]["measured"] > 1 and not known[0]["passed"]
    assert "Adam's second moment" in known[0]["known_failure"]


# -- RNODE: its flow and the quick tier ----------------------------------------------------------------


def test_rnode_flow_is_the_models_cnf_with_the_per_dimension_penalties_only_when_asked():
    net = _concat_mlp()
    plain, penalised = rnode._flow(net), rnode._flow(net, lam=0.3, tol=1e-3)
    assert isinstance(plain, nde.models.CNF) and plain.field is net and penalised.field is net
    assert plain.regularisers == () and plain.trace == "exact" and plain.solver == "dopri5"
    assert (plain.rtol, plain.atol, penalised.rtol) == (1e-5, 1e-5, 1e-3)
    assert penalised.regularisers == (
        nde.models.KineticEnergy(0.3, per_dimension=True),
        nde.models.JacobianFrobenius(0.3, per_dimension=True),
    )


def test_eight_gaussians_follow_the_ffjord_toy_and_their_exact_density():
    x = _eight_gaussians(40_000, torch.Generator().manual_seed(0), torch.float64)
    radius = x.norm(dim=1)
    assert float(radius.mean()) == pytest.approx(4 / 1.414, rel=0.02)
    angles = torch.remainder(torch.atan2(x[:, 1], x[:, 0]) / (math.pi / 4) + 0.5, 8).floor()
    assert torch.bincount(angles.long(), minlength=8).min() > 4_500  # 8 equal modes
    g = torch.linspace(-6, 6, 241, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    mass = float(_eight_gaussians_log_density(grid).exp().sum() * (g[1] - g[0]) ** 2)
    assert mass == pytest.approx(1.0, abs=1e-6)
    # entropy ~ log 8 + log(2 pi e sigma^2) = 2.84 nats; a single fitted Gaussian: 4.26 nats
    assert float(-_eight_gaussians_log_density(x).mean()) == pytest.approx(2.839, abs=0.02)
    assert _gaussian_nll(x[:20_000], x[20_000:]) == pytest.approx(4.26, abs=0.02)


@pytest.fixture(scope="module")
def rnode_quick(tmp_path_factory) -> dict:
    return _run_quick("rnode-regularisation", tmp_path_factory.mktemp("rnode"))


def test_two_spirals_follow_the_ffjord_toy():
    x = _two_spirals(40_001, torch.Generator().manual_seed(0), torch.float64)
    assert x.shape == (40_001, 2) and x.dtype == torch.float64
    assert torch.equal(x, _two_spirals(40_001, torch.Generator().manual_seed(0), torch.float64))
    half = 20_001  # the first half on one arm, the rest on its mirror image
    assert torch.allclose(x[:half].mean(0), -x[half:].mean(0), atol=0.02)
    assert float(x.mean(0).abs().max()) < 0.02
    radius = x.norm(dim=1)
    assert float(radius.max()) < (3 * math.pi + 0.5 * math.sqrt(2)) / 3 + 0.5  # 1.5 turns, /3
    # arm parameter r = sqrt(u) 3 pi: uniform in area, a quarter of the points at r < 3 pi / 2
    assert 0.22 < float((radius < math.pi / 2).double().mean()) < 0.32


@pytest.mark.slow
def test_rnode_quick_tier_trains_every_lambda_from_the_same_start(rnode_quick):
    task = rnode_quick["metrics"]["2spirals"]
    runs = task["runs"]
    assert set(runs) == {"unregularised", "RNODE lambda=0.3"}
    assert task["chosen_lambda"] == 0.3
    for res in runs.values():
        assert math.isfinite(res["test_nll"]) and res["test_forward_nfe"] > 0
        nfe = res["test_nfe_by_tolerance"]
        assert nfe["1e-07"] > nfe["0.001"], "a much tighter tolerance should take more evaluations"
    # the penalties do what they are for: lower kinetic energy and Jacobian norm than without
    base, strong = runs["unregularised"], runs["RNODE lambda=0.3"]
    assert strong["kinetic_energy"] < base["kinetic_energy"]
    assert strong["jacobian_frobenius"] < base["jacobian_frobenius"]


@pytest.mark.slow
def test_rnode_quick_tier_passes(rnode_quick):
    # The quick tier (300 steps on 2spirals) checks looser thresholds; the full tier (1,000 steps)
    # is the reproduction (2spirals checked, 8gaussians reported).
    assert rnode_quick["passed"], _failed(rnode_quick)


def test_time_mlp_and_first_coordinates_reject_bad_sizes():
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        TimeMLP(2, 0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        FirstCoordinates(0)
