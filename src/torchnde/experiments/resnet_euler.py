r"""``resnet-euler``: a weight-tied ResNet is the explicit Euler method on the ODE-Net's field.

A residual network whose blocks share one function :math:`f_\theta`,

.. math::  x_{k+1} = x_k + \tfrac1L f_\theta(t_k, x_k), \qquad t_k = k/L, \quad k = 0, \dots, L-1,

is exactly the explicit Euler method with step :math:`h = 1/L` on :math:`\dot x = f_\theta(t, x)`
over :math:`[0, 1]`. As the depth :math:`L` grows, :math:`x_L` converges to the ODE-Net's output
:math:`x(1)` with error :math:`O(1/L)` (Euler's order); the same blocks taken as classical RK4
steps (an RK-Net) converge as :math:`O(1/L^4)`. R. T. Q. Chen, Y. Rubanova, J. Bettencourt,
D. Duvenaud, *Neural Ordinary Differential Equations*, NeurIPS 2018, arXiv 1806.07366, Sec. 2
(residual networks "can be seen as an Euler discretization of a continuous transformation");
E. Haber, L. Ruthotto, *Stable architectures for deep neural networks*, Inverse Problems 34
(2018), arXiv 1705.03341; W. E, *A proposal on machine learning via dynamical systems*, Commun.
Math. Stat. 5 (2017) 1–11.

The experiment shows it numerically in float64, for a fixed random MLP field and for a field
trained briefly as an ODE-Net classifier on two moons:

- the ResNet with step :math:`1/L` equals ``nde.solve(f, x, [0, 1], solver="euler", dt=1/L)`` to
  round-off (max abs difference at most 1e-12), and the RK-Net equals ``solver="rk4"``;
- the relative error :math:`\lVert \mathrm{ResNet}_L(x) - x(1)\rVert / \lVert x(1)\rVert` over
  a batch, against :math:`x(1)` from dopri5 at rtol = atol = 1e-12, has a log–log slope within
  0.85–1.15 over the asymptotic range, the last four depths (:math:`L \ge 128` for :math:`L` up to
  1024; RK4: 3.5–4.5 over :math:`L \ge 8`, points above the reference's accuracy);
- the trained classifier's predictions through :math:`\mathrm{ResNet}_L` approach the ODE-Net's:
  the share of test points classified as the ODE-Net classifies them reaches at least 99.5% at
  the largest depth, and the accuracies agree there within half a point.

```python
import torch
from torchnde.experiments.resnet_euler import residual_network
f = lambda t, x: -x
residual_network(f, torch.ones(1, dtype=torch.float64), 4)   # (1 - 1/4)^4 = 0.3164...
```
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import torchnde as nde

from ._fits import loglog_slope
from ._framework import Run, experiment
from .anode import TimeMLP

__all__ = ["asymptotic_slope", "residual_network", "two_moons"]

_METHODS = ("euler", "rk4")


def residual_network(
    field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    steps: int,
    *,
    method: str = "euler",
) -> torch.Tensor:
    r"""The weight-tied residual network of depth ``steps`` on ``field`` over :math:`t \in [0, 1]`.

    With :math:`h = 1/L` and :math:`t_k = k h`, block :math:`k` maps :math:`x_k` to
    :math:`x_{k+1} = x_k + h\,\Phi(t_k, x_k)`, where :math:`\Phi = f` for ``method="euler"`` (a
    ResNet: Euler's method) and :math:`\Phi = (k_1 + 2k_2 + 2k_3 + k_4)/6` for ``method="rk4"``
    (an RK-Net: classical Runge–Kutta steps). Gradients flow by ordinary backprop through the
    blocks (memory grows with ``steps``, as in a ResNet).

    ```python
    import torch
    from torchnde.experiments.resnet_euler import residual_network
    x = torch.ones(2, dtype=torch.float64)
    residual_network(lambda t, y: y, x, 8)               # (1 + 1/8)^8 = 2.5658 each
    residual_network(lambda t, y: y, x, 8, method="rk4") # 2.71828 (e to 5e-6)
    ```
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"residual_network: steps must be a positive integer (the depth L), got {steps!r}")
    if method not in _METHODS:
        raise ValueError(f"residual_network: unknown method {method!r}; valid: {', '.join(_METHODS)}")
    h = 1.0 / steps
    for k in range(steps):
        t = torch.tensor(k * h, dtype=x.dtype, device=x.device)
        if method == "euler":
            x = x + h * field(t, x)
            continue
        k1 = field(t, x)
        k2 = field(t + h / 2, x + (h / 2) * k1)
        k3 = field(t + h / 2, x + (h / 2) * k2)
        k4 = field(t + h, x + h * k3)
        x = x + h * ((k1 + 2 * k2 + 2 * k3 + k4) / 6)
    return x


def asymptotic_slope(
    depths: list[int], errors: list[float], *, min_depth: int = 1, floor: float = 0.0
) -> tuple[float, list[int]]:
    """The log–log slope of ``errors`` against ``1 / depths`` over the asymptotic range.

    The range is the depths at least ``min_depth`` whose error is above ``floor`` (the
    reference's own accuracy, below which the error no longer measures the discretisation);
    returns the slope (the observed order: 1 for Euler, 4 for RK4) and the depths used. At least
    two depths must remain.

    ```python
    from torchnde.experiments.resnet_euler import asymptotic_slope
    asymptotic_slope([1, 2, 4, 8, 16], [2.0, 0.5, 0.25, 0.125, 1e-14], min_depth=2, floor=1e-12)
    # (1.0, [2, 4, 8])
    ```
    """
    if len(depths) != len(errors):
        raise ValueError(f"asymptotic_slope: {len(depths)} depths but {len(errors)} errors")
    used = [(d, e) for d, e in zip(depths, errors) if d >= min_depth and e > floor]
    if len(used) < 2:
        raise ValueError(
            f"asymptotic_slope: fewer than two depths >= {min_depth} with error above {floor:g}; "
            "lower min_depth or floor, or measure more depths"
        )
    return -loglog_slope([d for d, _ in used], [e for _, e in used]), [d for d, _ in used]


def two_moons(count: int, *, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``count`` points of the two interleaving half circles, labels 0 (upper) and 1 (lower), float64.

    The upper moon is :math:`(\cos s, \sin s)`, the lower :math:`(1 - \cos s, \tfrac12 - \sin s)`,
    :math:`s` uniform on :math:`[0, \pi]`, plus Gaussian noise of standard deviation ``noise``.

    ```python
    from torchnde.experiments.resnet_euler import two_moons
    x, y = two_moons(200, seed=1)    # x [200, 2], y [200] in {0, 1}
    ```
    """
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    s = torch.rand(count, generator=gen, dtype=torch.float64) * math.pi
    upper = torch.stack([torch.cos(s), torch.sin(s)], dim=1)
    lower = torch.stack([1 - torch.cos(s), 0.5 - torch.sin(s)], dim=1)
    x = torch.where(labels[:, None] == 0, upper, lower)
    x = x + noise * torch.randn(count, 2, generator=gen, dtype=torch.float64)
    return x, labels


def _reference(field: nn.Module, x: torch.Tensor) -> torch.Tensor:
    t = torch.tensor([0.0, 1.0], dtype=x.dtype)
    return nde.solve(field, x, t, solver="dopri5", rtol=1e-12, atol=1e-12).ys[-1]


def _study(field: nn.Module, x: torch.Tensor, depths: dict[str, list[int]]) -> dict[str, Any]:
    """Errors of the ResNet and RK-Net against the tight ODE solve, and their match with the
    library's fixed-step solves, at every depth."""
    t = torch.tensor([0.0, 1.0], dtype=x.dtype)
    with torch.no_grad():
        ref = _reference(field, x)
        out: dict[str, Any] = {"reference": ref, "outputs": {}, "errors": {}, "match": {}}
        for method in _METHODS:
            outputs, errors, match = [], [], []
            for depth in depths[method]:
                y = residual_network(field, x, depth, method=method)
                solved = nde.solve(field, x, t, solver=method, dt=1.0 / depth).ys[-1]
                outputs.append(y)
                errors.append(float((y - ref).norm() / ref.norm()))
                match.append(float((y - solved).abs().max()))
            out["outputs"][method] = outputs
            out["errors"][method] = errors
            out["match"][method] = match
    return out


def _train(run: Run, x: torch.Tensor, y: torch.Tensor, hidden: int, steps: int) -> tuple[TimeMLP, nn.Linear]:
    field = TimeMLP(2, hidden, activation=nn.Tanh).double()
    readout = nn.Linear(2, 2).double()
    opt = torch.optim.Adam([*field.parameters(), *readout.parameters()], lr=1e-2)

    def step(i: int) -> dict[str, Any]:
        opt.zero_grad()
        logits = readout(residual_network(field, x, 8, method="rk4"))
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    run.train("odenet", step, steps, {"field": field, "readout": readout, "opt": opt})
    return field, readout


@experiment(
    "resnet-euler",
    title="A weight-tied ResNet is Euler's method on the ODE-Net's field",
    paper="Chen, Rubanova, Bettencourt, Duvenaud, Neural ODEs, NeurIPS 2018, arXiv 1806.07366 (Sec. 2); "
    "Haber & Ruthotto 2017; E 2017",
    claim="x_{k+1} = x_k + f(t_k, x_k)/L is explicit Euler with step 1/L and converges to the "
    "ODE-Net's flow with error O(1/L) (RK4 steps: O(1/L^4))",
)
def run_resnet_euler(run: Run) -> None:
    """Convergence of weight-tied ResNets / RK-Nets to the ODE-Net, random and trained fields."""
    _resnet_euler(run)


def _resnet_euler(run: Run) -> None:
    # A random field's RK4 error reaches the reference's accuracy (~1e-13) by L = 64; a trained
    # field is stiffer and needs L = 128 to be in RK4's asymptotic range. Euler's local slope on a
    # trained field still climbs from 0.7-0.9 at L ~ 32 (seeds 0-4) to 0.93-1.0 at L ~ 512, so
    # the slope is fitted over the last four depths, L >= 128 (full tier: L >= 512).
    depths = {"euler": [2**k for k in range(run.pick(11, 13))], "rk4": [2**k for k in range(8)]}
    batch, hidden = run.pick(128, 512), run.pick(16, 32)
    train_steps = run.pick(100, 300)
    floor = 1e-11  # the reference (dopri5 at 1e-12) is good to ~2e-13; errors below this are not fitted
    fit_from = {"euler": depths["euler"][-4], "rk4": 8}
    run.note(
        f"Float64 throughout. ResNet_L: x_(k+1) = x_k + f(t_k, x_k)/L, t_k = k/L, for L in {depths['euler']}; "
        f"RK-Net_L: the same blocks as classical RK4 steps, L in {depths['rk4']}. Reference ODE-Net output x(1): nde.solve with "
        f"dopri5 at rtol = atol = 1e-12. Error: ||ResNet_L(x) - x(1)||_F / ||x(1)||_F over {batch} points. "
        f"Slopes: least squares of log error against log L over L >= {fit_from['euler']} (Euler) and L >= 8 (RK4), points "
        f"with error above {floor:g}. Random field: a time-dependent MLP (2 hidden layers of {hidden}, tanh), "
        "PyTorch's default initialisation. Trained field: the same architecture with a linear read-out "
        f"to 2 logits, trained as an ODE-Net (8 RK4 steps, backprop) on {batch} two-moons points "
        f"(noise 0.1), Adam lr 1e-2, {train_steps} full-batch steps; predictions compared on "
        f"{batch} test points from another seed."
    )
    x_train, y_train = two_moons(batch, seed=1000 + run.seed)
    x_test, y_test = two_moons(batch, seed=2000 + run.seed)

    random_field = TimeMLP(2, hidden, activation=nn.Tanh).double()
    studies = {"random": _study(random_field, x_test, depths)}
    field, readout = _train(run, x_train, y_train, hidden, train_steps)
    studies["trained"] = _study(field, x_test, depths)

    slopes: dict[str, dict[str, float]] = {}
    fitted: dict[str, dict[str, list[int]]] = {}
    for label, study in studies.items():
        run.metric(f"{label}_relative_error", {m: dict(zip(depths[m], study["errors"][m])) for m in _METHODS})
        run.metric(f"{label}_max_abs_difference_from_solve", {m: max(study["match"][m]) for m in _METHODS})
        slopes[label], fitted[label] = {}, {}
        for method in _METHODS:
            errors = study["errors"][method]
            slope, used = asymptotic_slope(depths[method], errors, min_depth=fit_from[method], floor=floor)
            slopes[label][method], fitted[label][method] = slope, used
            run.metric(f"{label}_{method}_slope_depths", used)
    run.metric("slopes", slopes)

    with torch.no_grad():
        ode_pred = readout(studies["trained"]["reference"]).argmax(1)
        ode_acc = float((ode_pred == y_test).double().mean())
        agree, acc = [], []
        for y in studies["trained"]["outputs"]["euler"]:
            pred = readout(y).argmax(1)
            agree.append(float((pred == ode_pred).double().mean()))
            acc.append(float((pred == y_test).double().mean()))
    run.metric("odenet_test_accuracy", ode_acc)
    run.metric("resnet_test_accuracy", dict(zip(depths["euler"], acc)))
    run.metric("resnet_agreement_with_odenet", dict(zip(depths["euler"], agree)))

    # (network, what the identity shows, the method's order, tolerance on the slope)
    names = {
        "euler": ("ResNet", "a weight-tied ResNet IS Euler's method", 1, 0.15),
        "rk4": ("RK-Net", "an RK-Net IS classical RK4", 4, 0.5),
    }
    for label in studies:
        for method, (net, identity, order, tolerance) in names.items():
            run.check(
                f"{label} field: max |{net}_L - solve({method}, dt=1/L)| over L",
                max(studies[label]["match"][method]),
                "<=",
                1e-12,
                claim=identity,
            )
            run.check(
                f"{label} field: |slope - {order}| of the {net} error against L on log-log axes "
                f"(L >= {fit_from[method]})",
                abs(slopes[label][method] - order),
                "<=",
                tolerance,
                claim=f"{net}_L -> ODE-Net with error O(1/L^{order})"
                if order > 1
                else f"{net}_L -> ODE-Net with error O(1/L)",
            )
    run.check(
        f"trained: ResNet_{depths['euler'][-1]} predictions equal to the ODE-Net's (share of test points)",
        agree[-1],
        ">=",
        0.995,
        claim="the ResNet's predictions approach the ODE-Net's",
    )
    run.check(
        f"trained: |accuracy(ResNet_{depths['euler'][-1]}) - accuracy(ODE-Net)|",
        abs(acc[-1] - ode_acc),
        "<=",
        0.005,
        claim="the ResNet's accuracy approaches the ODE-Net's",
    )
    _figures(run, depths, studies, slopes, fitted, agree, acc, ode_acc)


def _figures(
    run: Run,
    depths: dict[str, list[int]],
    studies: dict[str, dict[str, Any]],
    slopes: dict[str, dict[str, float]],
    fitted: dict[str, dict[str, list[int]]],
    agree: list[float],
    acc: list[float],
    ode_acc: float,
) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, label in zip(axes[:2], ("random", "trained")):
        errors = studies[label]["errors"]
        for method, colour, order, name in (
            ("euler", "tab:blue", 1, "ResNet (Euler)"),
            ("rk4", "tab:red", 4, "RK-Net (RK4)"),
        ):
            ax.plot(
                depths[method],
                errors[method],
                "o-",
                color=colour,
                label=f"{name}: slope −{slopes[label][method]:.2f}",
            )
            # the reference line passes through the last fitted point
            last = fitted[label][method][-1]
            anchor = errors[method][depths[method].index(last)] * last**order
            ax.plot(
                depths[method],
                [anchor / d**order for d in depths[method]],
                "--",
                color=colour,
                lw=0.8,
                label=f"reference O(1/L^{order})" if order > 1 else "reference O(1/L)",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylim(1e-14, 10)
        ax.set(xlabel="depth L (step 1/L)", ylabel="relative error vs ODE-Net x(1)", title=f"{label} field")
        ax.legend(fontsize=8, loc="lower left")
    ax = axes[2]
    ax.plot(depths["euler"], [100 * a for a in agree], "o-", label="predictions equal to the ODE-Net's")
    ax.plot(depths["euler"], [100 * a for a in acc], "s-", label="ResNet_L test accuracy")
    ax.axhline(100 * ode_acc, color="k", ls=":", label=f"ODE-Net test accuracy {ode_acc:.1%}")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="depth L (step 1/L)", ylabel="% of test points", title="trained classifier")
    ax.legend(fontsize=8, loc="lower right")
    ticks = depths["euler"][:: 1 if len(depths["euler"]) <= 9 else 2]  # 4-digit labels need room
    for ax in axes:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(d) for d in ticks])
    run.figure(
        "resnet_euler",
        fig,
        "Left, middle: relative error of the weight-tied ResNet (Euler steps) and RK-Net (RK4 steps) "
        "of depth L against the ODE-Net's output (dopri5 at 1e-12), for a random and a trained field, "
        "with the slopes fitted over the asymptotic range and reference lines O(1/L), O(1/L^4) through its "
        "last point. Right: the trained classifier through "
        "ResNet_L against the ODE-Net.",
    )
