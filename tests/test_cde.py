"""The CDE term ``f(t, z) @ dX/dt`` through ``solve``: against the ODE it reduces to, landing on
the control's knots, per-sample solves, and gradients for every strategy (float64 gradcheck)."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde

F64 = torch.float64
T = torch.tensor([0.0, 0.3, 0.5, 1.2, 1.5, 2.0], dtype=F64)


@pytest.fixture(autouse=True)
def _seeded():
    """The same random draws whatever ran before (xdist orders tests differently)."""
    torch.manual_seed(0)


def _field(w: torch.Tensor, channels: int):
    def f(t, z):
        return torch.tanh(z @ w).view(*z.shape, channels)

    return f


@pytest.mark.parametrize("cls", [nde.LinearPath, nde.HermitePath, nde.CubicSplinePath, nde.RectilinearPath])
@pytest.mark.parametrize("per_sample", [False, True])
def test_a_cde_driven_by_time_itself_is_the_ode(cls, per_sample):
    w = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(0)) / 2
    x = T.view(1, -1, 1).expand(4, -1, 1)  # X(t) = t, one channel
    z0 = torch.randn(4, 3, dtype=F64)
    term = nde.CDETerm(_field(w, 1), cls(x, T))
    cde = nde.solve(term, z0, T, rtol=1e-10, atol=1e-12, per_sample=per_sample)
    ode = nde.solve(lambda t, z: torch.tanh(z @ w), z0, T, rtol=1e-10, atol=1e-12)
    assert torch.allclose(cde.ys, ode.ys, atol=1e-8)


def test_the_solve_lands_on_every_kink_of_a_linear_control():
    x = torch.randn(2, 6, 2, dtype=F64)
    term = nde.CDETerm(_field(torch.randn(3, 6, dtype=F64), 2), nde.LinearPath(x, T))
    sol = nde.solve(term, torch.zeros(2, 3, dtype=F64), T[[0, -1]], solver="rk4", dt=1.0, save_steps=True)
    assert set(T[1:].tolist()) <= {round(s, 12) for s in sol.step_ts.tolist()}
    assert sol.stats.steps == 5  # one step per piece, none straddling a kink


@pytest.mark.parametrize("solver", ["heun", "rk4", "dopri5"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_a_solve_that_ends_on_an_interior_knot_equals_the_solve_on_the_path_cut_there(solver, per_sample):
    # the last step's end stage must read the piece before the knot, not the one after it
    x = torch.randn(2, 6, 2, dtype=F64)
    w = torch.randn(3, 6, dtype=F64)
    z0 = torch.randn(2, 3, dtype=F64)
    options = {"rtol": 1e-8, "atol": 1e-10} if solver == "dopri5" else {"dt": 0.25}
    end = T[[0, 3]]  # t = 1.2, an interior knot of the whole path and the last knot of the cut one
    ys = [
        nde.solve(
            nde.CDETerm(_field(w, 2), path), z0, end, solver=solver, per_sample=per_sample, **options
        ).ys[-1]
        for path in (nde.LinearPath(x, T), nde.LinearPath(x[:, :4], T[:4]))
    ]
    assert torch.allclose(ys[0], ys[1], rtol=0, atol=1e-12)


def test_a_linear_control_is_integrated_exactly_by_a_first_order_method_between_knots():
    # dz = dX with a piecewise linear X: z(t) = z0 + X(t) - X(t0), whatever the solver.
    x = torch.randn(1, 6, 2, dtype=F64)
    term = nde.CDETerm(
        lambda t, z: torch.ones(*z.shape, 2, dtype=F64) * torch.eye(2, dtype=F64), nde.LinearPath(x, T)
    )
    sol = nde.solve(term, torch.zeros(1, 2, dtype=F64), T, solver="euler", dt=10.0)
    assert torch.allclose(sol.ys[:, 0], x[0] - x[0, 0], atol=1e-12)


def test_per_sample_cde_solve_equals_solving_each_sample_alone():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, 2, dtype=F64, generator=g)
    w = torch.randn(2, 4, dtype=F64, generator=g)
    z0 = torch.randn(3, 2, dtype=F64, generator=g)
    t_eval = torch.stack([T[[0, 2, 4]], T[[1, 3, 5]], T[[0, 3, 5]]])  # its own span per sample
    batched = nde.solve(
        nde.CDETerm(_field(w, 2), nde.HermitePath(x, T)), z0, t_eval, per_sample=True, rtol=1e-9
    )
    for b in range(3):
        alone = nde.solve(
            nde.CDETerm(_field(w, 2), nde.HermitePath(x[b : b + 1], T)), z0[b : b + 1], t_eval[b], rtol=1e-9
        )
        assert torch.allclose(batched.ys[:, b], alone.ys[:, 0], atol=1e-7)


def _cde(x, z0, w, cls, gradient, solver, per_sample, **options):
    term = nde.CDETerm(_field(w, 2), cls(x, T))
    return nde.solve(
        term, z0, T[[0, 2, -1]], solver=solver, gradient=gradient, per_sample=per_sample, **options
    ).ys


STRATEGIES = [
    ("backprop", "rk4", {"dt": 0.1}),
    ("checkpoint", "rk4", {"dt": 0.1}),
    ("reversible", "reversible_heun", {"dt": 0.1}),
    (nde.Adjoint(), "rk4", {"dt": 0.02}),  # the continuous adjoint: O(dt**4) from the exact gradient
]


@pytest.mark.parametrize("cls", [nde.LinearPath, nde.CubicSplinePath])
@pytest.mark.parametrize(
    ("gradient", "solver", "options"), STRATEGIES, ids=["backprop", "checkpoint", "reversible", "adjoint"]
)
def test_gradients_reach_the_data_z0_and_the_parameters_for_every_strategy(cls, gradient, solver, options):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 6, 2, dtype=F64, generator=g, requires_grad=True)
    z0 = torch.randn(1, 2, dtype=F64, generator=g, requires_grad=True)
    w = (torch.randn(2, 4, dtype=F64, generator=g) / 2).requires_grad_()
    exact = not isinstance(gradient, nde.Adjoint)
    tol = {} if exact else {"atol": 1e-4, "rtol": 1e-3}
    assert torch.autograd.gradcheck(
        lambda x, z0, w: _cde(x, z0, w, cls, gradient, solver, False, **options), (x, z0, w), **tol
    )


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint", "adjoint"])
def test_per_sample_gradients_agree_with_the_global_solve(gradient):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 2, dtype=F64, generator=g, requires_grad=True)
    z0 = torch.randn(2, 2, dtype=F64, generator=g, requires_grad=True)
    w = (torch.randn(2, 4, dtype=F64, generator=g) / 2).requires_grad_()
    grads = []
    for per_sample in (False, True):
        ys = _cde(x, z0, w, nde.HermitePath, gradient, "tsit5", per_sample, rtol=1e-10, atol=1e-12)
        grads.append(torch.autograd.grad(ys.square().sum(), (x, z0, w)))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_adaptive_adjoint_gradients_agree_with_backprop_through_the_kinks():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 6, 2, dtype=F64, generator=g, requires_grad=True)
    z0 = torch.randn(2, 2, dtype=F64, generator=g, requires_grad=True)
    w = (torch.randn(2, 4, dtype=F64, generator=g) / 2).requires_grad_()
    grads = []
    for gradient in ("backprop", "adjoint"):
        ys = _cde(x, z0, w, nde.LinearPath, gradient, "tsit5", False, rtol=1e-10, atol=1e-12)
        grads.append(torch.autograd.grad(ys.square().sum(), (x, z0, w)))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_a_module_vector_field_trains_with_a_state_of_any_shape():
    x = torch.randn(3, 6, 2)
    net = torch.nn.Linear(4, 4 * 2)
    term = nde.CDETerm(lambda t, z: net(z.flatten(1)).view(*z.shape, 2), nde.CubicSplinePath(x, T.float()))
    ys = nde.solve(term, torch.zeros(3, 2, 2), T.float()[[0, -1]], solver="rk4", dt=0.25).ys
    ys.square().sum().backward()
    assert ys.shape == (2, 3, 2, 2) and net.weight.grad is not None and net.weight.grad.abs().sum() > 0


def test_a_vector_field_of_the_wrong_shape_is_rejected_with_the_shape_it_needs():
    term = nde.CDETerm(lambda t, z: z, nde.LinearPath(torch.zeros(2, 4, 3)))
    with pytest.raises(ValueError, match=r"\[\*z.shape, channels\] = \[2, 5, 3\]"):
        nde.solve(term, torch.zeros(2, 5), torch.tensor([0.0, 3.0]))


def test_a_cde_term_needs_a_path():
    with pytest.raises(TypeError, match="CubicSplinePath"):
        nde.CDETerm(lambda t, z: z, torch.zeros(2, 4, 3))


def test_symplectic_solvers_do_not_accept_a_cde_term():
    term = nde.CDETerm(lambda t, z: z.unsqueeze(-1), nde.LinearPath(torch.zeros(4, 1)))
    with pytest.raises(ValueError, match="does not accept an CDE term"):
        nde.solve(term, torch.zeros(1), torch.tensor([0.0, 3.0]), solver="leapfrog", dt=0.1)


def test_the_controllers_own_stops_are_kept_beside_the_knots():
    x = torch.randn(1, 6, 1, dtype=F64)
    term = nde.CDETerm(lambda t, z: z.unsqueeze(-1), nde.LinearPath(x, T))
    ctrl = nde.ConstantStep(10.0, step_ts=[0.9])
    sol = nde.solve(
        term, torch.ones(1, 1, dtype=F64), T[[0, -1]], solver="rk4", controller=ctrl, save_steps=True
    )
    assert 0.9 in [round(s, 12) for s in sol.step_ts.tolist()] and sol.stats.steps == 6


def test_an_adjoint_solved_backwards_from_an_output_on_a_kink_starts_from_the_right_piece():
    # outputs at knots: each backward interval starts on a kink of the control. Starting on the
    # wrong piece costs an O(dt) error (about 1e-2 relative); the continuous adjoint's own error
    # at dt = 0.01 is about 1e-6 relative.
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 6, 2, dtype=F64, generator=g).requires_grad_(True)
    w = torch.randn(2, 4, dtype=F64, generator=g).requires_grad_(True)
    z0 = torch.randn(1, 2, dtype=F64, generator=g)
    grads = []
    for gradient in ("backprop", "adjoint"):
        ys = nde.solve(
            nde.CDETerm(_field(w, 2), nde.LinearPath(x, T)), z0, T, solver="rk4", dt=0.01, gradient=gradient
        ).ys
        grads.append(torch.autograd.grad(ys.sum(), (x, w)))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=0, atol=1e-5 * float(b.abs().max()))


def test_land_on_knots_makes_an_adaptive_spline_solve_step_onto_every_knot():
    g = torch.Generator().manual_seed(7)
    t = torch.linspace(0, 6, 13, dtype=F64)
    x = torch.randn(3, 13, 2, dtype=F64, generator=g).cumsum(1)
    w = torch.randn(4, 8, dtype=F64, generator=g)
    z0 = torch.randn(3, 4, dtype=F64, generator=g)
    path = nde.CubicSplinePath(x, t)
    assert nde.CDETerm(_field(w, 2), path).step_ts is None  # the spline itself needs no stops
    sols = [
        nde.solve(nde.CDETerm(_field(w, 2), path, land_on_knots=knots), z0, t[[0, -1]], solver="dopri5",
                  rtol=1e-9, atol=1e-11, save_steps=True)
        for knots in (False, True)
    ]  # fmt: skip
    steps = [round(s, 12) for s in sols[1].step_ts.tolist()]
    assert all(round(k, 12) in steps for k in t[1:-1].tolist())
    assert torch.allclose(sols[0].ys[-1], sols[1].ys[-1], rtol=1e-6, atol=1e-8)


def test_land_on_knots_keeps_a_linear_paths_knots_as_jumps():
    path = nde.LinearPath(torch.randn(2, 5, 1, dtype=F64), T[:5])
    term = nde.CDETerm(lambda t, z: z.unsqueeze(-1), path, land_on_knots=True)
    assert term.step_ts is None and term.jump_ts.tolist() == T[1:4].tolist()


def test_land_on_knots_must_be_a_bool():
    with pytest.raises(TypeError, match="land_on_knots must be True or False"):
        nde.CDETerm(lambda t, z: z.unsqueeze(-1), nde.LinearPath(torch.zeros(4, 1)), land_on_knots="yes")


def test_the_vector_field_of_a_global_cde_solve_sees_a_tensor_time():
    # the loop hands the lowered term its float time; f still gets a 0-d tensor of the path's dtype
    seen = []

    def f(t, z):
        seen.append(t)
        return torch.tanh(z).unsqueeze(-1).expand(*z.shape, 1)

    path = nde.CubicSplinePath(torch.randn(2, 6, 1, dtype=F64), T)
    nde.solve(nde.CDETerm(f, path), torch.ones(2, 3, dtype=F64), T[[0, -1]], solver="rk4", dt=0.25)
    assert all(isinstance(t, torch.Tensor) and t.ndim == 0 and t.dtype == F64 for t in seen)
    assert sorted({round(float(t), 12) for t in seen})[:3] == [0.0, 0.125, 0.25]
