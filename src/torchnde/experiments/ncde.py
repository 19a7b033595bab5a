r"""Neural CDEs on a real classification set with points dropped at random, against a GRU.

P. Kidger, J. Morrill, J. Foster, T. Lyons, *Neural controlled differential equations for
irregular time series*, NeurIPS 2020, arXiv 2005.08926, Sec. 4.1 (CharacterTrajectories with 30,
50 and 70% of the points dropped: NCDE 98.7 / 98.8 / 98.6% against GRU-D 94.2 / 90.2 / 91.9%).

CharacterTrajectories is not available offline; ``ncde-missing`` uses JapaneseVowels (UEA; 640
utterances of 7 to 29 frames x 12 LPC coefficients, 9 speakers; read from the ``sktime`` wheel,
:func:`torchnde.datasets.japanese_vowels`) with the same protocol: each series loses a fraction
of its time points, chosen at random per series, and the models see

- the neural CDE: the time (as a channel), the 12 values (NaN where dropped) and the cumulative
  count of observations (the paper's observational intensity; the drops take whole time points,
  so one count serves every channel), interpolated by a Hermite cubic with backward
  differences. After a series ends its channels are held constant, so its state stops;
- the GRU (the paper's GRU-Δt / GRU-D family): at every frame of the grid the last observed
  values, a mask channel (1 where observed) and the time since the last observation; its
  hidden state at the series' last frame is read out.

Criteria: the NCDE's test accuracy drops by at most 5 points from 30% to 70% dropped, and at
70% it beats the GRU (full tier). The quick tier checks that both NCDEs train well above chance.

Seeds (full tier, seeds 0-4): the drop from 30% to 70% is 2.1, 0.5, 3.6, 2.1 and 0.5 points,
always within 5; the NCDE's lead over the GRU at 70% is +0.5, +3.6, +1.0, -1.0 and -1.0 points
(one test series is 0.52 points). So the NCDE's flat accuracy under drops holds robustly on this
set, while its win over a GRU that sees the mask and the time since the last observation is
fragile: it holds for seeds 0-2 and fails by two test series at seeds 3 and 4. On
JapaneseVowels both models sit near 93-97%, far from the paper's 7-point gap to GRU-D on
CharacterTrajectories.

```python
from torchnde.experiments import run_experiment
doc = run_experiment("ncde-missing", quick=True, out="/tmp/ncde-missing")   # needs torchnde[experiments]
print(doc["passed"], [c["measured"] for c in doc["checks"]])
```
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import torchnde as nde
from torchnde.datasets.uea import LabelledSeries, SeriesSplit, japanese_vowels
from torchnde.models import NeuralCDE

from ._framework import Run, experiment

__all__: list[str] = []


def ncde_inputs(data: LabelledSeries) -> torch.Tensor:
    """``[N, T, 14]``: time (NaN past each series' end, so the path is constant there), the 12
    values (NaN where dropped) and the cumulative observation count."""
    inside = torch.arange(data.x.shape[1]) < data.lengths[:, None]
    time = torch.where(inside, data.t, math.nan).unsqueeze(-1)
    observed = ~torch.isnan(data.x[..., :1])
    count = torch.where(inside.unsqueeze(-1), observed.cumsum(1).to(data.x.dtype), math.nan)
    return torch.cat([time, data.x, count], dim=-1)


def gru_inputs(data: LabelledSeries) -> torch.Tensor:
    """``[N, T, 14]``: the last observed values (0 before the first), the observation mask, and
    the time since the last observation (0 before the first)."""
    observed = ~torch.isnan(data.x[..., 0])
    values = torch.nan_to_num(nde.forward_fill(data.x), nan=0.0)
    index = torch.arange(data.x.shape[1])
    last = torch.where(observed, index, -1).cummax(dim=1).values
    since = torch.where(last >= 0, data.t[index] - data.t[last.clamp(min=0)], 0.0)
    return torch.cat([values, observed.unsqueeze(-1).to(values.dtype), since.unsqueeze(-1) / 10], -1)


class GRUClassifier(nn.Module):
    """A GRU over the frames; the class logits from its hidden state at each series' last frame."""

    def __init__(self, channels: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(x)
        last = states[torch.arange(len(x)), lengths - 1]
        return self.readout(last)


Logits = Callable[[nn.Module, "torch.Tensor | None"], torch.Tensor]


def _ncde_logits(data: SeriesSplit) -> Logits:
    """``logits(model, index)``: the NCDE on the training series ``index`` (``None``: the test set)."""
    train, test = ncde_inputs(data.train), ncde_inputs(data.test)

    def logits(model: nn.Module, index: torch.Tensor | None) -> torch.Tensor:
        return model(test, data.test.t) if index is None else model(train[index], data.train.t)

    return logits


def _gru_logits(data: SeriesSplit) -> Logits:
    """``logits(model, index)``: the GRU on the training series ``index`` (``None``: the test set)."""
    train, test = gru_inputs(data.train), gru_inputs(data.test)

    def logits(model: nn.Module, index: torch.Tensor | None) -> torch.Tensor:
        if index is None:
            return model(test, data.test.lengths)
        return model(train[index], data.train.lengths[index])

    return logits


@dataclass(frozen=True)
class _Recipe:
    """How both models are trained: AdamW (decoupled weight decay) with a cosine schedule on
    seeded minibatches of the training series."""

    steps: int
    batch: int
    lr: float
    weight_decay: float


def _train_and_test(
    run: Run,
    tag: str,
    model: nn.Module,
    logits: Logits,
    data: SeriesSplit,
    recipe: _Recipe,
) -> tuple[float, list[float], float]:
    """Train ``model`` on the cross-entropy of ``logits(model, index)`` (the training series
    ``index``; ``None``: the test series); return its test accuracy (%), the training losses
    and the seconds spent training."""
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.steps)
    gen = run.generator(zlib.crc32(tag.encode()) % 997)  # the same minibatches on every run
    n = len(data.train.y)

    def step(i: int) -> dict[str, Any]:
        index = torch.randperm(n, generator=gen)[: recipe.batch]
        loss = nn.functional.cross_entropy(logits(model, index), data.train.y[index])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item()}

    hist = run.train(tag, step, recipe.steps, {"model": model, "opt": opt, "sched": sched, "gen": gen})
    seconds = run.train_seconds[tag]
    with torch.no_grad():
        accuracy = float((logits(model, None).argmax(-1) == data.test.y).double().mean()) * 100
    return accuracy, [h["loss"] for h in hist], seconds


@experiment(
    "ncde-missing",
    title="Neural CDE classification with 30-70% of the points dropped (JapaneseVowels)",
    paper="Kidger, Morrill, Foster, Lyons, Neural controlled differential equations for irregular "
    "time series, NeurIPS 2020, arXiv 2005.08926",
    claim="NCDE accuracy barely changes from 30% to 70% of the points dropped (98.7 / 98.8 / 98.6% on "
    "CharacterTrajectories) and beats GRU-D (94.2 / 90.2 / 91.9%)",
)
def run_ncde_missing(run: Run) -> None:
    """The NCDE and the GRU at each drop rate (quick tier: the NCDE at 30 and 70%, the GRU at 70%)."""
    rates = run.pick((0.3, 0.7), (0.3, 0.5, 0.7))
    recipe = run.pick(_Recipe(40, 128, 1e-2, 0.0), _Recipe(300, 64, 3e-3, 0.5))
    hidden, width = run.pick((16, 32), (32, 64))
    run.note(
        f"JapaneseVowels, 448 training / 192 test series (stratified, seed {run.seed}); NCDE: hidden {hidden}, "
        f"field MLP {hidden}-{width}-{width}-{hidden}x14 (ReLU, tanh last), Hermite path with backward "
        f"differences, rk4 one step per frame; GRU: hidden {2 * hidden}. Both: AdamW lr {recipe.lr}, weight "
        f"decay {recipe.weight_decay}, cosine schedule, {recipe.steps} steps of {recipe.batch} series."
    )
    acc: dict[str, dict[str, float]] = {"ncde": {}, "gru": {}}
    seconds: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    for rate in rates:
        data = japanese_vowels(missing=rate, seed=run.seed)
        label = f"{round(rate * 100)}%"
        channels = data.train.x.shape[-1] + 2  # NCDE: time and count; GRU: mask and time since
        torch.manual_seed(run.seed)
        models: dict[str, tuple[nn.Module, Logits]] = {
            "ncde": (NeuralCDE(channels, hidden, len(data.classes), width=width), _ncde_logits(data))
        }
        if not run.quick or rate == rates[-1]:
            models["gru"] = (GRUClassifier(channels, 2 * hidden, len(data.classes)), _gru_logits(data))
        for name, (model, logits) in models.items():
            acc[name][label], curve, spent = _train_and_test(
                run, f"{name}-{label[:-1]}", model, logits, data, recipe
            )
            curves[f"{name.upper()}, {label} dropped"] = curve
            seconds[f"{name} {label}"] = round(spent, 1)
            sizes[name] = sum(p.numel() for p in model.parameters())
    run.metric("test_accuracy_percent", acc)
    run.metric("train_seconds", seconds)
    run.metric("parameters", sizes)
    _checks(run, acc)
    _figure(run, curves, acc)


def _checks(run: Run, acc: dict[str, dict[str, float]]) -> None:
    chance = 100 / 9
    if run.quick:
        for label, value in acc["ncde"].items():
            run.check(f"NCDE test accuracy at {label} dropped (chance {chance:.1f}%)", value, ">=", 50.0)
        return
    run.check(
        "NCDE accuracy drop from 30% to 70% dropped (points)",
        acc["ncde"]["30%"] - acc["ncde"]["70%"],
        "<=",
        5.0,
        claim="98.7 -> 98.6% on CharacterTrajectories [R]",
    )
    run.note(
        "Fragile: the NCDE's lead over the GRU at 70% dropped is small on JapaneseVowels and depends on the "
        "seed (full tiers of seeds 0-4, 2026-12-07: +0.5, +3.6, +1.0, -1.0, -1.0 points; one test series is "
        "0.52 points), while the accuracy drop from 30% to 70% stayed within 5 points for all five."
    )
    run.check(
        "NCDE minus GRU test accuracy at 70% dropped (points)",
        acc["ncde"]["70%"] - acc["gru"]["70%"],
        ">",
        0.0,
        claim="NCDE 98.6% vs GRU-D 91.9% [R]",
    )


def _figure(run: Run, curves: dict[str, list[float]], acc: dict[str, dict[str, float]]) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, losses in curves.items():
        axes[0].plot(losses, lw=1, label=label)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training cross-entropy")
    axes[0].legend(fontsize=8)
    for name, marker in (("ncde", "o"), ("gru", "s")):
        rates = [int(k[:-1]) for k in acc[name]]
        axes[1].plot(rates, list(acc[name].values()), marker=marker, label=name.upper())
    axes[1].set_xlabel("points dropped (%)")
    axes[1].set_ylabel("test accuracy (%)")
    axes[1].legend()
    run.figure(
        "accuracy_vs_missing",
        fig,
        "Left: training loss. Right: test accuracy of the neural CDE and the GRU against the share of "
        "points dropped at random.",
    )
