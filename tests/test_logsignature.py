"""Log-signatures to depth 3 (``torchnde.log_ode``) against an independent computation
(Chen's identity in the full tensor algebra, then the logarithm's series) and known values; the
windows; the log-ODE method's convergence to the CDE as the windows shrink; one step per window."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import torchnde as nde
from torchnde.log_ode import _expand

F64 = torch.float64


# --- the oracle: truncated tensor algebra as a list of levels, level k an array [C] * k --------


def _product(a: list[np.ndarray], b: list[np.ndarray], depth: int) -> list[np.ndarray]:
    out = []
    for k in range(depth + 1):
        out.append(sum(np.multiply.outer(a[i], b[k - i]) for i in range(k + 1)))
    return out


def _exp(v: np.ndarray, depth: int) -> list[np.ndarray]:
    levels = [np.array(1.0)]
    for k in range(1, depth + 1):
        levels.append(np.multiply.outer(levels[-1], v) / k)
    return levels


def _log(s: list[np.ndarray], depth: int) -> list[np.ndarray]:
    y = [np.zeros(()), *s[1:]]  # s - 1
    power, out = y, [np.zeros_like(level) for level in s]
    for n in range(1, depth + 1):
        for k in range(depth + 1):
            out[k] = out[k] + (-1) ** (n + 1) / n * power[k]
        power = _product(power, y, depth)
    return out


def _oracle_log(points: np.ndarray, depth: int) -> list[np.ndarray]:
    channels = points.shape[-1]
    sig = [np.array(1.0)] + [np.zeros([channels] * k) for k in range(1, depth + 1)]
    for a, b in itertools.pairwise(points):
        sig = _product(sig, _exp(b - a, depth), depth)
    return _log(sig, depth)


# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_words_are_the_lyndon_coefficients_of_the_expanded_log_signature(channels, depth):
    points = np.random.default_rng(channels * 10 + depth).normal(size=(9, channels))
    ours = nde.logsignature(torch.tensor(points), depth)
    log = _oracle_log(points, depth)
    expected = [log[len(w)][w] for w in nde.lyndon_words(channels, depth)]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("channels", [2, 3])
def test_brackets_are_the_coordinates_in_the_lyndon_basis_of_the_free_lie_algebra(channels):
    depth = 3
    points = np.random.default_rng(channels).normal(size=(7, channels))
    coords = nde.logsignature(torch.tensor(points), depth, basis="brackets").numpy()
    rebuilt = [np.zeros([channels] * k) for k in range(depth + 1)]
    for c, w in zip(coords, nde.lyndon_words(channels, depth)):
        for word, coefficient in _expand(w).items():  # the bracket expanded into words
            rebuilt[len(word)][word] += c * coefficient
    log = _oracle_log(points, depth)
    for k in range(1, depth + 1):  # every word, Lyndon or not
        np.testing.assert_allclose(rebuilt[k], log[k], atol=1e-10)


def test_known_values_the_increment_and_the_area():
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]], dtype=F64)
    assert torch.allclose(nde.logsignature(square, 2), torch.tensor([0.0, 0.0, 1.0], dtype=F64))
    line = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 6.0]], dtype=F64)  # a straight line: no area
    assert torch.allclose(nde.logsignature(line, 3), torch.tensor([3.0, 6.0, 0.0, 0.0, 0.0], dtype=F64))
    # depth 3 of an L-shaped path (e_1 then e_2): log(exp(e1) exp(e2)) = e1 + e2 + [e1,e2]/2 + ([e1,[e1,e2]] + [[e1,e2],e2])/12
    ell = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], dtype=F64)
    expected = torch.tensor([1.0, 1.0, 0.5, 1 / 12, 1 / 12], dtype=F64)
    assert torch.allclose(nde.logsignature(ell, 3, basis="brackets"), expected)


def test_the_lyndon_words_and_their_number():
    assert nde.lyndon_words(2, 3) == ((0,), (1,), (0, 1), (0, 0, 1), (0, 1, 1))
    for channels in range(1, 6):
        assert (
            nde.logsignature_channels(channels, 3)
            == channels + channels * (channels - 1) // 2 + (channels**3 - channels) // 3
        )


def test_the_log_signature_is_differentiable():
    x = torch.randn(2, 5, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: nde.logsignature(x, 3, basis="brackets"), (x,))


def test_windows_cut_the_linear_interpolation_at_the_window_ends():
    t = torch.tensor([0.0, 0.7, 1.0, 2.2, 3.1, 4.0], dtype=F64)
    x = torch.randn(2, 6, 2, dtype=F64)
    logsigs, r = nde.logsignature_windows(x, t, depth=3, window=1.5)
    assert torch.allclose(r, torch.tensor([0.0, 1.5, 3.0, 4.0], dtype=F64))
    path = nde.LinearPath(x, t)
    for k in range(3):  # each window: the log-signature of the path's points inside it
        inside = torch.cat([r[k : k + 1], t[(t > r[k]) & (t < r[k + 1])], r[k + 1 : k + 2]])
        points = torch.stack([path.evaluate(s) for s in inside], dim=-2)
        assert torch.allclose(logsigs[:, k], nde.logsignature(points, 3), atol=1e-12)


def test_the_log_signature_path_starts_at_the_data_and_moves_by_each_window():
    x = torch.randn(3, 11, 2, dtype=F64)
    path = nde.LogSignaturePath(x, depth=2, window=2.5)
    logsigs, r = nde.logsignature_windows(x, depth=2, window=2.5)
    assert torch.equal(path.times, r) and path.channels == 3
    start = torch.cat([x[:, 0], torch.zeros(3, 1, dtype=F64)], -1)
    assert torch.allclose(path.evaluate(r[0]), start)
    for k in range(len(r) - 1):
        assert torch.allclose(path.evaluate(r[k + 1]) - path.evaluate(r[k]), logsigs[:, k], atol=1e-12)
    assert torch.equal(path.jump_ts, r[1:-1])


def test_the_log_ode_method_with_a_learnt_field_steps_once_per_window():
    x = nde.with_time_channel(torch.randn(4, 101, 2))
    path = nde.LogSignaturePath(x, depth=2, window=10.0)
    net = torch.nn.Linear(5, 5 * path.channels)
    term = nde.CDETerm(lambda t, z: torch.tanh(net(z)).view(4, 5, path.channels), path)
    sol = nde.solve(term, torch.zeros(4, 5), torch.tensor([0.0, 100.0]), solver="rk4", dt=10.0)
    assert sol.stats.steps == 10
    sol.ys[-1].square().sum().backward()
    assert net.weight.grad.abs().sum() > 0


def _cde_problem():
    t = torch.linspace(0, 1, 129, dtype=F64)
    x = torch.stack([torch.sin(4 * t) + t, torch.cos(7 * t) * t], -1)
    a = torch.randn(2, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) * 0.8

    def f(s, z):
        return torch.tanh(torch.einsum("ijk,j->ik", a, z))  # [hidden 2, channels 2]

    return t, x, f, torch.tensor([0.5, -0.3], dtype=F64)


def test_log_ode_of_depth_2_converges_to_the_cde_solution_faster_than_depth_1():
    t, x, f, z0 = _cde_problem()
    exact = nde.solve(nde.CDETerm(f, nde.LinearPath(x, t)), z0, t[[0, -1]], rtol=1e-11, atol=1e-12).ys[-1]
    errors = {1: [], 2: []}
    for depth in (1, 2):
        for window in (1 / 4, 1 / 8, 1 / 16):
            term = nde.LogODETerm(f, nde.LogSignaturePath(x, t, depth=depth, window=window))
            ys = nde.solve(term, z0, t[[0, -1]], rtol=1e-11, atol=1e-12).ys
            errors[depth].append(float((ys[-1] - exact).abs().max()))
    rates = {d: [math.log2(a / b) for a, b in itertools.pairwise(e)] for d, e in errors.items()}
    assert all(rate > 3.0 for rate in rates[2]), errors  # fourth order for this smooth control
    assert all(e2 < e1 / 5 for e1, e2 in zip(errors[1][1:], errors[2][1:])), errors


def test_log_ode_steps_once_per_window_with_a_fixed_step_solver():
    t, x, f, z0 = _cde_problem()
    term = nde.LogODETerm(f, nde.LogSignaturePath(x, t, depth=3, window=0.125))
    sol = nde.solve(term, z0, t[[0, -1]], solver="rk4", dt=0.125)
    exact = nde.solve(nde.CDETerm(f, nde.LinearPath(x, t)), z0, t[[0, -1]], rtol=1e-10, atol=1e-12).ys[-1]
    assert sol.stats.steps == 8 and torch.allclose(sol.ys[-1], exact, atol=1e-3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: nde.logsignature(torch.zeros(4, 2), 4), "depth must be 1, 2 or 3"),
        (lambda: nde.logsignature(torch.zeros(4, 2), 2, basis="hall"), "basis must be one of"),
        (
            lambda: nde.logsignature_windows(torch.zeros(4, 2), depth=2, window=0.0),
            "window must be a positive",
        ),
        (lambda: nde.logsignature(torch.tensor([[math.nan, 0.0], [1.0, 1.0]]), 2), "NaN"),
        (lambda: nde.LogODETerm(lambda t, z: z, nde.LinearPath(torch.zeros(3, 2))), "LogSignaturePath"),
    ],
)
def test_bad_arguments_are_rejected_with_the_fix(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
