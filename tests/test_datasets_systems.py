"""The Lotka–Volterra and damped-oscillator generators: exact solutions, noise model, seeding."""

from __future__ import annotations

import math

import pytest
import torch

from torchnde.datasets.systems import (
    Observations,
    damped_oscillator_field,
    damped_oscillators,
    lotka_volterra,
    lotka_volterra_field,
)


def _lv_invariant(u: torch.Tensor, a: float, b: float, c: float, d: float) -> torch.Tensor:
    x, y = u[..., 0], u[..., 1]
    return c * x - d * torch.log(x) + b * y - a * torch.log(y)


def test_lotka_volterra_has_the_paper_grid_initial_state_and_parameters():
    t, clean, noisy, params = lotka_volterra(seed=0)
    assert t.shape == (31,) and clean.shape == (31, 2) and noisy.shape == (31, 2)
    assert torch.allclose(t, torch.arange(31, dtype=torch.float64) * 0.1, atol=1e-12)
    assert clean[0].tolist() == pytest.approx([0.44249296, 4.6280594], abs=1e-12)
    assert (params["alpha"], params["beta"], params["gamma"], params["delta"]) == (1.3, 0.9, 0.8, 1.8)
    assert clean.dtype == torch.float64


def test_lotka_volterra_clean_states_conserve_the_first_integral():
    data = lotka_volterra(t_end=20.0)
    h = _lv_invariant(data.clean, 1.3, 0.9, 0.8, 1.8)
    assert float((h - h[0]).abs().max()) < 1e-9


def test_lotka_volterra_noise_is_five_percent_of_each_states_mean():
    a = lotka_volterra(seed=3)
    b = lotka_volterra(seed=3, noise=0.10)
    scale = 0.05 * a.clean.mean(dim=0)
    assert a.params["noise_std"] == pytest.approx(scale.tolist(), rel=1e-12)
    # The same standard-normal draw, scaled by the noise level.
    assert torch.allclose((b.noisy - b.clean) / 2, a.noisy - a.clean, atol=1e-14)
    z = (a.noisy - a.clean) / scale
    assert 0.5 < float(z.std()) < 1.5


def test_lotka_volterra_is_deterministic_per_seed_and_noise_free_at_zero():
    assert torch.equal(lotka_volterra(seed=1).noisy, lotka_volterra(seed=1).noisy)
    assert not torch.equal(lotka_volterra(seed=1).noisy, lotka_volterra(seed=2).noisy)
    quiet = lotka_volterra(noise=0.0)
    assert torch.equal(quiet.noisy, quiet.clean)


def test_lotka_volterra_field_is_the_textbook_right_hand_side():
    f = lotka_volterra_field(1.3, 0.9, 0.8, 1.8)
    u = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    assert f(torch.tensor(0.0), u)[0].tolist() == pytest.approx([1.3 * 2 - 0.9 * 6, 0.8 * 6 - 1.8 * 3])


def test_lotka_volterra_float32_output():
    out = lotka_volterra(dtype=torch.float32)
    assert isinstance(out, Observations)
    assert out.clean.dtype == torch.float32 and out.t.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"noise": -0.1}, "noise"),
        ({"dt": 0.07}, "whole number"),
        ({"t_end": 0.0}, "t_end"),
        ({"u0": (1.0,)}, "u0"),
        ({"dtype": torch.int64}, "dtype"),
    ],
)
def test_lotka_volterra_rejects_bad_settings(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        lotka_volterra(**kwargs)


def test_damped_oscillators_match_the_closed_form_solution():
    t, clean, noisy, params = damped_oscillators(seed=0)
    assert t.shape == (100,) and clean.shape == (100, 30, 2)
    assert torch.equal(noisy, clean)
    g, w = params["gamma"], params["omega"]
    z0 = torch.tensor(params["z0"], dtype=torch.float64)
    x0, v0 = z0[:, 0], z0[:, 1]
    tt = t[:, None]
    decay = torch.exp(-g * tt)
    amp = (v0 + g * x0) / w
    x = decay * (x0 * torch.cos(w * tt) + amp * torch.sin(w * tt))
    v = -g * x + decay * (-x0 * w * torch.sin(w * tt) + amp * w * torch.cos(w * tt))
    assert float((clean[..., 0] - x).abs().max()) < 1e-9
    assert float((clean[..., 1] - v).abs().max()) < 1e-9


def test_damped_oscillators_initial_conditions_lie_in_the_box_and_follow_the_seed():
    a = damped_oscillators(seed=5)
    z0 = torch.tensor(a.params["z0"])
    assert float(z0.abs().max()) <= 2.5
    assert torch.equal(a.clean, damped_oscillators(seed=5).clean)
    assert not torch.equal(a.clean, damped_oscillators(seed=6).clean)


def test_damped_oscillator_field_has_the_sonode_acceleration():
    f = damped_oscillator_field(0.1, 1.0)
    out = f(torch.tensor(0.0), torch.tensor([2.0, -1.0], dtype=torch.float64))
    assert out.tolist() == pytest.approx([-1.0, -(0.01 + 1.0) * 2.0 - 0.2 * -1.0])


def test_damped_oscillators_noise_scales_with_each_channels_spread():
    a = damped_oscillators(seed=0, noise=0.1)
    std = a.clean.reshape(-1, 2).std(dim=0)
    assert a.params["noise_std"] == pytest.approx((0.1 * std).tolist(), rel=1e-12)
    assert not torch.equal(a.noisy, a.clean)
    assert math.isfinite(float(a.noisy.sum()))


@pytest.mark.parametrize(
    "kwargs", [{"n": 0}, {"steps": 1}, {"box": -1.0}, {"omega": 0.0}, {"noise": float("nan")}]
)
def test_damped_oscillators_reject_bad_settings(kwargs):
    with pytest.raises(ValueError):
        damped_oscillators(**kwargs)
