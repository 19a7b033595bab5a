"""torchnde.compat.torchsde against torchsde 0.2.6 (the oracle): the same results on the same
Brownian increments for every fixed-step method, noise type and calculus torchsde supports; the
same signatures, defaults and errors; its Brownian objects usable both ways; the SDE's optional
methods (``f_and_g``, ``g_prod``, ``names``) and the extra solver state."""

from __future__ import annotations

import inspect
import re
import warnings

import numpy as np
import pytest
import torch
import torchsde as oracle

import torchnde as nde
import torchnde.compat.torchsde as torchsde

from .sde_helpers import SmallSDE as TorchsdeStyleSDE

DTYPE = torch.float64
BATCH, D = 6, 2
M = {"diagonal": D, "scalar": 1, "additive": 3, "general": 3}
TS = [0.0, 0.1, 0.45, 1.0]
DT = 2**-4  # not on the step grid: outputs are interpolated between steps


SDE = TorchsdeStyleSDE


def y0() -> torch.Tensor:
    return torch.linspace(-0.5, 0.8, BATCH * D, dtype=DTYPE).reshape(BATCH, D)


def interval(noise: str, entropy: int = 3) -> torchsde.BrownianInterval:
    return torchsde.BrownianInterval(0.0, 1.0, size=(BATCH, M[noise]), dtype=DTYPE, entropy=entropy,
                                     levy_area_approximation="space-time")  # fmt: skip


_TYPES = {
    "euler": (("ito",), ("diagonal", "scalar", "additive", "general")),
    "milstein": (("ito", "stratonovich"), ("diagonal", "scalar", "additive")),
    "srk": (("ito",), ("diagonal", "scalar", "additive")),
    "midpoint": (("stratonovich",), ("diagonal", "scalar", "additive", "general")),
    "heun": (("stratonovich",), ("diagonal", "scalar", "additive", "general")),
    "euler_heun": (("stratonovich",), ("diagonal", "scalar", "additive", "general")),
    "reversible_heun": (("stratonovich",), ("diagonal", "scalar", "additive", "general")),
}
CASES = [
    (method, noise, calculus, options)
    for method, (calculi, noises) in _TYPES.items()
    for calculus in calculi
    for noise in noises
    for options in ([{}, {"grad_free": True}] if method == "milstein" else [{}])
]


@pytest.mark.parametrize(("method", "noise", "calculus", "options"), CASES)
def test_every_fixed_step_method_agrees_with_torchsde_on_the_same_increments(
    method, noise, calculus, options
):
    sde, bm = SDE(noise, calculus), interval(noise)
    with torch.no_grad():
        ours = torchsde.sdeint(sde, y0(), TS, bm=bm, method=method, dt=0.03, options=dict(options))
        want = oracle.sdeint(sde, y0(), TS, bm=bm, method=method, dt=0.03, options=dict(options))
    assert ours.shape == (len(TS), BATCH, D)
    assert torch.allclose(ours, want, rtol=0, atol=1e-10)


def test_a_torchsde_brownian_interval_drives_the_drop_in_on_the_same_path():
    sde = SDE("diagonal", "ito")
    for method in ("srk", "milstein", "euler"):  # each fresh with the same entropy, queried alike
        fresh = [oracle.BrownianInterval(0.0, 1.0, size=(BATCH, D), dtype=DTYPE, entropy=5,
                                         levy_area_approximation="space-time") for _ in range(2)]  # fmt: skip
        with torch.no_grad():
            ours = torchsde.sdeint(sde, y0(), TS, bm=fresh[0], method=method, dt=2**-6)
            want = oracle.sdeint(sde, y0(), TS, bm=fresh[1], method=method, dt=2**-6)
        assert torch.allclose(ours, want, rtol=0, atol=1e-10)


def test_gradients_by_backprop_agree_with_torchsde():
    sde, bm = SDE("general", "stratonovich"), interval("general")
    start = y0().requires_grad_(True)
    grads = []
    for sdeint in (torchsde.sdeint, oracle.sdeint):
        ys = sdeint(sde, start, TS, bm=bm, method="reversible_heun", dt=0.05)
        grads.append(torch.autograd.grad(ys.pow(2).sum(), (start, sde.a, sde.b)))
    for ours, want in zip(*grads):
        assert torch.allclose(ours, want, rtol=1e-10, atol=1e-12)


class FandG(torch.nn.Module):
    """The SDE through ``f_and_g`` only, counting calls."""

    def __init__(self, sde: SDE):
        super().__init__()
        self.sde, self.noise_type, self.sde_type, self.calls = sde, sde.noise_type, sde.sde_type, 0

    def f_and_g(self, t, y):
        self.calls += 1
        return self.sde.f(t, y), self.sde.g(t, y)


class Products(torch.nn.Module):
    """The SDE through ``f`` and the diffusion-vector product ``g_prod`` only."""

    def __init__(self, sde: SDE):
        super().__init__()
        self.sde, self.noise_type, self.sde_type = sde, sde.noise_type, sde.sde_type

    def f(self, t, y):
        return self.sde.f(t, y)

    def g_prod(self, t, y, v):
        g = self.sde.g(t, y)
        return g * v if self.noise_type == "diagonal" else (g @ v.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize(("noise", "method"), [("general", "reversible_heun"), ("diagonal", "milstein"),
                                               ("scalar", "srk"), ("additive", "euler")])  # fmt: skip
def test_f_and_g_and_g_prod_only_sdes_give_the_same_solution(noise, method):
    calculus = "stratonovich" if method == "reversible_heun" else "ito"
    sde = SDE(noise, calculus)
    with torch.no_grad():
        want = torchsde.sdeint(sde, y0(), TS, bm=interval(noise), method=method, dt=0.05)
        paired = FandG(sde)
        got = torchsde.sdeint(paired, y0(), TS, bm=interval(noise), method=method, dt=0.05)
        prods = torchsde.sdeint(Products(sde), y0(), TS, bm=interval(noise), method=method, dt=0.05)
    assert torch.allclose(got, want, rtol=0, atol=1e-12) and torch.allclose(prods, want, rtol=0, atol=1e-12)
    if method == "reversible_heun":  # the diffusion comes with the drift's call: one call per step
        assert 20 <= paired.calls <= 20 + 4  # 20 steps, the checks at the initial point


def test_names_rename_the_sde_methods_as_torchsde_does():
    sde, bm = SDE("diagonal", "ito"), interval("diagonal")
    with torch.no_grad():
        ours = torchsde.sdeint(sde, y0(), TS, bm=bm, names={"drift": "h"}, method="euler", dt=0.05)
        want = oracle.sdeint(sde, y0(), TS, bm=bm, names={"drift": "h"}, method="euler", dt=0.05)
    assert torch.allclose(ours, want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['drfit'\] in names; .*Did you mean 'drift'"):
        torchsde.sdeint(sde, y0(), TS, names={"drfit": "h"})


def test_the_extra_solver_state_of_reversible_heun_matches_torchsde_and_restarts_a_solve():
    # a dyadic step: torchsde accumulates t + dt, and with dt = 0.05 it ends with a step of 5e-17
    # to t = 0.5, which leaves y alone but reflects reversible Heun's z about y (torchnde does not)
    sde, bm = SDE("diagonal", "stratonovich"), interval("diagonal")
    with torch.no_grad():
        ys, extra = torchsde.sdeint(sde, y0(), [0.0, 0.5], bm=bm, method="reversible_heun", dt=DT, extra=True)
        want, want_extra = oracle.sdeint(
            sde, y0(), [0.0, 0.5], bm=bm, method="reversible_heun", dt=DT, extra=True
        )
        assert torch.allclose(ys, want, atol=1e-12)
        assert len(extra) == 3 and all(torch.allclose(a, b, atol=1e-12) for a, b in zip(extra, want_extra))
        more = torchsde.sdeint(sde, ys[-1], [0.5, 1.0], bm=bm, method="reversible_heun", dt=DT,
                               extra_solver_state=extra)  # fmt: skip
        more_want = oracle.sdeint(sde, want[-1], [0.5, 1.0], bm=bm, method="reversible_heun", dt=DT,
                                  extra_solver_state=want_extra)  # fmt: skip
        assert torch.allclose(more, more_want, atol=1e-12)
        _, none = torchsde.sdeint(sde, y0(), [0.0, 0.5], bm=bm, method="midpoint", dt=DT, extra=True)
    assert none == ()


@pytest.mark.parametrize(
    "name", ["sdeint", "sdeint_adjoint", "BrownianInterval", "BrownianPath", "BrownianTree", "BaseSDE"]
)
def test_signatures_and_defaults_are_torchsdes(name):
    ours, want = inspect.signature(getattr(torchsde, name)), inspect.signature(getattr(oracle, name))
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
        (p.name, p.kind, p.default) for p in want.parameters.values()
    ]


def _error(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn(*args, **kwargs)
        except Exception as err:
            return type(err), str(err)
    raise AssertionError("no error raised")


class Bare:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


def _invalid_calls():
    diag, general = SDE("diagonal", "ito"), SDE("general", "ito")
    strat = SDE("diagonal", "stratonovich")
    f = lambda t, y: -y  # noqa: E731
    g = lambda t, y: 0.1 * torch.ones_like(y)  # noqa: E731
    return {
        "no noise_type": (Bare(sde_type="ito", f=f, g=g), y0(), TS, {}),
        "bad noise_type": (Bare(noise_type="diag", sde_type="ito", f=f, g=g), y0(), TS, {}),
        "bad sde_type": (Bare(noise_type="diagonal", sde_type="strat", f=f, g=g), y0(), TS, {}),
        "y0 not a tensor": (diag, [[1.0]], TS, {}),
        "y0 1-d": (diag, torch.ones(3, dtype=DTYPE), TS, {}),
        "unknown method": (diag, y0(), TS, {"method": "rk4"}),
        "ts decreasing": (diag, y0(), [0.0, 1.0, 0.5], {}),
        "ts strings": (diag, y0(), ["a"], {}),
        "bm 3-d": (diag, y0(), TS, {"bm": torchsde.BrownianInterval(size=(BATCH, D, 1), dtype=DTYPE)}),
        "bm batch": (diag, y0(), TS, {"bm": torchsde.BrownianInterval(size=(BATCH + 1, D), dtype=DTYPE)}),
        "drift shape": (
            Bare(noise_type="diagonal", sde_type="ito", f=lambda t, y: y[..., None], g=g),
            y0(),
            TS,
            {},
        ),
        "diffusion 2-d for general": (Bare(noise_type="general", sde_type="ito", f=f, g=g), y0(), TS, {}),
        "diffusion 3-d for diagonal": (
            Bare(noise_type="diagonal", sde_type="ito", f=f, g=general.g),
            y0(),
            TS,
            {},
        ),
        "scalar with 3 channels": (Bare(noise_type="scalar", sde_type="ito", f=f, g=general.g), y0(), TS, {}),
        "no drift": (Bare(noise_type="diagonal", sde_type="ito", g=g), y0(), TS, {}),
        "no diffusion": (Bare(noise_type="diagonal", sde_type="ito", f=f), y0(), TS, {}),
        "g_prod without noise size": (
            Bare(noise_type="general", sde_type="ito", f=f, g_prod=lambda t, y, v: y),
            y0(),
            TS,
            {},
        ),
        "srk for stratonovich": (strat, y0(), TS, {"method": "srk"}),
        "euler for stratonovich": (strat, y0(), TS, {"method": "euler"}),
        "milstein for general": (general, y0(), TS, {"method": "milstein"}),
        "srk without levy area": (
            diag,
            y0(),
            TS,
            {"method": "srk", "bm": torchsde.BrownianInterval(size=(BATCH, D), dtype=DTYPE)},
        ),
        "adjoint_reversible_heun": (strat, y0(), TS, {"method": "adjoint_reversible_heun"}),
        "ts requiring grad": (diag, y0(), torch.tensor(TS, dtype=DTYPE, requires_grad=True), {}),
        "logqp without h": (Bare(noise_type="diagonal", sde_type="ito", f=f, g=g), y0(), TS, {"logqp": True}),
    }


@pytest.mark.parametrize("case", list(_invalid_calls()))
def test_invalid_calls_raise_torchsdes_errors(case):
    sde, start, ts, kwargs = _invalid_calls()[case]
    ours = _error(torchsde.sdeint, sde, start, ts, **kwargs)
    want = _error(oracle.sdeint, sde, start, ts, **kwargs)
    assert ours == want


def test_what_is_not_supported_yet_is_refused_with_the_reason():
    sde = SDE("diagonal", "ito")
    cases = [
        (dict(method="log_ode"), ValueError, "SDE is of type ito"),  # torchsde's check comes first
        (
            dict(options={"grad_fre": True}, method="milstein"),
            ValueError,
            "unknown option.*Did you mean 'grad_free'",
        ),
        (dict(options={"grad_free": True}, method="euler"), ValueError, "for method 'euler'; valid: none"),
        (
            dict(adjoint_method="midpoint"),
            TypeError,
            r"unexpected keyword argument\(s\) \['adjoint_method'\]",
        ),
    ]
    for kwargs, kind, message in cases:
        with pytest.raises(kind, match=message):
            torchsde.sdeint(sde, y0(), TS, **kwargs)
    strat = SDE("diagonal", "stratonovich")
    with pytest.raises(NotImplementedError, match=r"log_ode.*Davie's or Foster's"):
        torchsde.sdeint(strat, y0(), TS, method="log_ode")


def test_sdeint_adjoint_checks_its_arguments_as_torchsde_does():
    sde = SDE("diagonal", "stratonovich")
    plain = Bare(noise_type="diagonal", sde_type="ito", f=sde.f, g=sde.g)
    assert _error(torchsde.sdeint_adjoint, plain, y0(), TS) == _error(oracle.sdeint_adjoint, plain, y0(), TS)
    assert _error(torchsde.sdeint_adjoint, sde, y0(), TS, method="srk") == _error(
        oracle.sdeint_adjoint, sde, y0(), TS, method="srk"
    )
    with pytest.raises(AttributeError, match="prior drift"):
        torchsde.sdeint_adjoint(Bare(**vars(plain)), y0(), TS, adjoint_params=(), logqp=True)
    with pytest.raises(ValueError, match="SDE is of type ito but solver is for type stratonovich"):
        torchsde.sdeint_adjoint(SDE("diagonal", "ito"), y0(), TS, adjoint_method="midpoint")
    with pytest.raises(ValueError, match=r"adjoint_reversible_heun.*pass method='reversible_heun'"):
        torchsde.sdeint_adjoint(sde, y0(), TS, method="midpoint", adjoint_method="adjoint_reversible_heun")
    with pytest.raises(ValueError, match=r"unknown option.*valid: grad_free"):
        torchsde.sdeint_adjoint(sde, y0(), TS, adjoint_method="milstein", adjoint_options={"grad": True})
    with pytest.raises(NotImplementedError, match="adjoint_adaptive=True"):
        torchsde.sdeint_adjoint(sde, y0(), TS, adjoint_adaptive=True)
    with pytest.warns(UserWarning, match="adjoint_method!='adjoint_reversible_heun'"):
        ys = torchsde.sdeint_adjoint(
            sde, y0(), TS, method="reversible_heun", adjoint_method="midpoint", dt=0.05
        )
    assert ys.shape == (len(TS), BATCH, D) and torch.isfinite(ys).all()


TS_GRID = [0.0, 0.25, 0.5, 1.0]  # on the dt grid: torchsde's backward steps are the forward's
DT_GRID = 2**-5
ADJOINT_CASES = [
    (method, adjoint, noise, logqp)
    for method, adjoint in (("midpoint", "midpoint"), ("heun", "heun"), ("midpoint", "heun"),
                            ("reversible_heun", "adjoint_reversible_heun"))
    for noise in ("diagonal", "scalar", "additive", "general")
    for logqp in (False, True)
]  # fmt: skip


def _oracle_interval(noise: str, logqp: bool, entropy: int = 3) -> oracle.BrownianInterval:
    """torchsde's Brownian motion; under logqp with diagonal noise one more channel (the KL
    term's, as torchsde's ``logqp`` requires)."""
    m = M[noise] + (1 if logqp and noise == "diagonal" else 0)
    return oracle.BrownianInterval(0.0, 1.0, size=(BATCH, m), dtype=DTYPE, entropy=entropy,
                                   levy_area_approximation="space-time")  # fmt: skip


def _adjoint_run(sdeint_adjoint, sde, noise, ts, dt, logqp, **kwargs):
    """Outputs and gradients (of y0 and every parameter) of a loss on ``ys`` and the log-ratio."""
    start = y0().requires_grad_(True)
    out = sdeint_adjoint(sde, start, ts, bm=_oracle_interval(noise, logqp), dt=dt, logqp=logqp, **kwargs)
    ys, ratio = out if logqp else (out, torch.zeros(()))
    loss = ys.pow(2).sum() + (ys[-1] * torch.linspace(0.5, 1.5, D, dtype=DTYPE)).sum() + ratio.sum()
    inputs = (start, *sde.parameters())
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return (
        ys.detach(),
        ratio.detach(),
        [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)],
    )


@pytest.mark.parametrize(("method", "adjoint_method", "noise", "logqp"), ADJOINT_CASES)
def test_sdeint_adjoint_gradients_equal_torchsdes_for_the_same_backward_discretisation(
    method, adjoint_method, noise, logqp
):
    sde = SDE(noise, "stratonovich")
    kwargs = dict(method=method, adjoint_method=adjoint_method)
    ours = _adjoint_run(torchsde.sdeint_adjoint, sde, noise, TS_GRID, DT_GRID, logqp, **kwargs)
    want = _adjoint_run(oracle.sdeint_adjoint, sde, noise, TS_GRID, DT_GRID, logqp, **kwargs)
    assert torch.allclose(ours[0], want[0], rtol=1e-10, atol=1e-10)
    assert torch.allclose(ours[1], want[1], rtol=1e-10, atol=1e-10)
    assert want[2][0].abs().min() > 0 and want[2][1].abs().min() > 0  # dL/dy0, dL/da
    for got, expected in zip(ours[2], want[2]):
        assert torch.allclose(got, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("noise", "adjoint_method"), [("diagonal", "milstein"), ("additive", "euler")])
def test_the_ito_adjoint_agrees_with_backprop_at_small_dt(noise, adjoint_method):
    """torchsde solves the Itô adjoint SDE with Itô methods; torchnde solves its Stratonovich form
    with the midpoint method, so the two differ by their discretisation errors (0.3% at dt = 2^-6,
    falling as dt); each is within 1e-3 of the exact gradient of the discretised forward pass
    (backprop) at dt = 2^-10, with the output times on the step grid (off it, both backward passes
    restart from interpolated outputs)."""
    sde, dt = SDE(noise, "ito"), 2**-10
    kwargs = dict(method="milstein", adjoint_method=adjoint_method)
    ours = _adjoint_run(torchsde.sdeint_adjoint, sde, noise, TS_GRID, dt, False, **kwargs)[2]
    theirs = _adjoint_run(oracle.sdeint_adjoint, sde, noise, TS_GRID, dt, False, **kwargs)[2]
    exact = _adjoint_run(torchsde.sdeint, sde, noise, TS_GRID, dt, False, method="milstein")[2]
    flat = [torch.cat([g.flatten() for g in grads]) for grads in (ours, theirs, exact)]
    assert (flat[0] - flat[2]).norm() / flat[2].norm() < 1e-3
    assert (flat[1] - flat[2]).norm() / flat[2].norm() < 2e-3


@pytest.mark.parametrize(("method", "noise", "calculus", "options"), CASES)
def test_logqp_outputs_agree_with_torchsde_on_the_same_increments(method, noise, calculus, options):
    sde = SDE(noise, calculus)
    outs = []
    for sdeint in (torchsde.sdeint, oracle.sdeint):
        with torch.no_grad():
            outs.append(sdeint(sde, y0(), TS, bm=_oracle_interval(noise, True), method=method, dt=0.03,
                               options=dict(options), logqp=True))  # fmt: skip
    (ys, ratio), (want_ys, want_ratio) = outs
    assert ratio.shape == (len(TS) - 1, BATCH) and (ratio > 0).all()
    assert torch.allclose(ys, want_ys, rtol=0, atol=1e-10)
    assert torch.allclose(ratio, want_ratio, rtol=1e-6, atol=1e-12)


def test_the_brownian_interval_takes_torchsdes_arguments_and_calls():
    bm = torchsde.BrownianInterval(t0=0.0, t1=2.0, size=(3, 2), dtype=DTYPE, entropy=7, dt=0.01,
                                   cache_size=None, levy_area_approximation="space-time")  # fmt: skip
    again = torchsde.BrownianInterval(t0=0.0, t1=2.0, size=(3, 2), dtype=DTYPE, entropy=7,
                                      levy_area_approximation="space-time")  # fmt: skip
    w, u = bm(0.5, 1.5, return_U=True)
    later = [again(1.0, 1.5), again(0.5, 1.0)]  # another order, the same path
    assert torch.allclose(w, later[0] + later[1], atol=1e-14)
    w_nde, h = bm.levy(0.5, 1.5)
    assert torch.allclose(u, 1.0 * (0.5 * w_nde + h))
    assert torch.allclose(bm(1.5), bm(0.0, 1.5)) and bm.size() == (3, 2)
    assert (
        bm.levy_area_approximation == "space-time" and bm(0.5, 1.0, return_U=True, return_A=True)[2] is None
    )
    with pytest.warns(UserWarning, match="Should have tb<=t1"):
        assert torch.equal(bm(1.0, 3.0), bm(1.0, 2.0))
    with pytest.raises(RuntimeError, match="must respect ta <= tb"):
        bm(1.0, 0.5)
    plain = torchsde.BrownianInterval(size=(3,), entropy=1)
    assert plain(0.0, 0.5, return_U=True)[1] is None and plain.dtype == torch.get_default_dtype()
    foster = torchsde.BrownianInterval(size=(3, 2), levy_area_approximation="foster")
    with pytest.raises(NotImplementedError, match="return_A"):
        foster(0.0, 0.5, return_A=True)
    w_root = torch.full((3, 2), 0.7, dtype=DTYPE)
    pinned = torchsde.BrownianInterval(
        size=(3, 2), dtype=DTYPE, W=w_root, levy_area_approximation="space-time"
    )
    assert torch.allclose(pinned(0.0, 0.3) + pinned(0.3, 1.0), w_root)
    for kwargs in (dict(t0=1.0, t1=0.0, size=(1,)), dict(tol=-1.0, size=(1,)),
                   dict(halfway_tree=True, size=(1,)), dict(levy_area_approximation="full", size=(1,)),
                   dict()):  # fmt: skip
        assert _error(torchsde.BrownianInterval, **kwargs) == _error(oracle.BrownianInterval, **kwargs)


def test_entropy_defaults_come_from_numpys_global_generator_as_in_torchsde():
    np.random.seed(11)
    first = torchsde.BrownianInterval(size=(4,), dtype=DTYPE)(0.0, 1.0)
    np.random.seed(11)
    assert torch.equal(torchsde.BrownianInterval(size=(4,), dtype=DTYPE)(0.0, 1.0), first)
    sde = SDE("diagonal", "ito")
    np.random.seed(3)
    ys = torchsde.sdeint(sde, y0(), TS, dt=0.05)
    np.random.seed(3)
    assert torch.equal(torchsde.sdeint(sde, y0(), TS, dt=0.05), ys)
    assert not torch.equal(torchsde.sdeint(sde, y0(), TS, dt=0.05), ys)


def test_brownian_path_and_tree_start_at_w0_and_the_tree_ends_at_w1():
    w0, w1 = torch.full((3, 1), 2.0, dtype=DTYPE), torch.full((3, 1), -1.0, dtype=DTYPE)
    tree = torchsde.BrownianTree(t0=0.0, w0=w0, t1=2.0, w1=w1, entropy=4)
    assert torch.allclose(tree(0.0), w0) and torch.allclose(tree(2.0), w1)
    assert torch.allclose(tree(0.7) - tree(0.2), tree(0.2, 0.7))
    path = torchsde.BrownianPath(t0=1.0, w0=w0)
    steps = [path(1.0 + 0.25 * k, 1.25 + 0.25 * k) for k in range(8)]  # past t0 + 1 too
    assert torch.allclose(w0 + sum(steps), path(3.0), atol=1e-14)
    assert path.levy_area_approximation == "none"
    sde = SDE("diagonal", "stratonovich")
    ours = torchsde.sdeint(sde, y0(), TS, bm=torchsde.BrownianTree(0.0, torch.zeros(BATCH, D, dtype=DTYPE), entropy=1),
                           method="heun", dt=0.05)  # fmt: skip
    assert ours.shape == (len(TS), BATCH, D) and torch.isfinite(ours).all()


def test_sde_base_classes_check_their_types_as_torchsde_does():
    assert torchsde.SDEIto("general").sde_type == "ito"
    assert torchsde.SDEStratonovich("scalar").noise_type == "scalar"
    for args in (("diag", "ito"), ("diagonal", "itô")):
        ours, want = _error(torchsde.BaseSDE, *args), _error(oracle.BaseSDE, *args)
        assert ours == want and re.search("Expected", ours[1])


def test_adjoint_reversible_heun_takes_float32_output_times_off_the_float64_grid():
    """``linspace(0, 1, 11)`` in float32 is a hair off the grid of ``dt = 0.01``: the reversible
    loop lands on each output time with one more short step, and still reverses exactly."""
    sde = SDE("diagonal", "stratonovich").float()
    ts = torch.linspace(0, 1, 11)
    start = y0().float().requires_grad_(True)
    grads = []
    for adjoint in (True, False):
        bm = torchsde.BrownianInterval(0.0, 1.0, size=(BATCH, D), entropy=2)
        if adjoint:
            ys = torchsde.sdeint_adjoint(sde, start, ts, bm=bm, method="reversible_heun", dt=0.01)
        else:  # backprop through the same reversible loop
            ys = nde.solve(sde.term(bm), start, ts, solver="reversible_heun", dt=0.01).ys
        grads.append(torch.autograd.grad(ys.pow(2).sum(), (start, sde.a, sde.b)))
    for ours, want in zip(*grads):
        assert torch.allclose(ours, want, rtol=1e-4, atol=1e-5)
