"""``latent-ode-spirals``: the GRU-Δt baseline, and the quick tier end to end."""

from __future__ import annotations

import pytest
import torch

from torchnde.experiments._framework import get, run_experiment
from torchnde.experiments.latent_ode import WINDOW, GRUDelta, _times, latent_ode


def test_the_experiment_is_registered_with_its_paper():
    assert "1907.03907" in get("latent-ode-spirals").paper


def test_the_latent_ode_has_the_torchdiffeq_example_sizes():
    model = latent_ode()
    assert model.latent_dim == 4 and model.encoder.hidden_size == 25
    assert model.field[0].out_features == 20


def test_the_baseline_ignores_masked_values_and_sees_the_time_gaps():
    torch.manual_seed(0)
    model = GRUDelta(2, 6)
    times = torch.tensor([0.0, 0.1, 0.5, 0.6])
    values = torch.randn(3, 4, 2)
    mask = torch.rand(3, 4, 2) > 0.4
    query = torch.linspace(0, 1, 5)
    out = model(times, values, mask, query)
    assert out.shape == (3, 5, 2)
    nan = torch.where(mask, values, torch.full_like(values, float("nan")))
    assert torch.equal(out, model(times, nan, mask, query))
    stretched = model(times * 2, values, mask, query)
    assert not torch.allclose(out, stretched)


def test_training_targets_add_second_half_points_the_encoders_never_see():
    def draw(later_seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _times(
            40, 12, 10, 8, torch.Generator().manual_seed(1), torch.Generator().manual_seed(later_seed)
        )

    shown, target, scored = draw(3)
    half = WINDOW // 2
    assert shown.shape == (40, 12) and target.shape == (40, 24) and scored.shape == (40, 18)
    assert int(shown.max()) < half
    assert torch.equal(target[:, :12], shown)
    assert int(target[:, 12:].min()) >= half and int(target[:, 12:].max()) < WINDOW
    assert bool((target.diff(dim=1) > 0).all())  # increasing query times for both models
    held, beyond = scored[:, :10], scored[:, 10:]
    assert int(held.max()) < half and int(beyond.min()) >= half
    assert not bool((held.unsqueeze(-1) == shown.unsqueeze(1)).any())  # held-out means not shown
    other_shown, other_target, other_scored = draw(4)
    assert torch.equal(other_shown, shown) and torch.equal(other_scored, scored)
    assert not torch.equal(other_target, target)


@pytest.mark.slow
def test_quick_tier_trains_and_beats_the_baseline(tmp_path):
    doc = run_experiment("latent-ode-spirals", quick=True, out=tmp_path, progress=False)
    failed = [
        f"{c['name']}: {c['measured']} {c['op']} {c['threshold']}" for c in doc["checks"] if not c["passed"]
    ]
    assert doc["passed"], failed
    assert doc["figure_problems"] == {}, doc["figure_problems"]
    rmse = doc["metrics"]["interpolation_rmse"]
    assert rmse["latent ODE"] < rmse["GRU-Δt"]
