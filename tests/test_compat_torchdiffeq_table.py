"""The broad torchdiffeq table (issue 13): torchdiffeq-style calls through the drop-in and
through torchdiffeq 0.2.5 itself (the oracle), as a cross product of generated cases.

The problem is ``y' = M y`` in three dimensions (``M`` a parameter of an ``nn.Module``), as a
tensor state of shape ``(3,)`` or a tuple of shapes ``(2,)`` and ``(1, 1)``; its closed form
``exp(M (t - t0)) y0`` (``torch.linalg.matrix_exp``, differentiable) gives the exact outputs and
the exact gradients with respect to ``y0``, ``t`` and ``M``.

Agreement rules (``bound`` below is ``10 * (atol + rtol * max|exact|)``):

- fixed-grid methods: outputs to 1e-10 relative in float64, 2e-5 in float32 (about 170 ulps:
  0.2.5's 11-step Adams–Bashforth amplifies float32 round-off to a few 1e-6); gradients with
  respect to ``y0`` and ``M`` likewise where both differentiate the same discrete solution.
- adaptive methods: within ``bound`` of the oracle, or closer to the exact answer than the
  oracle (the drop-in takes 0.2.5's steps, but its time gradients are more accurate: dopri5's
  ``t`` gradient in reverse time is 3e-8 from exact where 0.2.5's is 2.8e-7). Where 0.2.5
  itself misses the exact answer by more than ``bound`` (its ``dopri8`` and ``bosh3``
  interpolate outputs to a lower order; ``fehlberg2`` and ``adaptive_heun`` let the global error
  outgrow the local tolerance), the drop-in must instead be no further from the exact answer
  than ``max(bound, 2 x 0.2.5's error)``.
- methods 0.2.5 lacks (``tsit5``, the implicit fixed-grid ones): against the exact solution,
  within ``bound`` (adaptive) or ``2 h^p`` (fixed grid of step ``h``, order ``p``).
- fixed-grid time gradients: 0.2.5 differentiates its linear interpolation, whose slope is zero
  at a grid point (up to 25% off here), so the drop-in's are checked against the exact gradient,
  to first order in the step: relative error at most ``3 h``.
- fixed-grid ``odeint_adjoint`` with outputs between grid points: 0.2.5 solves each output
  interval backwards on a grid of its own and ignores the interpolation; the drop-in's adjoint
  differentiates the interpolated outputs it returned (its ``y0`` gradient is ``odeint``'s).
  There (and for every fixed-grid option with ``odeint_adjoint``) the drop-in's gradient must be
  within twice 0.2.5's own adjoint's distance from 0.2.5's ``odeint`` gradient.

Documented limitations are cases too: each asserts the documented error.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchdiffeq
from torchdiffeq._impl.odeint import SOLVERS

import torchnde as nde
from torchnde.compat import torchdiffeq as compat

F64, F32 = torch.float64, torch.float32
M0 = torch.tensor([[-0.3, 1.0, 0.2], [-1.0, -0.2, 0.1], [0.1, -0.2, -0.5]], dtype=F64)
Y0 = torch.tensor([1.0, 0.5, -0.3], dtype=F64)
T_OUT = torch.linspace(0.0, 1.2, 9, dtype=F64)  # output grid spacing 0.15

ADAPTIVE = ["dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "tsit5"]
FIXED_RK = ["euler", "midpoint", "heun2", "heun3", "rk4"]
ADAMS = ["explicit_adams", "implicit_adams", "fixed_adams"]
IMPLICIT = ["implicit_euler", "implicit_midpoint", "trapezoid", "radauIIA3", "radauIIA5", "gl4", "gl6", "sdirk2",
            "trbdf2"]  # fmt: skip
FIXED = FIXED_RK + ADAMS + IMPLICIT
METHODS = ADAPTIVE + FIXED + ["scipy_solver"]
# adaptive tolerances per dtype: the second-order pairs are slow in 0.2.5 below 1e-4
TOLERANCE = {
    (F64, "dopri5"): 1e-8, (F64, "dopri8"): 1e-8, (F64, "tsit5"): 1e-8, (F64, "bosh3"): 1e-6,
    (F64, "fehlberg2"): 1e-4, (F64, "adaptive_heun"): 1e-4,
}  # fmt: skip
FIXED_RTOL = {F64: 1e-10, F32: 2e-5}


class Linear(torch.nn.Module):
    """``y' = M y``, the state a tensor ``(3,)`` or a tuple of shapes ``(2,)`` and ``(1, 1)``."""

    def __init__(self, dtype: torch.dtype = F64) -> None:
        super().__init__()
        self.m = torch.nn.Parameter(M0.to(dtype))

    def forward(self, t: torch.Tensor, y: Any) -> Any:
        if isinstance(y, tuple):
            d = self.m @ torch.cat([y[0], y[1].reshape(-1)])
            return d[:2], d[2:].reshape(1, 1)
        return self.m @ y


def _split(y: torch.Tensor, tup: bool) -> Any:
    return (y[..., :2], y[..., 2:].reshape(*y.shape[:-1], 1, 1)) if tup else y


def _flat(ys: Any) -> torch.Tensor:
    return torch.cat([ys[0], ys[1].reshape(len(ys[1]), -1)], -1) if isinstance(ys, tuple) else ys


def _weights(n: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, n * 3, dtype=dtype).view(n, 3)


def _times(reverse: bool, dtype: torch.dtype, t: torch.Tensor = T_OUT) -> torch.Tensor:
    return (t.flip(0) if reverse else t).to(dtype).detach().clone()  # a leaf of its own


def exact(reverse: bool, t: torch.Tensor = T_OUT) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The closed form at the output times and the exact gradients of the table's loss with
    respect to ``(y0, t, M)`` (float64)."""
    y0, m = Y0.clone().requires_grad_(True), M0.clone().requires_grad_(True)
    t = _times(reverse, F64, t).requires_grad_(True)
    ys = torch.stack([torch.linalg.matrix_exp(m * (ti - t[0])) @ y0 for ti in t])
    return ys.detach(), torch.autograd.grad((ys * _weights(len(t), F64)).sum(), (y0, t, m))


def run(
    fn: Callable, dtype: torch.dtype, reverse: bool, tup: bool, t: torch.Tensor = T_OUT, grad: bool = True,
    quiet: bool = True, **kwargs: Any,
) -> tuple[torch.Tensor, tuple[Any, ...] | None, Linear]:  # fmt: skip
    """``fn(func, y0, t, **kwargs)`` on the table's problem: the outputs flattened to ``[T, 3]``
    and the gradients of ``sum(w * ys)`` with respect to ``(y0, t, M)`` (``None`` where there
    is none)."""
    func = Linear(dtype)
    y0 = Y0.to(dtype).clone().requires_grad_(grad)
    t = _times(reverse, dtype, t).requires_grad_(grad)
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")  # 0.2.5's Adams corrector warns when it stops unconverged
        ys = _flat(fn(func, _split(y0, tup), t, **kwargs))
        if not grad:
            return ys.detach(), None, func
        grads = torch.autograd.grad((ys * _weights(len(t), dtype)).sum(), (y0, t, func.m), allow_unused=True)
    return ys.detach(), grads, func


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def assert_relative(got: torch.Tensor, want: torch.Tensor, rtol: float, what: str) -> None:
    scale = float(want.double().abs().max())
    assert _err(got, want) <= rtol * scale, f"{what}: {_err(got, want) / scale:.2e} relative > {rtol:.0e}"


def assert_adaptive(
    got: torch.Tensor, want: torch.Tensor | None, ref: torch.Tensor, tol: float, what: str
) -> None:
    """Within ``bound`` of the oracle ``want``, or closer to the exact ``ref`` than the oracle;
    where the oracle itself misses ``ref`` by more than ``bound``, no further from ``ref`` than
    ``max(bound, 2 x`` the oracle's error``)``; without an oracle, within ``bound`` of ``ref``."""
    bound = 10 * tol * (1 + float(ref.abs().max()))
    if want is None:
        assert _err(got, ref) <= bound, f"{what}: {_err(got, ref):.2e} from exact > {bound:.1e}"
    elif _err(want, ref) <= bound and _err(got, ref) > _err(want, ref):
        assert _err(got, want) <= bound, f"{what}: {_err(got, want):.2e} from 0.2.5 > {bound:.1e}"
    else:
        limit = max(bound, 2 * _err(want, ref))
        assert _err(got, ref) <= limit, f"{what}: {_err(got, ref):.2e} from exact > {limit:.1e} (0.2.5 off)"


# --------------------------------------------------------------------------------------------
# 1. every method x dtype x direction x state structure x interface


@dataclasses.dataclass(frozen=True)
class Case:
    method: str
    dtype: torch.dtype
    reverse: bool
    tup: bool
    adjoint: bool

    @property
    def id(self) -> str:
        return "-".join([self.method, str(self.dtype)[6:], "reverse" if self.reverse else "forward",
                         "tuple" if self.tup else "tensor", "adjoint" if self.adjoint else "odeint"])  # fmt: skip


CASES = [
    Case(m, d, r, tup, a)
    for m in METHODS
    for d in (F64, F32)
    for r in (False, True)
    for tup in (False, True)
    for a in (False, True)
]


def test_the_table_covers_every_method_of_torchdiffeq_and_the_drop_in():
    assert set(SOLVERS) <= set(METHODS)
    assert set(compat._ADAPTIVE) | set(compat._FIXED) | {"scipy_solver"} == set(METHODS)


def _tol(case: Case) -> float:
    return TOLERANCE.get(
        (case.dtype, case.method), 1e-5 if case.method in ("dopri5", "dopri8", "tsit5") else 1e-4
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_method_agrees_with_torchdiffeq(case: Case):
    oracle = case.method in SOLVERS
    fns = (
        (torchdiffeq.odeint_adjoint, compat.odeint_adjoint)
        if case.adjoint
        else (torchdiffeq.odeint, compat.odeint)
    )
    adaptive = case.method in ADAPTIVE
    kwargs = {"method": case.method}
    if adaptive or case.method == "scipy_solver":
        kwargs.update(rtol=_tol(case), atol=_tol(case))
    args = (case.dtype, case.reverse, case.tup)
    want_ys, want_g = exact(case.reverse)
    if case.method == "scipy_solver":  # no gradients, as in 0.2.5; odeint_adjoint raises
        if case.adjoint:
            with pytest.raises(ValueError, match="no gradients"):
                run(fns[1], *args, **kwargs)
            return
        got, _, _ = run(fns[1], *args, grad=False, **kwargs)
        oracle_ys, _, _ = run(fns[0], *args, grad=False, **kwargs)
        assert_adaptive(got, oracle_ys, want_ys, _tol(case), "ys")
        return
    got, got_g, _ = run(fns[1], *args, **kwargs)
    oracle_ys, oracle_g = (run(fns[0], *args, **kwargs)[:2]) if oracle else (None, (None, None, None))
    names = ("y0 grad", "t grad", "M grad")
    if adaptive:
        assert_adaptive(got, oracle_ys, want_ys, _tol(case), "ys")
        for g, w, e, name in zip(got_g, oracle_g, want_g, names):
            assert_adaptive(g, w, e, _tol(case), name)
        return
    h = 0.15  # fixed grid: the output times
    if oracle:
        assert_relative(got, oracle_ys, FIXED_RTOL[case.dtype], "ys")
        for i in (0, 2):
            assert_relative(got_g[i], oracle_g[i], FIXED_RTOL[case.dtype], names[i])
    else:
        order = nde.solvers.resolve_solver(compat._FIXED[case.method]).order
        bound = 2 * h**order + (1e-5 if case.dtype == F32 else 1e-9)
        assert_relative(got, want_ys, bound, "ys")
        for i in (0, 2):
            assert_relative(got_g[i], want_g[i], bound, names[i])
    assert_relative(got_g[1], want_g[1], 3 * h, "t grad")  # first order in the step, see the docstring


# --------------------------------------------------------------------------------------------
# 2. options: float64 and float32 states, both directions, both state structures, both interfaces


def _max_norm(log: list) -> Callable:
    def norm(x: Any) -> torch.Tensor:
        parts = x if isinstance(x, tuple) else (x,)
        log.append(tuple(tuple(p.shape) for p in parts))
        return torch.stack([p.abs().max() for p in parts]).max()

    return norm


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    method: str
    options: dict[str, Any] | None = None
    rtol: Any = 1e-8
    atol: Any = 1e-8
    times: tuple[float, ...] | None = None  # default: T_OUT
    states: tuple[bool, ...] = (False, True)  # tuple state or not


OFF_GRID = (0.0, 0.35, 0.8, 1.2)  # between the grid points of step_size 0.1


def _squared_grid(func: Any, y0: Any, t: torch.Tensor) -> torch.Tensor:
    return t[0] + (t[-1] - t[0]) * torch.linspace(0, 1, 17, dtype=t.dtype) ** 2


OPTIONS = [
    Option("loose_tolerances", "dopri5", rtol=1e-4, atol=1e-6),
    Option(
        "tensor_tolerances",
        "dopri5",
        rtol=torch.tensor([1e-6, 1e-8, 1e-9]),
        atol=torch.tensor([1e-8, 1e-9, 1e-10]),
        states=(False,),
    ),
    Option("tuple_tolerances", "dopri5", rtol=(1e-6, 1e-9), atol=(1e-8, 1e-11), states=(True,)),
    Option("first_step", "dopri5", {"first_step": 0.05}),
    Option("max_num_steps", "dopri5", {"max_num_steps": 8}),  # per output interval, as in 0.2.5
    Option("step_t", "dopri5", {"step_t": torch.tensor([0.5, 0.9])}),
    Option("jump_t", "dopri5", {"jump_t": torch.tensor([0.5])}),
    Option("safety_ifactor_dfactor", "bosh3", {"safety": 0.8, "ifactor": 5.0, "dfactor": 0.3}, 1e-6, 1e-6),
    Option("norm", "dopri5", {"norm": "max"}),
    Option("dtype", "dopri8", {"dtype": F64}),
    *(
        Option(f"step_size_{m}", m, {"step_size": 0.1}, times=OFF_GRID)
        for m in ("rk4", "midpoint", "explicit_adams")
    ),
    *(
        Option(f"cubic_{m}", m, {"step_size": 0.1, "interp": "cubic"}, times=OFF_GRID)
        for m in ("heun3", "implicit_adams")
    ),
    Option("grid_constructor", "rk4", {"grid_constructor": _squared_grid}),
    Option("perturb", "euler", {"step_size": 0.05, "perturb": True}),
    Option("max_order", "implicit_adams", {"step_size": 0.05, "max_order": 3}),
    Option("max_iters", "implicit_adams", {"step_size": 0.05, "max_iters": 1}),
    Option(
        "scipy_rk45_max_step",
        "scipy_solver",
        {"solver": "RK45", "max_step": 0.1, "min_step": 0.0},
        1e-6,
        1e-8,
    ),
    Option("scipy_radau", "scipy_solver", {"solver": "Radau"}, 1e-6, 1e-8),
]
OPTION_CASES = [
    (o, d, r, tup, a)
    for o in OPTIONS
    for d in (F64, F32)
    for r in (False, True)
    for tup in o.states
    for a in (False, True)
]


def _option_id(case: tuple) -> str:
    o, d, r, tup, a = case
    return "-".join([o.name, str(d)[6:], "reverse" if r else "forward", "tuple" if tup else "tensor",
                     "adjoint" if a else "odeint"])  # fmt: skip


@pytest.mark.parametrize("case", OPTION_CASES, ids=_option_id)
def test_every_option_agrees_with_torchdiffeq(case):
    option, dtype, reverse, tup, adjoint = case
    t = T_OUT if option.times is None else torch.tensor(option.times, dtype=F64)
    fixed = option.method in FIXED
    fns = (
        (torchdiffeq.odeint_adjoint, compat.odeint_adjoint)
        if adjoint
        else (torchdiffeq.odeint, compat.odeint)
    )
    rtol, atol = option.rtol, option.atol
    if dtype == F32 and not fixed:  # float32 cannot reach 1e-8
        rtol, atol = (tuple(max(v, 1e-5) for v in tol) if isinstance(tol, tuple) else
                      (tol.clamp_min(1e-5) if isinstance(tol, torch.Tensor) else max(tol, 1e-5))
                      for tol in (rtol, atol))  # fmt: skip
    logs: list[list] = [[], []]

    def kwargs(i: int) -> dict[str, Any]:
        options = None if option.options is None else dict(option.options)
        if options and options.get("norm") == "max":
            options["norm"] = _max_norm(logs[i])
        return {"method": option.method, "options": options, "rtol": rtol, "atol": atol}

    args = (dtype, reverse, tup, t)
    want_ys, want_g = exact(reverse, t)
    if option.method == "scipy_solver":
        if adjoint:
            with pytest.raises(ValueError, match="no gradients"):
                run(fns[1], *args, **kwargs(1))
            return
        got, _, _ = run(fns[1], *args, grad=False, **kwargs(1))
        assert_adaptive(got, run(fns[0], *args, grad=False, **kwargs(0))[0], want_ys, 1e-6, "ys")
        return
    if adjoint and option.name in ("tensor_tolerances", "tuple_tolerances"):  # per state part: not inherited
        with pytest.raises(ValueError, match="not inherited by the adjoint solve"):
            run(fns[1], *args, **kwargs(1))
        got, got_g, _ = run(fns[1], *args, adjoint_rtol=1e-8, adjoint_atol=1e-8, **kwargs(1))
        want, oracle_g, _ = run(fns[0], *args, adjoint_rtol=1e-8, adjoint_atol=1e-8, **kwargs(0))
    else:
        got, got_g, _ = run(fns[1], *args, **kwargs(1))
        want, oracle_g, _ = run(fns[0], *args, **kwargs(0))
    names = ("y0 grad", "t grad", "M grad")
    if not fixed:
        tol = max(rtol) if isinstance(rtol, tuple) else float(torch.as_tensor(rtol).max())
        assert_adaptive(got, want, want_ys, tol, "ys")
        for g, w, e, name in zip(got_g, oracle_g, want_g, names):
            assert_adaptive(g, w, e, tol, name)
        if option.name == "norm":  # the norm sees the state's structure, as in 0.2.5
            assert logs[1] and set(logs[1]) == set(logs[0])
        return
    assert_relative(got, want, FIXED_RTOL[dtype], "ys")
    if option.name == "grid_constructor":
        h = float(_squared_grid(None, None, T_OUT).diff().max())
    else:
        h = option.options["step_size"]
    assert_relative(got_g[1], want_g[1], 3 * h, "t grad")  # first order in the step
    if not adjoint:
        for i in (0, 2):
            assert_relative(got_g[i], oracle_g[i], FIXED_RTOL[dtype], names[i])
        return
    # 0.2.5's adjoint solves each output interval backwards on a grid of its own (its own
    # grid_constructor's, or step_size's from the interval's end), from the forward value at the
    # interval's end, as the drop-in does: the same arithmetic (in float32 an implicit Adams
    # corrector's iterations carry the two augmented states' different round-off further)
    rtol = FIXED_RTOL[dtype] * (5 if dtype == F32 and option.method == "implicit_adams" else 1)
    for i in (0, 2):
        assert_relative(got_g[i], oracle_g[i], rtol, names[i])


# --------------------------------------------------------------------------------------------
# 3. odeint_adjoint's own arguments (dopri5 forwards, float64, both directions and structures)


def _adjoint_norm(parts: tuple) -> torch.Tensor:  # a seminorm by hand: t, y, adj_y only (tensor state)
    return torch.stack([p.abs().max() for p in parts[:3]]).max()


ADJOINT_ARGS = {
    "adjoint_tolerances": {"adjoint_rtol": 1e-6, "adjoint_atol": 1e-7},
    "adjoint_method_bosh3": {"adjoint_method": "bosh3", "adjoint_rtol": 1e-7, "adjoint_atol": 1e-7},
    "adjoint_method_rk4": {"adjoint_method": "rk4", "adjoint_options": {"step_size": 0.05}},
    "seminorm": {"adjoint_options": {"norm": "seminorm"}},
    "callable_norm": {"adjoint_options": {"norm": _adjoint_norm}},
    "adjoint_step_t_jump_t_first_step": {"adjoint_options": {"step_t": torch.tensor([0.5]),
                                                             "jump_t": torch.tensor([0.9]), "first_step": 0.01}},
    "adjoint_params_explicit": {"adjoint_params": "m"},
    "adjoint_params_empty": {"adjoint_params": ()},
}  # fmt: skip


# a callable norm with a tuple state gets (t, *y, *adj_y, ...): test_compat_torchdiffeq_adjoint.py
ADJOINT_CASES = [(n, r, tup) for n in ADJOINT_ARGS for r in (False, True) for tup in (False, True)
                 if not (n == "callable_norm" and tup)]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "reverse", "tup"),
    ADJOINT_CASES,
    ids=[
        f"{n}-{'reverse' if r else 'forward'}-{'tuple' if tup else 'tensor'}" for n, r, tup in ADJOINT_CASES
    ],
)
def test_every_adjoint_argument_agrees_with_torchdiffeq(name, reverse, tup):
    want_ys, want_g = exact(reverse)
    results = []
    for fn in (torchdiffeq.odeint_adjoint, compat.odeint_adjoint):
        func = Linear()
        extra = dict(ADJOINT_ARGS[name])
        if extra.get("adjoint_params") == "m":
            extra["adjoint_params"] = (func.m,)
        y0 = Y0.clone().requires_grad_(True)
        t = _times(reverse, F64).requires_grad_(True)
        ys = _flat(fn(func, _split(y0, tup), t, rtol=1e-9, atol=1e-9, **extra))
        loss = (ys * _weights(len(t), F64)).sum()
        results.append((ys.detach(), torch.autograd.grad(loss, (y0, t, func.m), allow_unused=True)))
    (want, oracle_g), (got, got_g) = results
    tol = 1e-9 if "adjoint_rtol" not in ADJOINT_ARGS[name] else ADJOINT_ARGS[name]["adjoint_rtol"]
    assert_adaptive(got, want, want_ys, 1e-9, "ys")
    for g, w, e, what in zip(got_g, oracle_g, want_g, ("y0 grad", "t grad", "M grad")):
        if name == "adjoint_params_empty" and what == "M grad":
            assert g is None and w is None  # no parameter is differentiated
        elif name == "adjoint_method_rk4":  # rk4 on the same grid: the discretisation of the adjoint
            assert_relative(g, w, 1e-6, what)
        else:
            assert_adaptive(g, w, e, tol, what)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"adjoint_rtol": torch.tensor([1e-6, 1e-7, 1e-8])}, ValueError, "one tolerance per part"),
        ({"adjoint_atol": (1e-6, 1e-7)}, ValueError, "one tolerance per part"),
        ({"adjoint_options": {"perturb": True}}, ValueError, "perturb is an option of the fixed-grid methods"),
        ({"adjoint_options": {"grid_constructor": _squared_grid}}, ValueError, "not supported for method 'dopri5'"),
        ({"method": "scipy_solver"}, ValueError, "no gradients"),
    ],
    ids=["wrong_length_adjoint_rtol", "wrong_length_adjoint_atol", "adaptive_perturb", "adaptive_grid_constructor",
         "scipy"],
)  # fmt: skip
def test_documented_adjoint_limitations_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        compat.odeint_adjoint(Linear(), Y0, T_OUT, **kwargs)


# --------------------------------------------------------------------------------------------
# 4. events: odeint(event_fn=...) with odeint and odeint_adjoint, and odeint_event


def _event(t: torch.Tensor, y: Any) -> torch.Tensor:  # y[0] falls through 0.2 (t = +1.68 or -1.04)
    return (y[0][0] if isinstance(y, tuple) else y[0]) - 0.2


def _exact_event_time(reverse: bool) -> float:
    lo, hi = (-1.2, 0.0) if reverse else (0.0, 2.0)
    for _ in range(60):  # bisection on the closed form
        mid = 0.5 * (lo + hi)
        value = float((torch.linalg.matrix_exp(M0 * mid) @ Y0)[0]) - 0.2
        inside = value > 0
        lo, hi = (lo, mid) if inside == reverse else (mid, hi)
    return 0.5 * (lo + hi)


EVENT_METHODS = {"dopri5": None, "bosh3": None, "dopri8": None, "rk4": {"step_size": 0.01}}


@pytest.mark.parametrize("adjoint", [False, True], ids=["odeint", "adjoint"])
@pytest.mark.parametrize("tup", [False, True], ids=["tensor", "tuple"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("method", list(EVENT_METHODS))
def test_event_fn_agrees_with_torchdiffeq(method, reverse, tup, adjoint):
    """Event times: adaptive methods within 10 x atol of 0.2.5 (its bisection stops at atol);
    fixed grids no further from the exact time than 0.2.5, whose root is on its interpolant."""
    results = []
    for fn in (
        (torchdiffeq.odeint_adjoint, compat.odeint_adjoint)
        if adjoint
        else (torchdiffeq.odeint, compat.odeint)
    ):
        func = Linear()
        y0 = Y0.clone().requires_grad_(True)
        t = torch.tensor([0.0, -1.0] if reverse else [0.0, 1.0], dtype=F64)
        event_t, ys = fn(func, _split(y0, tup), t, method=method, options=EVENT_METHODS[method],
                         rtol=1e-7 if method == "bosh3" else 1e-9, atol=1e-10, event_fn=_event)  # fmt: skip
        ys = _flat(ys)
        results.append((event_t, ys, torch.autograd.grad(ys[-1].square().sum(), (y0, func.m))))
    (want_t, want, want_g), (got_t, got, got_g) = results
    exact_t = _exact_event_time(reverse)
    assert got_t.shape == want_t.shape == ()
    if EVENT_METHODS[method] is None:
        assert abs(float(got_t - want_t)) <= 1e-9 + 10 * abs(float(want_t) - exact_t)
        # the states at the two event times, which differ by up to 0.2.5's bisection tolerance and
        # its lower-order interpolation (bosh3, dopri8): within 10 x 1e-7 (bosh3, solved to 1e-7: 1e-5)
        assert_adaptive(got, want, want, 1e-5 if method == "bosh3" else 1e-7, "ys")
        for g, w in zip(got_g, want_g):  # at the event time, which carries no gradient
            assert_adaptive(g, w, w, 1e-4 if method == "bosh3" else 1e-6, "grad")
    else:
        assert abs(float(got_t) - exact_t) <= max(abs(float(want_t) - exact_t), 1e-9)
        assert_relative(got[0], want[0], 1e-12, "y0")
        assert_relative(got[-1], want[-1], 1e-4, "y at the event")  # the two event times' distance


@pytest.mark.parametrize("adjoint", [False, True], ids=["odeint", "adjoint"])
@pytest.mark.parametrize("tup", [False, True], ids=["tensor", "tuple"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "dopri8", "tsit5"])
def test_odeint_event_agrees_with_torchdiffeq(method, reverse, tup, adjoint):
    """The event time and its gradient with respect to y0, t0 and M (implicit function theorem),
    through odeint and through odeint_adjoint (``odeint_interface``)."""
    tol = 1e-7 if method == "bosh3" else 1e-10  # 0.2.5's bosh3 is slow below
    results = []
    for lib in (torchdiffeq, compat):
        func = Linear()
        y0 = Y0.clone().requires_grad_(True)
        t0 = torch.tensor(0.0, dtype=F64, requires_grad=True)
        oracle_method = "dopri5" if method == "tsit5" and lib is torchdiffeq else method  # 0.2.5 lacks it
        interface = lib.odeint_adjoint if adjoint else lib.odeint
        event_t, ys = lib.odeint_event(func, _split(y0, tup), t0, event_fn=_event, reverse_time=reverse,
                                       method=oracle_method, rtol=tol, atol=tol / 100,
                                       odeint_interface=interface)  # fmt: skip
        results.append((event_t, _flat(ys), torch.autograd.grad(event_t, (y0, t0, func.m))))
    (want_t, want, want_g), (got_t, got, got_g) = results
    exact_t = _exact_event_time(reverse)
    # dopri8's event is found on its interpolants: the drop-in's (order 5) is within 4e-9 here,
    # 0.2.5's (a quartic through a mid-step value) within 8e-8
    assert abs(float(got_t) - exact_t) < max(
        10 * tol, abs(float(want_t) - exact_t) if method == "dopri8" else 0
    )
    assert abs(float(got_t - want_t)) < 1000 * tol  # 0.2.5's bosh3 and dopri8 interpolate to a lower order
    assert_relative(got, want, 1e-4 if method == "bosh3" else 1e-6, "ys")
    for g, w in zip(got_g, want_g):  # 0.2.5's bosh3 and dopri8 states at its event are 1e-7 off
        assert_relative(
            g, w, {"dopri5": 1e-6, "tsit5": 1e-6, "dopri8": 1e-3}.get(method, 1e-2), "event time grad"
        )


@pytest.mark.parametrize("adjoint", [False, True], ids=["odeint", "adjoint"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("method", ["rk4", "midpoint"])
def test_odeint_event_with_a_fixed_grid_agrees_with_torchdiffeq(method, reverse, adjoint):
    """Fixed-grid event mode: 0.2.5 roots its linear interpolant between grid points, the
    drop-in its dense output; both carry the method's global error (midpoint: 2e-5 here), so the
    drop-in's event time is within twice 0.2.5's distance from the exact one, and the event
    time's gradient agrees to the two event times' distance."""
    results = []
    for lib in (torchdiffeq, compat):
        func = Linear()
        y0 = Y0.clone().requires_grad_(True)
        interface = lib.odeint_adjoint if adjoint else lib.odeint
        event_t, _ = lib.odeint_event(func, y0, torch.tensor(0.0, dtype=F64), event_fn=_event, reverse_time=reverse,
                                      method=method, options={"step_size": 0.01}, odeint_interface=interface)  # fmt: skip
        results.append((event_t.detach(), torch.autograd.grad(event_t, (y0, func.m))))
    (want_t, want_g), (got_t, got_g) = results
    exact_t = _exact_event_time(reverse)
    assert abs(float(got_t) - exact_t) <= 2 * max(abs(float(want_t) - exact_t), 1e-9)
    for g, w in zip(got_g, want_g):
        assert_relative(g, w, 1e-3, "event time grad")


# --------------------------------------------------------------------------------------------
# 5. callbacks: called the same number of times as in 0.2.5


class Counted(Linear):
    """``Linear`` with every torchdiffeq callback, counting its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}
        for name in ("callback_step", "callback_accept_step", "callback_reject_step"):
            for suffix in ("", "_adjoint"):
                setattr(self, name + suffix, self._counter(name + suffix))

    def _counter(self, name: str) -> Callable:
        def count(t0: torch.Tensor, y0: Any, dt: torch.Tensor) -> None:
            self.calls[name] = self.calls.get(name, 0) + 1

        return count


# method: (options, rtol = atol); 0.2.5's second-order pairs are slow below 1e-5
CALLBACK_METHODS = {"rk4": ({"step_size": 0.05}, 1e-8), "euler": (None, 1e-8), "midpoint": ({"step_size": 0.1}, 1e-8),
                    "explicit_adams": ({"step_size": 0.05}, 1e-8), "dopri5": ({"first_step": 0.5}, 1e-8),
                    "dopri5-hairer": (None, 1e-8), "bosh3": (None, 1e-8), "fehlberg2": (None, 1e-5),
                    "adaptive_heun": (None, 1e-5), "dopri8": (None, 1e-10)}  # fmt: skip


@pytest.mark.parametrize("adjoint", [False, True], ids=["odeint", "adjoint"])
@pytest.mark.parametrize("tup", [False, True], ids=["tensor", "tuple"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", list(CALLBACK_METHODS))
def test_callbacks_are_called_as_often_as_in_torchdiffeq(case, reverse, tup, adjoint):
    """Adaptive methods: the drop-in takes 0.2.5's steps (its step-size rule, its error scale,
    its reuse of the last stage, its step past the final time, and in the adjoint's backward
    pass a fresh start at each output interval under its norm), so every callback, forward and
    ``_adjoint``, is called exactly as often as in 0.2.5, rejections included. Fixed grids: the
    same number of calls in the forward solve."""
    method = case.split("-")[0]
    options, tol = CALLBACK_METHODS[case]
    counts = []
    for fn in (
        (torchdiffeq.odeint_adjoint, compat.odeint_adjoint)
        if adjoint
        else (torchdiffeq.odeint, compat.odeint)
    ):
        func = Counted()
        y0 = Y0.clone().requires_grad_(True)
        t = _times(reverse, F64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fixed grids warn of the accept/reject callbacks
            ys = _flat(fn(func, _split(y0, tup), t, method=method, options=options, rtol=tol, atol=tol))
            ys.square().sum().backward()
        counts.append(func.calls)
    want, got = counts
    forward = ("callback_step", "callback_accept_step", "callback_reject_step")
    if method in ADAPTIVE:
        assert got == want
        assert got["callback_step"] == got["callback_accept_step"] + got.get("callback_reject_step", 0)
        return
    assert {k: got[k] for k in got if k in forward} == {k: want[k] for k in want if k in forward}
    assert got["callback_step"] > 0
    if adjoint:  # both build a grid per output interval from its end (a short step where
        # step_size does not divide it): the same steps
        assert got["callback_step_adjoint"] == want["callback_step_adjoint"] > 0


class Forced(Counted):
    """``y' = cos(3 t) M y``: explicitly time-dependent, so 0.2.5's time channel ``tau`` (``tau' =
    -adj_y . df/dt``) moves and its error steers the adjoint's step size. Logs the ``t`` entry of
    the augmented state the adjoint callbacks get."""

    def __init__(self) -> None:
        super().__init__()
        self.taus: list[float] = []
        self.callback_step_adjoint = self._logging(self.callback_step_adjoint)

    def _logging(self, count: Callable) -> Callable:
        def log(t0: torch.Tensor, y0: Any, dt: torch.Tensor) -> None:
            self.taus.append(float(y0[0]))
            count(t0, y0, dt)

        return log

    def forward(self, t: torch.Tensor, y: Any) -> Any:
        out = super().forward(t, y)
        return tuple(o * torch.cos(3 * t) for o in out) if isinstance(out, tuple) else out * torch.cos(3 * t)


@pytest.mark.parametrize("t_grad", [False, True], ids=["t", "t-grad"])
@pytest.mark.parametrize("tup", [False, True], ids=["tensor", "tuple"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_adjoint_of_a_time_dependent_field_steps_as_torchdiffeq(method, reverse, tup, t_grad):
    """With ``f`` depending on ``t``, 0.2.5's adjoint norm includes its time channel, which starts
    at zero and, when ``t`` requires grad, takes ``-dL/dt_i`` at each output time: the drop-in
    integrates it too (``Adjoint(time_channel=True)``), so the adjoint callbacks are called as
    often (without it: 36 steps against 0.2.5's 40 for dopri5 forwards) and see the same ``t``
    entry (to 1e-6; bosh3 1e-4, where 0.2.5's forward outputs, the adjoint's restarts, are
    interpolated to a lower order)."""
    results = []
    for lib in (torchdiffeq, compat):
        func = Forced()
        y0, t = Y0.clone().requires_grad_(True), _times(reverse, F64).requires_grad_(t_grad)
        ys = _flat(lib.odeint_adjoint(func, _split(y0, tup), t, method=method, rtol=1e-8, atol=1e-8))
        (ys * _weights(len(t), F64)).sum().backward()
        results.append((func.calls, func.taus))
    (want, want_taus), (got, got_taus) = results
    assert got == want
    assert max(abs(g - w) for g, w in zip(got_taus, want_taus)) < (1e-6 if method == "dopri5" else 1e-4)
    assert any(abs(w) > 0.05 for w in want_taus)  # the channel moves


def test_max_num_steps_bounds_each_output_interval_as_in_torchdiffeq():
    """0.2.5 counts the steps of each output interval afresh: at 1e-10, 8 are enough per
    interval of 0.15 here (the whole solve takes many more), and 4 are not, in both."""
    kwargs = {"rtol": 1e-10, "atol": 1e-10}
    for fn in (torchdiffeq.odeint, compat.odeint):
        assert fn(Linear(), Y0, T_OUT, options={"max_num_steps": 8}, **kwargs).shape == (9, 3)
    with pytest.raises(AssertionError, match="max_num_steps exceeded"):
        torchdiffeq.odeint(Linear(), Y0, T_OUT, options={"max_num_steps": 4}, **kwargs)
    with pytest.raises(
        RuntimeError, match=r"maximum number of steps \(max_num_steps=4\) was reached between t\["
    ):
        compat.odeint(Linear(), Y0, T_OUT, options={"max_num_steps": 4}, **kwargs)


def test_odeint_event_honours_its_options_and_callbacks_as_torchdiffeq():
    """odeint_event's options and func's callbacks reach the solve, as in 0.2.5 (it is odeint in
    event mode there): a norm is called on the state's structure, callbacks once per step."""
    results = []
    for fn in (torchdiffeq.odeint_event, compat.odeint_event):
        func, log = Counted(), []
        options = {"norm": _max_norm(log), "jump_t": torch.tensor([0.5]), "safety": 0.8}
        event_t, _ = fn(func, _split(Y0, True), torch.tensor(0.0, dtype=F64), event_fn=_event, rtol=1e-9,
                        atol=1e-11, options=options)  # fmt: skip
        results.append((event_t, set(log), func.calls))
    (want_t, want_shapes, want_calls), (got_t, got_shapes, got_calls) = results
    assert abs(float(got_t - want_t)) < 1e-8
    assert got_shapes == want_shapes == {((2,), (1, 1))}
    assert got_calls["callback_step"] == got_calls["callback_accept_step"] + got_calls.get(
        "callback_reject_step", 0
    )
    assert abs(got_calls["callback_step"] - want_calls["callback_step"]) <= 0.15 * want_calls["callback_step"]
