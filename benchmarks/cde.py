"""Neural CDE benchmarks, side by side with torchcde 0.2.5: one training iteration of a neural
CDE classifier, and the log-ODE iteration beside it.

- ``train/<method>``: one training iteration (build the path from the coefficients, solve, loss,
  backward, Adam step) of a neural CDE classifier: 4 channels (time and three values), 128
  knots, batch 256, natural cubic spline (coefficients computed once, outside the iteration, as
  torchcde's examples do), hidden state 32, vector field MLP 32-128-(32 x 4) (ReLU, tanh output),
  linear readout of the final state, binary cross-entropy, float32, gradients by backpropagation
  through the solver (``adjoint=False``). ``rk4``: ``options=dict(step_size=1)`` (127 steps);
  ``dopri5``: cdeint's default tolerances (``rtol=1e-4``, ``atol=1e-6``). Rows:
  ``torchcde.cdeint``, the same code through ``torchnde.compat.torchcde``, and
  ``torchnde.solve`` on a ``CDETerm`` over a ``CubicSplinePath`` (built once: the data needs no
  gradient). These three do the same computation: ``rk4`` steps of one knot interval (torchcde's
  ``rk4`` is the 3/8 rule, so is the compat row's; the native row's the classical one, four
  evaluations a step either way); ``dopri5`` at the same tolerances, each library with its own
  step-size rule. One more ``dopri5`` row changes the computation, as a user may:
  ``CDETerm(..., land_on_knots=True)`` lands the adaptive steps on the spline's knots (fewer
  steps, and a more accurate solution; see ``CDETerm``).
- ``train/logode-depth2``: the same classifier as a neural rough differential equation:
  ``LogSignaturePath`` of depth 2 over windows of 8 knots (16 windows, 10 log-signature
  channels, built once), rk4 with one step per window. torchcde's ``logsig_windows`` needs
  ``signatory``, which is not installed, so this row has no torchcde peer; it is compared with
  torchcde's rk4 iteration.

One thread, candidates timed interleaved (``benchmarks/common.py``), medians; *speed-up* =
torchcde's median / the row's median (the median of per-round ratios); the target is a torchnde
time at most 0.5x torchcde's (speed-up at least 2).

``python -m benchmarks.cde [--out DIR] [--quick]`` writes ``cde.json`` and ``cde.md``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from .common import Candidate, Settings, bench_cli, measure_group, ratio_rows, ratio_table_rows

BATCH, KNOTS, CHANNELS, HIDDEN, WIDTH = 256, 128, 4, 32, 128
WINDOW, DEPTH = 8.0, 2
TARGET = 2.0  # torchcde's time / torchnde's, at least
METHODS = {
    "rk4": {"method": "rk4", "options": {"step_size": 1.0}},
    "dopri5": {"method": "dopri5"},
}


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy spirals ``[BATCH, KNOTS, CHANNELS]`` (time first) and their labels."""
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 4 * math.pi, KNOTS)
    start = torch.rand(BATCH, 1, generator=g) * 2 * math.pi
    sign = torch.where(torch.arange(BATCH) % 2 == 0, 1.0, -1.0).unsqueeze(1)
    values = [torch.cos(start + sign * t), torch.sin(start + sign * t), torch.cos(start + t) * torch.sin(t)]
    x = torch.stack([t.expand(BATCH, -1), *values], dim=-1) / (1 + 0.1 * t).unsqueeze(-1)
    x = x + 0.05 * torch.randn(x.shape, generator=g)
    return x, (torch.arange(BATCH) % 2).float()


class Model(torch.nn.Module):
    """The classifier: initial map, vector field ``f(t, z)`` ``[..., HIDDEN, channels]``, readout."""

    def __init__(self, channels: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.channels = channels
        self.initial = torch.nn.Linear(CHANNELS, HIDDEN)
        self.net = torch.nn.Sequential(torch.nn.Linear(HIDDEN, WIDTH), torch.nn.ReLU(),
                                       torch.nn.Linear(WIDTH, HIDDEN * channels), torch.nn.Tanh())  # fmt: skip
        self.readout = torch.nn.Linear(HIDDEN, 1)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(*z.shape, self.channels)


class Trainer:
    """One seeded model and its Adam; ``step()`` is one training iteration through
    ``integrate(model, x0) -> z_final``."""

    def __init__(self, integrate: Callable, x0: torch.Tensor, y: torch.Tensor, channels: int):
        self.model, self.integrate, self.x0, self.y = Model(channels), integrate, x0, y
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def step(self) -> float:
        self.opt.zero_grad()
        z = self.integrate(self.model, self.model.initial(self.x0))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self.model.readout(z).squeeze(-1), self.y)
        loss.backward()
        self.opt.step()
        return loss.item()


def reference_state() -> torch.Tensor:
    """``z(T)`` of the untrained classifier (every row's starting point), solved tightly in
    float64: dopri5, ``rtol=1e-10``, ``atol=1e-12``, landing on the knots."""
    import torchnde as nde

    x, _ = data()
    x = x.double()
    model = Model(CHANNELS).double()
    path = nde.CubicSplinePath(x)
    with torch.no_grad():
        term = nde.CDETerm(model, path, land_on_knots=True)
        sol = nde.solve(
            term, model.initial(x[:, 0]), path.times[[0, -1]], rtol=1e-10, atol=1e-12, max_steps=10**6
        )
    return sol.ys[-1]


def work(trainer: Trainer, reference: torch.Tensor | None) -> dict[str, Any]:
    """The evaluations of ``f`` in one forward solve of ``trainer`` (before it has trained), and
    the relative error of its ``z(T)`` against ``reference`` (``None``: not compared)."""
    calls = [0]
    hook = trainer.model.net.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        with torch.no_grad():
            z = trainer.integrate(trainer.model, trainer.model.initial(trainer.x0))
    finally:
        hook.remove()
    out: dict[str, Any] = {"evaluations": calls[0]}
    if reference is not None:
        out["z_error"] = float((z.double() - reference).norm() / reference.norm())
    return out


def floor(model: Model, z0: torch.Tensor) -> torch.Tensor:
    """rk4's 508 evaluations of ``f`` alone, chained as ``z + h f(t, z).sum(-1)``: no path, no
    product with ``dX/dt``, no stages. What any rk4 implementation must compute at least."""
    t, z = torch.zeros(()), z0
    for _ in range(4 * (KNOTS - 1)):
        z = z + 0.25 * model(t, z).sum(-1)
    return z


def train_candidates(method: str) -> list[Candidate]:
    import torchcde

    import torchnde as nde
    from torchnde.compat import torchcde as compat

    x, y = data()
    kwargs = METHODS[method]
    cands = []
    for key, lib in (("torchcde", torchcde), ("compat", compat)):
        coeffs = lib.natural_cubic_coeffs(x)

        def integrate(
            model: Model, z0: torch.Tensor, lib: Any = lib, coeffs: torch.Tensor = coeffs
        ) -> torch.Tensor:
            X = lib.CubicSpline(coeffs)
            return lib.cdeint(X, model, z0, X.interval, adjoint=False, **kwargs)[:, -1]

        cands.append(
            Candidate(key, f"{lib.__name__}.cdeint", run=Trainer(integrate, x[:, 0], y, CHANNELS).step)
        )
    path = nde.CubicSplinePath(x)
    native = (
        {"solver": "rk4", "dt": 1.0} if method == "rk4" else {"solver": "dopri5", "rtol": 1e-4, "atol": 1e-6}
    )

    def solve(model: Model, z0: torch.Tensor, land_on_knots: bool = False) -> torch.Tensor:
        term = nde.CDETerm(model, path, land_on_knots=land_on_knots)
        return nde.solve(term, z0, path.times[[0, -1]], **native).ys[-1]

    cands.append(
        Candidate("native", "torchnde.solve(CDETerm)", run=Trainer(solve, x[:, 0], y, CHANNELS).step)
    )
    if method == "rk4":
        cands.append(
            Candidate("floor", "floor: the 508 evaluations of f alone (no solver, no path)",
                      run=Trainer(floor, x[:, 0], y, CHANNELS).step)
        )  # fmt: skip
    else:  # rk4's unit steps land on the knots already
        knots = functools.partial(solve, land_on_knots=True)
        cands.append(
            Candidate("knots", "torchnde.solve(CDETerm(land_on_knots=True))",
                      run=Trainer(knots, x[:, 0], y, CHANNELS).step)
        )  # fmt: skip
    return cands


def logode_candidates() -> list[Candidate]:
    import torchcde

    import torchnde as nde

    x, y = data()
    coeffs = torchcde.natural_cubic_coeffs(x)

    def reference(model: Model, z0: torch.Tensor) -> torch.Tensor:
        X = torchcde.CubicSpline(coeffs)
        return torchcde.cdeint(X, model, z0, X.interval, adjoint=False, **METHODS["rk4"])[:, -1]

    path = nde.LogSignaturePath(x, depth=DEPTH, window=WINDOW)

    def logode(model: Model, z0: torch.Tensor) -> torch.Tensor:
        return nde.solve(nde.CDETerm(model, path), z0, path.times[[0, -1]], solver="rk4", dt=WINDOW).ys[-1]

    return [
        Candidate("torchcde", "torchcde.cdeint (rk4, step 1)", run=Trainer(reference, x[:, 0], y, CHANNELS).step),
        Candidate("native", f"torchnde log-ODE depth {DEPTH}, window {WINDOW:g}",
                  run=Trainer(logode, x[:, 0], y, path.channels).step),
    ]  # fmt: skip


QUICK = Settings(
    warmup=1, repeats=3, min_repeats=3, group_budget_s=4.0, min_sample_s=0.0, compile_timeout_s=60.0
)
FULL = Settings(
    warmup=2, repeats=9, min_repeats=5, group_budget_s=40.0, min_sample_s=0.0, compile_timeout_s=60.0
)


def run(settings: Settings, log: Callable[[str], None], only: list[str] | None = None) -> dict[str, Any]:
    import torchcde

    groups: dict[str, Any] = {}
    jobs: list[tuple[str, Callable[[], list[Candidate]]]] = [
        *((f"train/{m}", lambda m=m: train_candidates(m)) for m in METHODS),
        (f"train/logode-depth{DEPTH}", logode_candidates),
    ]
    reference = None
    for key, make in jobs:
        if only and not any(s in key for s in only):
            continue
        log(key)
        cands = make()
        if reference is None:
            reference = reference_state()
        compared = key.startswith("train/") and "logode" not in key  # the log-ODE solves another equation
        # before timing, while every model is the untrained one the reference solved
        trainers = {
            c.key: c.run.__self__ for c in cands if isinstance(getattr(c.run, "__self__", None), Trainer)
        }
        works = {k: work(tr, reference if compared and k != "floor" else None) for k, tr in trainers.items()}
        timings = measure_group(cands, settings, log, shared_inner=(tuple(c.key for c in cands),))
        groups[key] = {"rows": ratio_rows(cands, timings, "torchcde", works)}
    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "torchcde": torchcde.__version__,
            "target_ratio": TARGET, "groups": groups}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Neural CDE benchmarks: torchnde vs torchcde " + result["torchcde"],
        "",
        "One thread, float32, medians of interleaved samples; *speed-up* = torchcde's time / the row's "
        "(the median of per-round ratios; target: at least 2, i.e. at most 0.5x torchcde's time). "
        "`train/*`: one training iteration (path, solve, loss, backward, Adam) of a neural CDE "
        "classifier, hidden 32, 4 channels, 128 knots, batch 256, natural cubic spline, backprop "
        "through the solver; `logode-depth2`: the log-ODE method, depth 2, windows of 8 knots, rk4 one "
        "step per window, against torchcde's rk4 iteration. Setup and rows: `benchmarks/cde.py`. "
        "*f evals*: evaluations of the vector field in one forward solve; *z(T) error*: the relative "
        "error of the untrained model's final state against a float64 solve at rtol 1e-10. The "
        "`floor` row is the rk4 iteration's evaluations of f alone: no solver can beat it.",
        "",
        "| group | row | median | min | samples | f evals | z(T) error | speed-up vs torchcde |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def cells(row: dict[str, Any]) -> list[str]:
        evals, err = row.get("evaluations"), row.get("z_error")
        return ["—" if evals is None else str(evals), "—" if err is None else f"{err:.1e}"]

    lines += ratio_table_rows(result, TARGET, cells, others=("floor",))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return bench_cli(argv, "python -m benchmarks.cde", __doc__, "cde", (QUICK, FULL), run, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
