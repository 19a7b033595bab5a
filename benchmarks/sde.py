"""SDE benchmarks, side by side with torchsde 0.2.6: geometric Brownian motion for each method at
equal strong error, and a neural SDE training iteration.

- ``gbm/<method>``: :math:`dy = \\mu y\\,dt + \\sigma y\\,dW` (Itô; the Stratonovich methods solve
  its Stratonovich form, drift :math:`(\\mu - \\sigma^2/2) y`), :math:`\\mu = 0.5`,
  :math:`\\sigma = 0.3`, ``y0 = 1``, batch 4096 x 1, float32, ``ts = [0, 1]``, ``dt = 2**-8``
  (256 steps). Rows: ``torchsde.sdeint(sde, y0, ts, method=..., dt=...)``, the same call through
  ``torchnde.compat.torchsde.sdeint``, and ``torchnde.solve`` on an ``SDETerm`` (each with its
  library's default Brownian motion, made inside the timed call). The *strong error*
  :math:`E|y_N - y(1)|` is measured beside each row on one shared Brownian path (a seeded
  ``torchnde.compat.torchsde.BrownianInterval`` with Lévy area, which every library accepts)
  against the exact solution :math:`y_0\\exp((\\mu - \\sigma^2/2) + \\sigma W(1))`: the methods
  agree on the same increments, so at the same ``dt`` the errors are equal, and the times compare
  at equal strong error.
- ``train/<method>/<gradient>``: one training iteration (solve, loss, backward, Adam step) of a
  neural SDE: drift MLP 32-64-64-32 (tanh), diagonal diffusion MLP 32-64-32 (tanh, sigmoid
  output, times 0.3), state 32, batch 256, ``ts = linspace(0, 1, 11)``, ``dt = 0.01`` (100
  steps), loss the mean square of ``ys``, float32, a fresh Brownian path each iteration.
  Gradients: ``backprop`` (``sdeint``), ``adjoint`` (``sdeint_adjoint``, the stochastic adjoint)
  and for ``reversible_heun`` ``adjoint_reversible_heun`` (exact gradients at O(1) memory). A row
  that the drop-in does not support yet is listed as pending, with the reason.

One thread, candidates timed interleaved (``benchmarks/common.py``), medians; *ratio* = torchsde's
median / the row's median per group (above 1: faster than torchsde); the target is a torchnde time
at most 0.5x torchsde's (ratio at least 2).

``python -m benchmarks.sde [--out DIR] [--quick] [--only TEXT ...]`` writes ``sde.json`` and ``sde.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import jax_sde
from .common import Candidate, Settings, bench_cli, measure_group, ratio_rows, ratio_table_rows

MU, SIGMA = 0.5, 0.3
GBM_BATCH, GBM_DT = 4096, 2**-8
GBM_METHODS = [
    ("euler", "ito", {}),
    ("milstein", "ito", {}),
    ("milstein", "ito", {"grad_free": True}),
    ("srk", "ito", {}),
    ("milstein", "stratonovich", {}),
    ("midpoint", "stratonovich", {}),
    ("heun", "stratonovich", {}),
    ("euler_heun", "stratonovich", {}),
    ("reversible_heun", "stratonovich", {}),
]
STATE, HIDDEN, TRAIN_BATCH, TRAIN_DT = 32, 64, 256, 0.01
TRAIN_METHODS = [("euler", "ito"), ("midpoint", "stratonovich"), ("reversible_heun", "stratonovich")]
TARGET = 2.0  # torchsde's time / torchnde's, at least


class GBM(torch.nn.Module):
    """Geometric Brownian motion in torchsde's form; the Stratonovich form has drift
    ``(mu - sigma**2 / 2) y`` and the same solution."""

    noise_type = "diagonal"

    def __init__(self, sde_type: str):
        super().__init__()
        self.sde_type = sde_type
        self.mu = MU if sde_type == "ito" else MU - SIGMA**2 / 2

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mu * y

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return SIGMA * y


def _native_solver(method: str, options: dict) -> Any:
    import torchnde as nde

    if method == "milstein":
        return nde.Milstein(derivative_free=bool(options.get("grad_free", False)))
    return method


def gbm_candidates(method: str, sde_type: str, options: dict) -> tuple[list[Candidate], dict[str, float]]:
    """The rows of one GBM group and their strong errors on one shared path."""
    import torchsde

    import torchnde as nde
    from torchnde.compat import torchsde as compat

    sde = GBM(sde_type)
    y0 = torch.ones(GBM_BATCH, 1)
    ts = torch.tensor([0.0, 1.0])
    solver = _native_solver(method, options)
    if method == "milstein" and options.get("grad_free") and sde_type == "stratonovich":
        solver = None  # torchnde's derivative-free Stratonovich variant differs from torchsde's
    calls: dict[str, tuple[str, Callable]] = {
        "torchsde": ("torchsde.sdeint", lambda bm=None: torchsde.sdeint(
            sde, y0, ts, bm=bm, method=method, dt=GBM_DT, options=dict(options))),
        "compat": ("torchnde.compat.torchsde.sdeint", lambda bm=None: compat.sdeint(
            sde, y0, ts, bm=bm, method=method, dt=GBM_DT, options=dict(options))),
    }  # fmt: skip
    if solver is not None:
        calls["native"] = ("torchnde.solve(SDETerm)", lambda bm=None: nde.solve(
            nde.SDETerm(sde.f, sde.g, "diagonal", sde_type, bm), y0, ts, solver=solver, dt=GBM_DT).ys)  # fmt: skip
    errors = {}
    for key, (_, call) in calls.items():
        bm = compat.BrownianInterval(0.0, 1.0, size=(GBM_BATCH, 1), entropy=2024,
                                     levy_area_approximation="space-time")  # fmt: skip
        with torch.no_grad():
            y_end = call(bm)[-1].double()
        exact = torch.exp(torch.tensor(MU - SIGMA**2 / 2) + SIGMA * bm(0.0, 1.0).double())
        errors[key] = float((y_end - exact).abs().mean())

    def timed(call: Callable) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return call()

        return run

    cands = [Candidate(key, label, run=timed(call)) for key, (label, call) in calls.items()]
    reference, errors["diffrax"] = jax_sde.gbm_candidate(
        method, sde_type, options, MU, SIGMA, GBM_BATCH, GBM_DT
    )
    return [*cands, reference], errors


class DriftDiffusion(torch.nn.Module):
    """A neural SDE in torchsde's form: MLP drift and diagonal MLP diffusion."""

    noise_type = "diagonal"

    def __init__(self, sde_type: str, seed: int = 0):
        super().__init__()
        self.sde_type = sde_type
        torch.manual_seed(seed)
        self.drift = torch.nn.Sequential(torch.nn.Linear(STATE, HIDDEN), torch.nn.Tanh(),
                                         torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.Tanh(),
                                         torch.nn.Linear(HIDDEN, STATE))  # fmt: skip
        self.diffusion = torch.nn.Sequential(torch.nn.Linear(STATE, HIDDEN), torch.nn.Tanh(),
                                             torch.nn.Linear(HIDDEN, STATE), torch.nn.Sigmoid())  # fmt: skip

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.drift(y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.3 * self.diffusion(y)


class Trainer:
    """One seeded model and its Adam; ``step()`` is one training iteration through ``integrate``
    (``integrate(sde, y0, ts) -> ys``)."""

    def __init__(self, integrate: Callable, sde_type: str):
        self.sde = DriftDiffusion(sde_type)
        self.integrate = integrate
        self.opt = torch.optim.Adam(self.sde.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(1)
        self.y0 = torch.randn(TRAIN_BATCH, STATE, generator=gen)
        self.ts = torch.linspace(0, 1, 11)

    def step(self) -> float:
        self.opt.zero_grad()
        ys = self.integrate(self.sde, self.y0, self.ts)
        loss = ys.pow(2).mean()
        loss.backward()
        self.opt.step()
        return loss.item()


def train_candidates(method: str, sde_type: str, gradient: str) -> list[Candidate]:
    import torchsde

    import torchnde as nde
    from torchnde.compat import torchsde as compat

    kwargs: dict[str, Any] = dict(method=method, dt=TRAIN_DT)
    if gradient == "adjoint_reversible_heun":
        kwargs["adjoint_method"] = "adjoint_reversible_heun"
    if gradient == "backprop":
        libs = {"torchsde": ("torchsde.sdeint", torchsde.sdeint), "compat": ("torchnde.compat.torchsde.sdeint", compat.sdeint)}  # fmt: skip
    else:
        libs = {"torchsde": ("torchsde.sdeint_adjoint", torchsde.sdeint_adjoint),
                "compat": ("torchnde.compat.torchsde.sdeint_adjoint", compat.sdeint_adjoint)}  # fmt: skip
    cands = []
    for key, (label, fn) in libs.items():
        trainer = Trainer(lambda sde, y0, ts, fn=fn: fn(sde, y0, ts, **kwargs), sde_type)
        cands.append(Candidate(key, label, run=trainer.step))

    def native(sde: DriftDiffusion, y0: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        term = nde.SDETerm(sde.f, sde.g, "diagonal", sde_type)
        params = tuple(sde.parameters())
        strategy = {"backprop": "backprop", "adjoint": nde.Adjoint(params=params, dt=TRAIN_DT),
                    "adjoint_reversible_heun": nde.Reversible(params=params)}[gradient]  # fmt: skip
        return nde.solve(term, y0, ts, solver=method, dt=TRAIN_DT, gradient=strategy).ys

    cands.append(Candidate("native", "torchnde.solve(SDETerm)", run=Trainer(native, sde_type).step))
    like = Trainer(native, sde_type)  # the same initial weights, y0 and times, for diffrax
    cands.append(jax_sde.train_candidate(like.sde, method, sde_type, gradient, like.y0, like.ts, TRAIN_DT))
    return cands


QUICK = Settings(
    warmup=2, repeats=5, min_repeats=3, group_budget_s=4.0, min_sample_s=0.05, compile_timeout_s=60.0
)
FULL = Settings(
    warmup=2, repeats=15, min_repeats=9, group_budget_s=20.0, min_sample_s=0.2, compile_timeout_s=60.0
)


def _rows(cands: list[Candidate], timings: dict, errors: dict[str, float] | None = None) -> dict[str, Any]:
    extra = None if errors is None else {c.key: {"strong_error": errors.get(c.key)} for c in cands}
    return ratio_rows(cands, timings, "torchsde", extra)


def _gbm_key(method: str, sde_type: str, options: dict) -> str:
    return f"gbm/{method}{'-grad_free' if options.get('grad_free') else ''}/{sde_type}"


def run(settings: Settings, log: Callable[[str], None], only: list[str] | None = None) -> dict[str, Any]:
    groups: dict[str, Any] = {}
    for method, sde_type, options in GBM_METHODS:
        key = _gbm_key(method, sde_type, options)
        if only and not any(s in key for s in only):
            continue
        log(f"{key}")
        cands, errors = gbm_candidates(method, sde_type, options)
        timings = measure_group(cands, settings, log)
        groups[key] = {"rows": _rows(cands, timings, errors)}
    train = [(m, s, "backprop") for m, s in TRAIN_METHODS] + [(m, s, "adjoint") for m, s in TRAIN_METHODS]
    train.append(("reversible_heun", "stratonovich", "adjoint_reversible_heun"))
    for method, sde_type, gradient in train:
        key = f"train/{method}/{gradient}"
        if only and not any(s in key for s in only):
            continue
        log(key)
        cands = train_candidates(method, sde_type, gradient)
        timings = measure_group(cands, settings, log, shared_inner=(tuple(c.key for c in cands),))
        groups[key] = {"rows": _rows(cands, timings)}
    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "torchsde": _version(),
            "target_ratio": TARGET, "groups": groups}  # fmt: skip


def _version() -> str:
    import torchsde

    return torchsde.__version__


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# SDE benchmarks: torchnde vs torchsde " + result["torchsde"],
        "",
        "One thread, float32, medians of interleaved samples; *speed-up* = torchsde's time / the row's "
        "(the median of per-round ratios; target: at least 2, i.e. at most 0.5x torchsde's time). "
        "`gbm/*`: geometric Brownian motion, batch 4096, dt 2^-8 on [0, 1], each library's default "
        "Brownian motion made inside the call; *strong error* E|y_N - y(1)| on one shared path against "
        "the exact solution (equal at equal dt: the methods agree on the same increments; diffrax's on "
        "its own path, as jax draws its own random numbers). `train/*`: one iteration (solve, loss, "
        "backward, Adam) of a neural SDE, MLP drift and diffusion, state 32, batch 256, 100 steps. "
        "diffrax rows (jit-compiled, `VirtualBrownianTree`) are for reference. Setup and rows: "
        "`benchmarks/sde.py`, `benchmarks/jax_sde.py`.",
        "",
        "| group | row | median | min | samples x inner | strong error | speed-up vs torchsde |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]

    def strong_error(row: dict[str, Any]) -> list[str]:
        err = row.get("strong_error")
        return ["—" if err is None else f"{err:.2e}"]

    lines += ratio_table_rows(result, TARGET, strong_error)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return bench_cli(argv, "python -m benchmarks.sde", __doc__, "sde", (QUICK, FULL), run, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
