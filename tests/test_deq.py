"""``torchnde.models.DEQ``: the equilibrium within its tolerance, closed forms for a linear layer,
the implicit gradient against finite differences, a long unrolled iteration and torchdeq, the
phantom gradient, the non-convergence status, memory independent of the forward iterations, and
the Jacobian penalty."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
from torch import nn

import torchnde as nde
from torchnde.models import DEQ
from torchnde.solvers import FixedPoint, FixedPointError, FixedPointWarning, relative_residual

D64 = torch.float64


class Layer(nn.Module):
    """``f(z, x) = tanh(W z + U x + b)`` with ``W`` scaled to a contraction."""

    def __init__(self, dim: int, gain: float = 0.6) -> None:
        super().__init__()
        self.W = nn.Linear(dim, dim, bias=False)
        self.U = nn.Linear(dim, dim)
        nn.init.normal_(self.W.weight, std=gain / dim**0.5)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.W(z) + self.U(x))


class Linear(nn.Module):
    """``f(z, x) = A z + x``: ``z* = (I - A)^-1 x``."""

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return z @ self.A.T + x


def _layer(dim: int = 6, seed: int = 0, gain: float = 0.6) -> Layer:
    torch.manual_seed(seed)
    return Layer(dim, gain).double()


def _grads(module: nn.Module, x: torch.Tensor, loss) -> list[torch.Tensor]:
    params = [*module.parameters(), x]
    return list(torch.autograd.grad(loss(), params))


@pytest.mark.parametrize("solver", ["anderson", "broyden"])
def test_the_equilibrium_has_a_relative_residual_within_the_tolerance(solver):
    layer = _layer(16, gain=0.9)
    x = torch.randn(5, 16, dtype=D64)
    deq = DEQ(layer, solver=solver, tol=1e-7, max_iter=100)
    with torch.no_grad():
        z = deq(x)
    residual = relative_residual(layer(z, x), z)
    assert deq.result.converged and deq.result.residual <= 1e-7
    assert float(residual.detach().max()) <= 1e-7
    assert 1 < deq.result.iterations <= 100


def test_a_linear_layer_has_the_closed_form_equilibrium_and_gradients():
    A = torch.tensor([[0.4, 0.3, 0.0], [-0.2, 0.1, 0.3], [0.1, 0.0, 0.5]], dtype=D64)
    f = Linear(A)
    x = torch.randn(4, 3, dtype=D64, requires_grad=True)
    c = torch.tensor([1.0, -2.0, 0.5], dtype=D64)
    deq = DEQ(f, tol=1e-13, max_iter=60)
    z = deq(x)
    inv = torch.linalg.inv(torch.eye(3, dtype=D64) - A)
    torch.testing.assert_close(z, x.detach() @ inv.T, rtol=1e-11, atol=1e-11)
    (z @ c).sum().backward()
    # d/dx (c . z*) = (I - A)^-T c for each sample; d/dA = sum_b g z*_b^T with g = (I - A)^-T c
    g = inv.T @ c
    torch.testing.assert_close(x.grad, g.expand(4, 3), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(f.A.grad, torch.outer(g, z.detach().sum(0)), rtol=1e-10, atol=1e-10)
    assert deq.backward_result is not None and deq.backward_result.converged


def test_the_implicit_gradient_equals_central_finite_differences_in_float64():
    layer = _layer()
    x = torch.randn(3, 6, dtype=D64)
    target = torch.randn(3, 6, dtype=D64)
    deq = DEQ(layer, tol=1e-13, max_iter=100)

    def loss() -> torch.Tensor:
        return (deq(x) - target).square().sum()

    loss().backward()
    h = 1e-6
    for param, index in ((layer.W.weight, (1, 2)), (layer.U.weight, (4, 0)), (layer.U.bias, (3,))):
        with torch.no_grad():
            param[index] += h
            up = loss()
            param[index] -= 2 * h
            down = loss()
            param[index] += h
        fd = (up - down) / (2 * h)
        assert float(param.grad[index]) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)


def test_the_implicit_gradient_equals_a_long_unrolled_iteration():
    layer = _layer(8, seed=1, gain=0.8)
    x = torch.randn(4, 8, dtype=D64, requires_grad=True)
    target = torch.randn(4, 8, dtype=D64)
    deq = DEQ(layer, tol=1e-12, max_iter=100)
    implicit = _grads(layer, x, lambda: (deq(x) - target).square().sum())
    unrolled = _grads(layer, x, lambda: (deq.unroll(x, 200) - target).square().sum())
    for a, b in zip(implicit, unrolled):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_the_phantom_gradient_is_close_to_the_implicit_one():
    layer = _layer(8, seed=2)
    x = torch.randn(4, 8, dtype=D64, requires_grad=True)
    target = torch.randn(4, 8, dtype=D64)
    implicit = torch.cat(
        [g.flatten() for g in _grads(layer, x, lambda: (DEQ(layer, tol=1e-10)(x) - target).square().sum())]
    )
    phantom_deq = DEQ(layer, tol=1e-10, gradient="phantom", phantom_steps=20, phantom_damping=0.5)
    phantom = torch.cat(
        [g.flatten() for g in _grads(layer, x, lambda: (phantom_deq(x) - target).square().sum())]
    )
    cosine = torch.nn.functional.cosine_similarity(implicit, phantom, dim=0)
    assert cosine > 0.999
    assert (phantom - implicit).norm() / implicit.norm() < 0.05
    assert phantom_deq.backward_result is None  # no adjoint solve: backprop through the steps


def test_a_layer_without_a_contraction_reports_its_non_convergence():
    class Shift(nn.Module):  # z + x + 1: no fixed point
        def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return z + x + 1.0

    x = torch.zeros(2, 3, dtype=D64)
    with pytest.warns(FixedPointWarning, match="DEQ forward fixed point did not converge"):
        DEQ(Shift(), tol=1e-6, max_iter=10)(x)
    deq = DEQ(Shift(), tol=1e-6, max_iter=10, on_failure="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = deq(x)
    assert not deq.result.converged and deq.result.residual > 1e-6
    assert deq.result.iterations == 20 and deq.result.method == "anderson+damped"
    best = deq.result.z  # the output is one more evaluation f(z*, x) = z* + 1
    torch.testing.assert_close(z, best + 1.0)
    assert deq.result.residual == pytest.approx(float(relative_residual(best + 1.0, best).max()), rel=1e-6)
    with pytest.raises(FixedPointError, match="relative residual") as info:
        DEQ(Shift(), tol=1e-6, max_iter=10, on_failure="raise")(x)
    assert info.value.result.iterations == 20


def test_the_adjoint_solve_reports_its_own_status():
    layer = _layer(6, seed=3)
    x = torch.randn(2, 6, dtype=D64)
    deq = DEQ(
        layer,
        tol=1e-10,
        backward_solver=FixedPoint("broyden", tol=1e-30, max_iter=4, fallback=None, on_failure="raise"),
    )
    z = deq(x)
    with pytest.raises(FixedPointError, match="DEQ adjoint"):
        z.sum().backward()


def test_memory_held_after_forward_does_not_grow_with_the_forward_iterations():
    layer = _layer(32, seed=4, gain=0.99)
    x = torch.randn(16, 32, dtype=D64)

    def held(iterations: int) -> int:
        deq = DEQ(
            layer,
            solver=FixedPoint("damped", tol=1e-30, max_iter=iterations, fallback=None, on_failure="ignore"),
        )
        deq(x)  # warm-up: one-off allocations are not counted
        mem = nde.graph_memory(lambda: deq(x), lambda z: z.sum().backward())
        assert deq.result.iterations == iterations
        return mem.retained_bytes

    def unrolled(steps: int) -> int:
        deq = DEQ(layer)
        return nde.graph_memory(lambda: deq.unroll(x, steps)).retained_bytes

    assert held(40) == held(5) > 0
    assert unrolled(40) > 5 * unrolled(5)  # the measurement sees a growing graph


def test_the_jacobian_penalty_estimates_the_frobenius_norm_and_is_differentiable():
    A = torch.tensor([[0.4, 0.3], [-0.2, 0.1]], dtype=D64)
    f = Linear(A)
    torch.manual_seed(0)
    deq = DEQ(f, tol=1e-10, jacobian_probes=4000)
    deq(torch.randn(3, 2, dtype=D64))
    exact = float(A.square().sum()) / 2  # ||A||_F^2 per state element
    assert float(deq.jacobian_loss.detach()) == pytest.approx(exact, rel=0.05)
    (grad,) = torch.autograd.grad(deq.jacobian_loss, f.A)
    torch.testing.assert_close(grad, A, rtol=0.1, atol=0.02)  # d/dA ||A||_F^2 / 2 = A


def test_state_shape_and_inference_mode():
    torch.manual_seed(5)
    U = nn.Linear(3, 5).double()
    W = nn.Linear(5, 5, bias=False).double()
    deq = DEQ(lambda z, x: torch.tanh(W(z) * 0.5 + U(x)), state_shape=(5,), tol=1e-8)
    x = torch.randn(7, 3, dtype=D64)
    z = deq(x)
    assert z.shape == (7, 5) and z.requires_grad
    with torch.no_grad():
        z_eval = deq(x)
    assert not z_eval.requires_grad and deq.result.converged
    torch.testing.assert_close(z_eval, z.detach(), rtol=1e-7, atol=1e-7)


def test_unknown_options_are_errors_that_name_the_fix():
    layer = _layer()
    with pytest.raises(ValueError, match="Did you mean 'broyden'"):
        DEQ(layer, solver="broydn")
    with pytest.raises(ValueError, match="implicit, phantom"):
        DEQ(layer, gradient="unrolled")
    with pytest.raises(ValueError, match="set tol and max_iter on it"):
        DEQ(layer, solver=FixedPoint(), tol=1e-3)
    with pytest.raises(ValueError, match="on_failure"):
        DEQ(layer, on_failure="crash")
    with pytest.raises(TypeError):
        DEQ(layer, momentum=0.9)  # type: ignore[call-arg]
    for bad in ({"phantom_steps": 0}, {"phantom_damping": 0.0}, {"jacobian_probes": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DEQ(layer, **bad)
    x = torch.randn(2, 6, dtype=D64)
    with pytest.raises(ValueError, match="steps"):
        DEQ(layer).unroll(x, -1)
    with pytest.raises(ValueError, match=r"set state_shape="):
        DEQ(lambda z, x: torch.tanh(x[:, :4]))(x)  # returns 4 features for a 6-feature state


@pytest.mark.skipif(
    importlib.util.find_spec("torchdeq") is None, reason="torchdeq (the test extra's oracle) not installed"
)
@pytest.mark.parametrize(
    ("ours", "theirs", "tol"),
    # torchdeq 0.1.0's batched Anderson stalls near a 1e-6 relative residual on one sample here
    # (its Broyden reaches 1e-14), so it is compared at that level
    [("anderson", "broyden", 1e-8), ("broyden", "broyden", 1e-8), ("anderson", "anderson", 1e-4)],
)
def test_fixed_point_and_implicit_gradient_equal_torchdeqs(ours, theirs, tol):
    from torchdeq import get_deq

    layer = _layer(8, seed=6, gain=0.8)
    x = torch.randn(4, 8, dtype=D64, requires_grad=True)
    target = torch.randn(4, 8, dtype=D64)
    deq = DEQ(layer, solver=ours, tol=1e-12, max_iter=100)
    oracle = get_deq(
        f_solver=theirs, b_solver=theirs, f_max_iter=100, b_max_iter=100, f_tol=1e-12, b_tol=1e-12, ift=True
    )

    def oracle_z() -> torch.Tensor:
        return oracle(lambda z: layer(z, x), torch.zeros(4, 8, dtype=D64))[0][-1]

    torch.testing.assert_close(deq(x), oracle_z(), rtol=tol, atol=tol)
    ours_grads = _grads(layer, x, lambda: (deq(x) - target).square().sum())
    theirs_grads = _grads(layer, x, lambda: (oracle_z() - target).square().sum())
    for a, b in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_a_forward_pass_without_backward_frees_its_graph_at_once():
    import gc
    import weakref

    layer = _layer(6, seed=7)
    deq = DEQ(layer, tol=1e-8)
    x = torch.randn(3, 6, dtype=D64)
    gc.disable()
    try:
        out = deq(x)
        ref = weakref.ref(out.grad_fn)
        del out
        assert ref() is None  # no reference cycle keeps the graph (and its saved tensors) alive
    finally:
        gc.enable()
