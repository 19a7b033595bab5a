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
  gradient).
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

import math
import statistics
from collections.abc import Callable
from typing import Any

import torch

from .common import Candidate, Settings, bench_cli, measure_group, ratio_table_rows

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

    def solve(model: Model, z0: torch.Tensor) -> torch.Tensor:
        return nde.solve(nde.CDETerm(model, path), z0, path.times[[0, -1]], **native).ys[-1]

    cands.append(
        Candidate("native", "torchnde.solve(CDETerm)", run=Trainer(solve, x[:, 0], y, CHANNELS).step)
    )
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


def _rows(cands: list[Candidate], timings: dict) -> dict[str, Any]:
    rows = {}
    base = timings["torchcde"].times_s
    for cand in cands:
        timing = timings[cand.key]
        row: dict[str, Any] = {"label": cand.label, "median_s": timing.median_s, "min_s": timing.min_s,
                               "samples": len(timing.times_s), "inner": timing.inner, "error": cand.error}  # fmt: skip
        if cand.key != "torchcde" and timing.times_s and base:
            row["ratio"] = statistics.median(b / o for b, o in zip(base, timing.times_s))
        rows[cand.key] = row
    return rows


def run(settings: Settings, log: Callable[[str], None], only: list[str] | None = None) -> dict[str, Any]:
    import torchcde

    groups: dict[str, Any] = {}
    jobs: list[tuple[str, Callable[[], list[Candidate]]]] = [
        *((f"train/{m}", lambda m=m: train_candidates(m)) for m in METHODS),
        (f"train/logode-depth{DEPTH}", logode_candidates),
    ]
    for key, make in jobs:
        if only and not any(s in key for s in only):
            continue
        log(key)
        cands = make()
        timings = measure_group(cands, settings, log, shared_inner=(tuple(c.key for c in cands),))
        groups[key] = {"rows": _rows(cands, timings)}
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
        "step per window, against torchcde's rk4 iteration. Setup and rows: `benchmarks/cde.py`.",
        "",
        "| group | row | median | min | samples | speed-up vs torchcde |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += ratio_table_rows(result, TARGET)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return bench_cli(argv, "python -m benchmarks.cde", __doc__, "cde", (QUICK, FULL), run, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
