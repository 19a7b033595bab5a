r"""Data-controlled and depth-variant neural ODEs (Massaroli et al. 2020).

S. Massaroli, M. Poli, J. Park, A. Yamashita, H. Asama, *Dissecting Neural ODEs*, NeurIPS 2020,
arXiv 2002.08071.

``dissecting-reflection`` has two parts.

1. **Data control.** The reflection :math:`x \mapsto -x` reverses order, so no 1-D flow (vanilla
   NODE) represents it: on :math:`\{-1, +1\}` its MSE is at least 1, on :math:`[-1, 1]` at least
   :math:`\operatorname{Var}(x) = 1/3` (the best increasing fit of a decreasing target is a
   constant). A data-controlled field :math:`\dot z = f_\theta(t, z, x)`, :math:`z(0) = x`,
   sees the input at every depth and needs no augmentation (:math:`f = -2x` is exact).
2. **Depth variance.** Target trajectories of the forced relaxation :math:`\dot z = -z + 2\sin
   2\pi t` go up and down; the trajectories of an autonomous 1-D ODE are monotone in time, so an
   autonomous NODE cannot follow them, while a Galerkin NODE whose weights are
   :math:`\theta(s) = \sum_i \alpha_i\varphi_i(s)` (Fourier basis, 3 modes) can, at the same
   parameter count.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from torchnde.datasets.toys import reflection
from torchnde.models import DataControlledNeuralODE, DepthVariantNeuralODE, NeuralODE

from ._framework import Run, experiment
from .anode import TimeMLP

__all__: list[str] = []


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _fit(
    run: Run,
    tag: str,
    model: nn.Module,
    loss_fn: Any,
    steps: int,
    lr: float,
) -> tuple[list[dict[str, Any]], float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(i: int) -> dict[str, Any]:
        opt.zero_grad()
        loss = loss_fn()
        nfe = int(model.nfe)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "nfe": nfe}

    hist = run.train(tag, step, steps, {"model": model, "opt": opt})
    return hist, run.train_seconds[tag]


def _forced_relaxation(
    z0: torch.Tensor, t: torch.Tensor, amp: float = 2.0, omega: float = 2 * math.pi
) -> torch.Tensor:
    r"""Exact :math:`z(t)` of :math:`\dot z = -z + A\sin\omega t`: ``[len(t), *z0.shape]``.

    :math:`z(t) = z_0 e^{-t} + \frac{A}{1+\omega^2}(\sin\omega t - \omega\cos\omega t + \omega e^{-t})`.
    """
    tt = t.reshape(-1, *([1] * z0.dim())).to(z0.dtype)
    decay = torch.exp(-tt)
    return z0 * decay + amp / (1 + omega**2) * (
        torch.sin(omega * tt) - omega * torch.cos(omega * tt) + omega * decay
    )


@experiment(
    "dissecting-reflection",
    title="Data-controlled and depth-variant (Galerkin) neural ODEs",
    paper="Massaroli, Poli, Park, Yamashita, Asama, Dissecting Neural ODEs, NeurIPS 2020, arXiv 2002.08071",
    claim="a data-controlled NODE learns the reflection x -> -x without augmentation (a vanilla NODE cannot); "
    "depth-variant (Galerkin) NODEs are more parameter-efficient than autonomous ones",
)
def run_dissecting(run: Run) -> None:
    """Reflection with a data-controlled vs vanilla NODE; Galerkin vs autonomous NODE on a forced system."""
    _reflection(run)
    _galerkin(run)


def _reflection(run: Run) -> None:
    import matplotlib.pyplot as plt

    steps = run.pick(100, 600)
    hidden = 16
    solve = dict(solver="dopri5", rtol=1e-4, atol=1e-4)
    x_pts, y_pts = reflection(2, domain="points")
    x_int, y_int = reflection(64, domain="interval", seed=run.seed)
    x_grid, y_grid = reflection(201, domain="grid")
    run.note(
        f"Reflection: data-controlled field f(t, z, x) and vanilla field f(t, z) are time-dependent MLPs "
        f"(2 hidden layers of {hidden}, tanh), z(0) = x, t in [0, 1], dopri5 at rtol = atol = 1e-4, "
        f"Adam lr 1e-2, {steps} full-batch steps. Points: {{-1, +1}}; interval: 64 uniform training "
        "points on [-1, 1], tested on a 201-point grid."
    )

    def dc_model() -> DataControlledNeuralODE:
        return DataControlledNeuralODE(TimeMLP(2, hidden, activation=nn.Tanh, out=1), **solve)

    torch.manual_seed(run.seed)
    models = {
        "data-controlled, points": (dc_model(), x_pts, y_pts, x_pts, y_pts),
        "data-controlled, interval": (dc_model(), x_int, y_int, x_grid, y_grid),
        "vanilla, points": (
            NeuralODE(TimeMLP(1, hidden, activation=nn.Tanh), **solve),
            x_pts,
            y_pts,
            x_pts,
            y_pts,
        ),
        "vanilla, interval": (
            NeuralODE(TimeMLP(1, hidden, activation=nn.Tanh), **solve),
            x_int,
            y_int,
            x_grid,
            y_grid,
        ),
    }
    hists: dict[str, list[dict[str, Any]]] = {}
    test_mse: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for label, (model, x, y, xt, yt) in models.items():
        tag = "reflection-" + label.replace(", ", "-").replace(" ", "_")
        hists[label], seconds[label] = _fit(
            run, tag, model, lambda model=model, x=x, y=y: (model(x) - y).pow(2).mean(), steps, 1e-2
        )
        with torch.no_grad():
            test_mse[label] = (model(xt) - yt).pow(2).mean().item()
    run.metric("reflection_test_mse", test_mse)
    run.metric("reflection_train_seconds", {k: round(v, 1) for k, v in seconds.items()})
    run.metric("reflection_final_forward_nfe", {k: h[-1]["nfe"] for k, h in hists.items()})

    run.check(
        "data-controlled NODE MSE on {-1, +1}",
        test_mse["data-controlled, points"],
        "<=",
        1e-2,
        claim="learnable without augmentation [V]",
    )
    run.check("data-controlled NODE MSE on [-1, 1] (grid)", test_mse["data-controlled, interval"], "<=", 1e-2)
    run.check(
        "vanilla NODE MSE on {-1, +1} (theory: >= 1)",
        test_mse["vanilla, points"],
        ">=",
        0.9,
        claim="a vanilla NODE cannot cross trajectories [V]",
    )
    run.check(
        "vanilla NODE MSE on [-1, 1] (grid; theory: >= Var(x) = 1/3)",
        test_mse["vanilla, interval"],
        ">=",
        0.3,
    )

    ts = torch.linspace(0, 1, 40)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    with torch.no_grad():
        for ax, label in zip(axes[:2], ("data-controlled, interval", "vanilla, interval")):
            model = models[label][0]
            x0 = torch.linspace(-1, 1, 21).reshape(-1, 1)
            traj = model(x0, ts)[..., 0]
            for j in range(x0.shape[0]):
                ax.plot(ts, traj[:, j], color=plt.cm.coolwarm((x0[j, 0].item() + 1) / 2), lw=1)
            ax.set_xlabel("t")
            ax.set_ylabel("z(t)")
            ax.set_title(f"{label}\n(grid MSE {test_mse[label]:.3g})", fontsize=10)
        for label, style in (("data-controlled, interval", "-"), ("vanilla, interval", "-")):
            axes[2].plot(x_grid[:, 0], models[label][0](x_grid)[:, 0], style, label=label.split(",")[0])
        for label, marker in (("data-controlled, points", "o"), ("vanilla, points", "s")):
            axes[2].scatter(
                x_pts[:, 0],
                models[label][0](x_pts)[:, 0],
                marker=marker,
                s=60,
                zorder=3,
                label=f"{label} (MSE {test_mse[label]:.3g})",
            )
    axes[2].plot(x_grid[:, 0], y_grid[:, 0], "k--", lw=1, label="target -x")
    axes[2].set_xlabel("x")
    axes[2].set_ylabel("z(1)")
    axes[2].set_title("learned maps")
    axes[2].legend(fontsize=7)
    run.figure(
        "reflection",
        fig,
        "Left: the data-controlled NODE's trajectories cross (colour = initial x). Middle: the vanilla "
        "NODE's cannot, so its best map is nearly constant. Right: the maps at t = 1 against -x.",
    )

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, hist in hists.items():
        ax.plot([h["loss"] for h in hist], label=label, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training MSE")
    ax.legend(fontsize=8)
    run.figure("reflection_training", fig, "Training MSE of the four reflection runs.")


def _galerkin(run: Run) -> None:
    import matplotlib.pyplot as plt

    steps = run.pick(120, 1000)
    modes, hidden = 3, 8
    solve = dict(solver="dopri5", rtol=1e-5, atol=1e-5)
    t = torch.linspace(0, 1, 21)
    gen = run.generator(7)
    z0 = 2 * torch.rand(64, 1, generator=gen) - 1
    z0_test = torch.linspace(-1, 1, 41).reshape(-1, 1)
    target, target_test = _forced_relaxation(z0, t), _forced_relaxation(z0_test, t)

    torch.manual_seed(run.seed)
    galerkin = DepthVariantNeuralODE(1, [hidden], basis="fourier", modes=modes, **solve)
    n_gal = _n_params(galerkin)
    width = round((n_gal - 1) / 3)  # 1 -> width -> 1 MLP has 3 * width + 1 parameters
    autonomous = NeuralODE(nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, 1)), **solve)
    n_aut = _n_params(autonomous)
    run.note(
        f"Depth variance: target trajectories of z' = -z + 2 sin(2 pi t), z0 uniform on [-1, 1] (64 training, "
        f"41 test initial conditions on a grid), observed at 21 times on [0, 1]; trajectory MSE. Galerkin NODE: "
        f"MLP 1-{hidden}-1 (tanh) whose weights are expanded in a Fourier basis with {modes} modes "
        f"({2 * modes + 1} functions, period 1): {n_gal} parameters. Autonomous NODE: MLP 1-{width}-1 (tanh), "
        f"{n_aut} parameters. dopri5 at rtol = atol = 1e-5, Adam lr 1e-2, {steps} full-batch steps."
    )
    runs = {"Galerkin (Fourier, 3 modes)": galerkin, "autonomous": autonomous}
    hists: dict[str, list[dict[str, Any]]] = {}
    loss: dict[str, float] = {}
    for label, model in runs.items():
        tag = "galerkin" if label.startswith("Galerkin") else "autonomous"
        hists[label], _ = _fit(
            run, tag, model, lambda model=model: (model(z0, t) - target).pow(2).mean(), steps, 1e-2
        )
        with torch.no_grad():
            loss[label] = (model(z0_test, t) - target_test).pow(2).mean().item()
    run.metric("depth_variance_parameters", {"galerkin": n_gal, "autonomous": n_aut})
    run.metric("depth_variance_test_mse", loss)
    run.metric("depth_variance_final_train_mse", {k: h[-1]["loss"] for k, h in hists.items()})
    run.check(
        f"Galerkin / autonomous test MSE ({n_gal} vs {n_aut} parameters)",
        loss["Galerkin (Fourier, 3 modes)"] / loss["autonomous"],
        "<",
        1.0,
        claim="depth-variant NODEs are more parameter-efficient [V, summary]",
    )

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    with torch.no_grad():
        for ax, (label, model) in zip(axes[:2], runs.items()):
            pred = model(z0_test, t)
            for j in range(0, 41, 5):
                colour = plt.cm.viridis(j / 40)
                ax.plot(t, target_test[:, j, 0], color=colour, lw=2.5, alpha=0.35)
                ax.plot(t, pred[:, j, 0], color=colour, ls="--", lw=1)
            ax.set_xlabel("t")
            ax.set_ylabel("z(t)")
            ax.set_title(f"{label}: test MSE {loss[label]:.2e}")
    for label, hist in hists.items():
        axes[2].plot([h["loss"] for h in hist], label=label, lw=1)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("training MSE")
    axes[2].legend()
    run.figure(
        "galerkin_vs_autonomous",
        fig,
        "Target trajectories (thick, faint) and model trajectories (dashed): an autonomous 1-D field "
        "gives monotone trajectories; the Galerkin NODE's depth-varying weights follow the forcing.",
    )
