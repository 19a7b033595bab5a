"""The stochastic Lorenz generator: shapes, seeding, standardisation, the drift it integrates
(against the deterministic Lorenz system when the noise is off), its argument checks, and the
mirror map of the system's symmetry (x, y, z) -> (-x, -y, z)."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde
from torchnde.datasets import mirror_lorenz, stochastic_lorenz


def test_paths_are_time_first_on_a_uniform_grid():
    t, clean, noisy, params = stochastic_lorenz(n_paths=6, n_times=11, t1=0.5, dt=1e-2)
    assert t.shape == (11,) and clean.shape == noisy.shape == (11, 6, 3)
    assert float(t[0]) == 0.0 and float(t[-1]) == pytest.approx(0.5)
    assert params["drift"] == (10.0, 28.0, 8.0 / 3.0) and params["diffusion"] == (0.1, 0.28, 0.3)


def test_a_seed_fixes_the_paths_and_another_seed_changes_them():
    a = stochastic_lorenz(n_paths=4, n_times=5, dt=1e-2, seed=3)
    b = stochastic_lorenz(n_paths=4, n_times=5, dt=1e-2, seed=3)
    c = stochastic_lorenz(n_paths=4, n_times=5, dt=1e-2, seed=4)
    assert torch.equal(a.noisy, b.noisy) and not torch.allclose(a.noisy, c.noisy)


def test_standardised_observations_have_zero_mean_and_unit_std_per_coordinate():
    data = stochastic_lorenz(n_paths=16, n_times=20, dt=1e-2, dtype=torch.float64)
    flat = data.noisy.reshape(-1, 3)
    assert torch.allclose(flat.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(flat.std(0), torch.ones(3, dtype=torch.float64), atol=1e-12)
    mean, std = (
        torch.tensor(data.params["mean"], dtype=torch.float64),
        torch.tensor(data.params["std"], dtype=torch.float64),
    )
    raw = stochastic_lorenz(n_paths=16, n_times=20, dt=1e-2, normalise=False, dtype=torch.float64)
    assert torch.allclose(data.clean * std + mean, raw.clean, atol=1e-10)


def test_without_diffusion_the_paths_converge_to_the_deterministic_lorenz_system():
    def lorenz(t, s):
        x, y, z = s.unbind(-1)
        return torch.stack([10 * (y - x), x * (28 - z) - y, x * y - 8 / 3 * z], -1)

    errors = []
    for dt in (2e-4, 1e-4):
        data = stochastic_lorenz(
            n_paths=3, n_times=6, t1=0.1, noise=0.0, diffusion=(0, 0, 0), dt=dt, normalise=False,
            dtype=torch.float64,
        )  # fmt: skip
        assert torch.equal(data.clean, data.noisy)
        want = nde.solve(lorenz, data.clean[0], data.t, solver="dopri8", rtol=1e-12, atol=1e-12).ys
        errors.append(float((data.clean - want).abs().max()))
    # without noise Milstein is Euler's method: first order in dt
    assert errors[1] < 5e-3 and 1.8 < errors[0] / errors[1] < 2.2


def test_bad_arguments_are_errors_that_name_the_fix():
    with pytest.raises(ValueError, match="n_times must be an integer >= 2"):
        stochastic_lorenz(n_times=1)
    with pytest.raises(ValueError, match="drift must be three numbers"):
        stochastic_lorenz(drift=(10.0, 28.0))
    with pytest.raises(ValueError, match="dt must be in"):
        stochastic_lorenz(dt=2.0)
    with pytest.raises(ValueError, match="noise must be"):
        stochastic_lorenz(noise=-1.0)
    with pytest.raises(TypeError, match="dtype"):
        stochastic_lorenz(dtype=torch.int64)


def test_mirror_of_standardised_paths_is_the_standardised_mirror_of_the_raw_paths():
    kwargs = {"n_paths": 12, "n_times": 9, "dt": 1e-2, "seed": 5, "dtype": torch.float64}
    data, raw = stochastic_lorenz(**kwargs), stochastic_lorenz(normalise=False, **kwargs)
    mean = torch.tensor(data.params["mean"], dtype=torch.float64)
    std = torch.tensor(data.params["std"], dtype=torch.float64)
    flip = torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64)
    assert torch.allclose(mirror_lorenz(data.noisy, data.params) * std + mean, raw.noisy * flip, atol=1e-10)
    assert torch.equal(mirror_lorenz(raw.noisy, raw.params), raw.noisy * flip)  # mean 0, std 1: a sign flip
    twice = mirror_lorenz(mirror_lorenz(data.clean, data.params), data.params)
    assert torch.allclose(twice, data.clean, atol=1e-12)


def test_mirror_of_a_noise_free_path_is_the_path_from_the_mirrored_start():
    def lorenz(t, s):
        x, y, z = s.unbind(-1)
        return torch.stack([10 * (y - x), x * (28 - z) - y, x * y - 8 / 3 * z], -1)

    data = stochastic_lorenz(
        n_paths=4, n_times=11, t1=0.2, noise=0.0, diffusion=(0, 0, 0), dt=1e-3, dtype=torch.float64
    )
    mean = torch.tensor(data.params["mean"], dtype=torch.float64)
    std = torch.tensor(data.params["std"], dtype=torch.float64)
    got = mirror_lorenz(data.clean, data.params) * std + mean
    # without noise the generator's Milstein steps are Euler steps, and Euler's map is equivariant
    want = nde.solve(lorenz, got[0], data.t, solver="euler", dt=1e-3).ys
    assert float(want[-1].abs().max()) > 1.0  # the paths have moved
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)


def test_mirror_rejects_paths_without_three_coordinates_and_params_without_the_map():
    data = stochastic_lorenz(n_paths=2, n_times=3, dt=1e-2)
    with pytest.raises(ValueError, match=r"paths must be a tensor \[\.\.\., 3\]"):
        mirror_lorenz(data.noisy[..., :2], data.params)
    with pytest.raises(ValueError, match="pass the params returned by stochastic_lorenz"):
        mirror_lorenz(data.noisy, {"std": data.params["std"]})
