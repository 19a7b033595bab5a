"""Equation discovery: sparse regression recovers known systems; sympy <-> torch agree; refits recover data."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
import sympy as sp
import torch

from torchnde.datasets.systems import lotka_volterra
from torchnde.discovery import Discovery, Library, SparseTerms, discover, torch_function

DT = torch.float64


def box_states(n: int = 300, seed: int = 0, low: float = 0.1, high: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, 2, generator=g, dtype=DT)


def lv_interaction(y: torch.Tensor) -> torch.Tensor:
    xy = y[:, 0] * y[:, 1]
    return torch.stack([-0.9 * xy, 0.8 * xy], dim=-1)


def known_lv(t, u, alpha, delta):
    return torch.stack([alpha * u[..., 0], -delta * u[..., 1]], dim=-1)


def test_recovers_the_lotka_volterra_interaction_exactly():
    result = discover(
        lv_interaction, box_states(), library="polynomial+sin", degree=5, feature_names=["x", "y"]
    )
    assert isinstance(result, Discovery)
    assert result.support(0) == ["x*y"] and result.support(1) == ["x*y"]
    assert result.coefficient(0, "x*y") == pytest.approx(-0.9, abs=1e-6)
    assert result.coefficient(1, "x*y") == pytest.approx(0.8, abs=1e-6)
    assert np.count_nonzero(result.coefficients) == 2


def test_recovers_trigonometric_terms():
    def g(y):
        return torch.stack([0.5 * torch.sin(y[:, 0]) - 1.2 * y[:, 1], 2.0 * torch.cos(y[:, 1])], dim=-1)

    result = discover(g, box_states(seed=1), library="polynomial+trig", degree=2, feature_names=["x", "y"])
    assert sorted(result.support(0)) == ["sin(x)", "y"]
    assert result.support(1) == ["cos(y)"]
    assert result.coefficient(0, "sin(x)") == pytest.approx(0.5, abs=1e-6)
    assert result.coefficient(0, "y") == pytest.approx(-1.2, abs=1e-6)
    assert result.coefficient(1, "cos(y)") == pytest.approx(2.0, abs=1e-6)


def test_recovers_terms_from_a_custom_library():
    lib = Library.polynomial(2, degree=1, names=["x", "y"]) + Library.custom(
        ["exp(-x)", "x/(1 + y)"], names=["x", "y"]
    )

    def g(y):
        return (0.7 * torch.exp(-y[:, 0]) - 0.3 * y[:, 0] / (1 + y[:, 1]))[:, None]

    result = discover(g, box_states(seed=2), library=lib)
    assert sorted(result.support(0)) == ["exp(-x)", "x/(y + 1)"]
    assert result.coefficient(0, "exp(-x)") == pytest.approx(0.7, abs=1e-6)
    assert result.labels == ["g0"]


@pytest.mark.parametrize("criterion", ["aic", "aicc", "bic", "pareto"])
def test_every_criterion_keeps_the_sparse_model_on_exact_data(criterion):
    result = discover(lv_interaction, box_states(), library="polynomial", degree=3, criterion=criterion)
    assert result.support(0) == ["x*y"] and result.support(1) == ["x*y"]


def test_sweep_covers_every_threshold_and_ridge_value():
    result = discover(
        lv_interaction, box_states(), degree=2, thresholds=[1e-3, 1e-1, 10.0], alpha=[1e-5, 1e-2]
    )
    assert result.sweep.shape == (6, 2, 6)
    assert result.thresholds.tolist() == [1e-3, 1e-1, 10.0] * 2
    assert result.alphas.tolist() == [1e-5] * 3 + [1e-2] * 3
    k, err = result.pareto_front(0)
    assert k[2] == 0 and err[2] == pytest.approx(1.0)  # a huge threshold removes everything


def test_to_torch_round_trip_equals_the_sympy_equations():
    def g(y):
        x, v = y[:, 0], y[:, 1]
        return torch.stack(
            [0.3 * x**2 * v - 1.1 * torch.sin(v) + 0.25, -0.6 * x * v**2 + 0.9 * torch.cos(x)], dim=-1
        )

    result = discover(g, box_states(seed=3), library="polynomial+trig", degree=3, feature_names=["x", "y"])
    module = result.to_torch(dtype=DT)
    assert isinstance(module, SparseTerms)
    y = box_states(50, seed=9, low=-2.0, high=2.0)
    x_sym, y_sym = result.library.symbols
    for i, expr in enumerate(result.equations):
        f = sp.lambdify((x_sym, y_sym), expr, modules="numpy")
        expected = np.broadcast_to(f(y[:, 0].numpy(), y[:, 1].numpy()), (50,))
        assert np.allclose(module(y)[:, i].detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(module(y), g(y), atol=1e-8)
    # Only the discovered coefficients are parameters, and they carry gradients.
    n_active = int(np.count_nonzero(result.coefficients))
    assert sum(p.numel() for p in module.parameters()) == n_active
    module(y).sum().backward()
    assert all(p.grad is not None for p in module.parameters() if p.numel())


def test_sparse_terms_gradcheck_in_the_coefficients():
    lib = Library.polynomial(2, degree=2, names=["x", "y"])
    xi = np.zeros((2, len(lib)))
    xi[0, 4], xi[1, 1], xi[1, 5] = -0.9, 0.3, 0.2
    module = SparseTerms(lib, xi, dtype=DT)
    y = box_states(5)

    names = [n for n, _ in module.named_parameters()]

    def f(*coefs):
        return torch.func.functional_call(module, dict(zip(names, coefs)), (y,))

    coefs = tuple(p.detach().clone().requires_grad_(True) for p in module.parameters())
    assert torch.autograd.gradcheck(f, coefs)
    assert "x·y" in str(module)


def test_polynomial_library_matches_pysindy_columns():
    ps = pytest.importorskip("pysindy")
    x = box_states(40, seed=4).numpy()
    ours = Library.polynomial(2, degree=3).evaluate(x)
    theirs = np.asarray(ps.PolynomialLibrary(degree=3).fit_transform(x))
    assert ours.shape == theirs.shape == (40, 10)
    assert np.allclose(ours, theirs, rtol=1e-14, atol=1e-14)


def test_library_names_and_joining():
    lib = Library.polynomial(2, degree=2, names=["x", "y"]) + Library.trigonometric(
        2, cos=False, names=["x", "y"]
    )
    assert lib.names == ["1", "x", "y", "x**2", "x*y", "y**2", "sin(x)", "sin(y)"]
    assert len(Library.polynomial(3, degree=3)) == 20  # C(3 + 3, 3)
    assert len(lib + lib) == len(lib)  # duplicates dropped
    with pytest.raises(ValueError, match="different states"):
        lib + Library.polynomial(2, names=["a", "b"])


def test_torch_function_compiles_nested_expressions_and_rejects_unknown_ones():
    x, y = sp.symbols("x y")
    expr = 0.5 * sp.exp(-(x**2)) * sp.tanh(y) + sp.Abs(x) ** sp.Rational(3, 2) - 2 / (1 + y**2)
    f = torch_function(expr, (x, y))
    pts = box_states(20, seed=5, low=-1.5, high=1.5)
    ref = sp.lambdify((x, y), expr, modules="numpy")(pts[:, 0].numpy(), pts[:, 1].numpy())
    assert np.allclose(f(pts).numpy(), ref, rtol=1e-13)
    with pytest.raises(ValueError, match="cannot compile"):
        torch_function(sp.gamma(x), (x, y))


def test_printing_and_coefficient_lookup():
    result = discover(lv_interaction, box_states(), degree=2, feature_names=["x", "y"])
    assert str(result) == "dx/dt = -0.9000 x·y\ndy/dt = 0.8000 x·y"
    with pytest.raises(KeyError, match="not a library term"):
        result.coefficient(0, "x**7")


def _lv_clean():
    t, clean, _, _ = lotka_volterra(noise=0.0)
    targets = lv_interaction(clean)
    return t, clean, discover(targets, clean, degree=3, feature_names=["x", "y"])


def test_refit_recovers_perturbed_coefficients_from_trajectory_data():
    t, clean, result = _lv_clean()
    xy = result.library.names.index("x*y")
    perturbed = result.coefficients.copy()
    perturbed[0, xy], perturbed[1, xy] = -0.7, 0.95
    fit = replace(result, coefficients=perturbed).refit(
        known_lv,
        clean[0],
        t,
        clean,
        params={"alpha": 1.3, "delta": 1.8},
        fit_y0=False,
        steps=100,
        rtol=1e-10,
        atol=1e-12,
    )
    assert fit.discovery.coefficient(0, "x*y") == pytest.approx(-0.9, abs=1e-5)
    assert fit.discovery.coefficient(1, "x*y") == pytest.approx(0.8, abs=1e-5)
    assert fit.sse < 1e-12
    assert fit.discovery.support(0) == ["x*y"]  # the structure is kept
    pred = fit.model(fit.y0, t)
    assert torch.allclose(pred, clean, atol=1e-6)


@pytest.mark.slow
def test_refine_chooses_the_true_structure_on_data_when_the_learned_term_is_distorted():
    t, clean, noisy, _ = lotka_volterra(seed=0, noise=0.01)
    states = clean
    xy = states[:, 0] * states[:, 1]
    # A 'network' that is off by a smooth error, as a trained one is.
    distorted = torch.stack([-0.9 * xy + 0.05 * states[:, 1] ** 2, 0.8 * xy - 0.04 * states[:, 1]], dim=-1)
    result = discover(distorted, states, library="polynomial", degree=3, feature_names=["x", "y"])
    assert result.support(0) != ["x*y"]  # the regression alone keeps the error term
    calls: list[tuple[int, int]] = []
    fit = result.refine(
        known_lv,
        noisy[0],
        t,
        noisy,
        params={"alpha": 1.3, "delta": 1.8},
        max_terms=2,
        singles=2,
        passes=1,
        progress=lambda done, planned: calls.append((done, planned)),
    )
    assert fit.discovery.support(0) == ["x*y"] and fit.discovery.support(1) == ["x*y"]
    # progress: one call per structure scored (and the polish), counting up to the plan
    assert [d for d, _ in calls] == list(range(1, len(calls) + 1))
    assert all(d <= p for d, p in calls) and calls[-1][0] == calls[-1][1] >= len(fit.candidates) + 1
    assert fit.discovery.coefficient(0, "x*y") == pytest.approx(-0.9, rel=0.02)
    assert fit.discovery.coefficient(1, "x*y") == pytest.approx(0.8, rel=0.02)
    assert fit.candidates and all({"terms", "sse", "score"} <= set(c) for c in fit.candidates)
    assert min(c["score"] for c in fit.candidates) >= fit.score - 1.0


def test_discover_uses_a_universal_odes_learned_term():
    from torch import nn

    from torchnde.models.universal import UniversalODE

    class Interaction(nn.Module):
        def forward(self, y):
            return lv_interaction(y)

    model = UniversalODE(known_lv, Interaction(), params={"alpha": 1.3, "delta": 1.8})
    result = discover(model, box_states(), degree=2)
    assert result.coefficient(0, "x*y") == pytest.approx(-0.9, abs=1e-8)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"criterion": "cv"}, ValueError, "criterion"),
        ({"library": "polynomial+wavelet"}, ValueError, "unknown library part"),
        ({"alpha": -1.0}, ValueError, "alpha"),
        ({"thresholds": []}, ValueError, "thresholds"),
        ({"feature_names": ["x"]}, ValueError, "state names"),
    ],
)
def test_bad_options_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        discover(lv_interaction, box_states(), **kwargs)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"\[N, m\]"):
        discover(torch.zeros(5, 2), box_states())
    with pytest.raises(ValueError, match="NaN"):
        discover(lambda y: y * float("nan"), box_states())
    zeros = torch.zeros(10, 2, dtype=DT)
    with pytest.raises(ValueError, match="identically zero"):
        discover(lambda y: y, zeros, library="polynomial", degree=1)
    with pytest.raises(TypeError, match="callable"):
        discover("not a function", box_states())


def test_a_missing_pysindy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pysindy", None)
    with pytest.raises(ImportError, match=r'pip install "torchnde\[discovery\]"'):
        discover(lv_interaction, box_states())


def test_refine_rejects_an_unknown_tiebreak_naming_the_choices():
    t, clean, result = _lv_clean()
    with pytest.raises(ValueError, match=r"'score' or 'targets'.*Did you mean 'targets'"):
        result.refine(known_lv, clean[0], t, clean, params={"alpha": 1.3, "delta": 1.8}, tiebreak="target")


@pytest.mark.slow
def test_refine_lets_the_targets_decide_between_structures_the_data_cannot_tell_apart():
    """Seed 2 of the Lotka-Volterra data (31 points, 5% noise): refitted to the data, the wrong
    U_y = c·y scores a lower BIC than the true c·x·y, by less than 6 (not strong evidence). With
    ``tiebreak="targets"`` and a window of 6 the targets (here the true interaction along the
    clean trajectory, as a well-trained network gives) choose the true structure."""
    t, clean, noisy, _ = lotka_volterra(seed=2)
    xy = clean[:, 0] * clean[:, 1]
    result = discover(
        torch.stack([-0.9 * xy, 0.8 * xy], -1),
        clean,
        library="polynomial",
        degree=2,
        feature_names=["x", "y"],
    )
    fit = result.refine(
        known_lv,
        noisy[0],
        t,
        noisy,
        params={"alpha": 1.3, "delta": 1.8},
        max_terms=1,
        tiebreak="targets",
        window=6.0,
        polish=0,
    )
    score = {tuple(map(tuple, c["terms"])): c["score"] for c in fit.candidates}
    best = min(score, key=score.get)
    assert best == (("x*y",), ("y",))  # what tiebreak="score" takes: the data prefer the wrong one
    assert 0 < score[(("x*y",), ("x*y",))] - score[best] < 6  # weakly
    assert fit.discovery.support(0) == ["x*y"] and fit.discovery.support(1) == ["x*y"]
    wrong = result.coefficients.copy()
    wrong[1] = 0.0
    wrong[1, result.library.names.index("y")] = 0.2
    # the targets: exact on the true support, 9% of their energy unexplained by y alone
    assert result._target_residual(result.coefficients) < 1e-20
    assert result._target_residual(wrong) > 0.05
