r"""Augmented neural ODEs on the two maps no ODE flow can represent (Dupont et al. 2019).

E. Dupont, A. Doucet, Y. W. Teh, *Augmented Neural ODEs*, NeurIPS 2019, arXiv 1904.01681.

- ``anode-g1d``: :math:`g(\pm 1) = \mp 1` in 1-D. A neural ODE's time-1 map is an increasing
  homeomorphism of :math:`\mathbb R`, so its mean squared error on the two points is at least 1
  (both outputs collapse to 0); one augmented dimension lets the trajectories go around each
  other and fit the map.
- ``anode-spheres``: the 2-D ball (label −1, radius ≤ 0.5) inside the shell (label +1, radius
  1..1.5). A neural ODE has to squeeze the ball out between the shell's points, which makes the
  flow stiff: its NFE climbs over training. An ANODE with 5 extra dimensions lifts the ball out
  and needs fewer evaluations, trains faster and reaches ~100% accuracy.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn

from torchnde.datasets.toys import concentric_spheres, g1d
from torchnde.models import AugmentedNeuralODE, NeuralODE

from ._framework import Run, experiment

__all__ = ["FirstCoordinates", "TimeMLP"]


class TimeMLP(nn.Module):
    r"""A time-dependent MLP field :math:`f(t, y) = \mathrm{MLP}([y, t])` (Dupont et al.'s ``ODEFunc``).

    ``dim`` inputs (plus time when ``time_dependent``), ``layers`` hidden layers of width
    ``hidden`` with ``activation`` between them, and ``out`` outputs (default ``dim``). E. Dupont,
    A. Doucet, Y. W. Teh, *Augmented Neural ODEs*, NeurIPS 2019, arXiv 1904.01681 (repository
    ``anode/models.py``: two hidden layers of 32, ReLU, time as an extra input).

    ```python
    import torch
    from torchnde.experiments.anode import TimeMLP
    f = TimeMLP(2, 32)
    f(torch.tensor(0.5), torch.randn(8, 2)).shape  # torch.Size([8, 2])
    ```
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        layers: int = 2,
        activation: type[nn.Module] = nn.ReLU,
        time_dependent: bool = True,
        out: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("layers", layers), ("out", out or 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TimeMLP: {name} must be a positive integer, got {value!r}")
        self.time_dependent = time_dependent
        sizes = [dim + int(time_dependent)] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            mods += [nn.Linear(a, b), activation()]
        mods.append(nn.Linear(sizes[-1], dim if out is None else out))
        self.net = nn.Sequential(*mods)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.time_dependent:
            y = torch.cat([y, t.to(y.dtype).expand(*y.shape[:-1], 1)], dim=-1)
        return self.net(y)


class FirstCoordinates(nn.Module):
    """The fixed read-out :math:`h \\mapsto h_{:k}` (no parameters): the output is the first
    ``k`` coordinates of the (augmented) state.

    Used as ANODE's read-out when the flow itself, not a learned layer, must produce the map
    (Dupont et al., NeurIPS 2019, arXiv 1904.01681, Sec. 4).

    ```python
    import torch
    from torchnde.experiments.anode import FirstCoordinates
    FirstCoordinates(1)(torch.randn(4, 2)).shape  # torch.Size([4, 1])
    ```
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"FirstCoordinates: k must be a positive integer, got {k!r}")
        self.k = k

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h[..., : self.k]


def _history_plot(
    ax: Any, histories: dict[str, list[dict[str, Any]]], key: str, ylabel: str, log: bool
) -> None:
    for label, hist in histories.items():
        ax.plot([h[key] for h in hist], label=label, lw=1)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend()


# -- anode-g1d ---------------------------------------------------------------------------------


@experiment(
    "anode-g1d",
    title="ANODE vs NODE on g(±1) = ∓1",
    paper="Dupont, Doucet, Teh, Augmented Neural ODEs, NeurIPS 2019, arXiv 1904.01681",
    claim="a 1-D neural ODE cannot map ±1 to ∓1 (its flow preserves order, MSE ≥ 1); "
    "with one augmented dimension it can",
)
def run_anode_g1d(run: Run) -> None:
    """NODE (1-D state) vs ANODE (1 zero-augmented dimension, output = first coordinate) on g1d."""
    _anode_g1d(run)


def _anode_g1d(run: Run) -> None:
    import matplotlib.pyplot as plt

    steps = run.pick(250, 1000)
    hidden = 16
    solve = dict(solver="dopri5", rtol=1e-3, atol=1e-3)
    x, y = g1d()
    run.note(
        f"Data: the two points x = ±1 with targets ∓1. Fields: time-dependent MLPs (2 hidden "
        f"layers of {hidden}, ReLU), dopri5 at rtol = atol = 1e-3, t in [0, 1], Adam lr 1e-2, "
        f"{steps} full-batch steps. ANODE's output is the first coordinate of its 2-D state "
        "(a fixed projection, so the flow itself must do the work, as for the NODE)."
    )

    models = {
        "NODE": NeuralODE(TimeMLP(1, hidden), **solve),
        "ANODE(1)": AugmentedNeuralODE(
            TimeMLP(2, hidden), augment_dims=1, readout=FirstCoordinates(1), **solve
        ),
    }
    histories: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    for label, model in models.items():
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)

        def step(i: int, model: nn.Module = model, opt: torch.optim.Optimizer = opt) -> dict[str, Any]:
            opt.zero_grad()
            loss = (model(x) - y).pow(2).mean()
            loss.backward()
            opt.step()
            return {"loss": loss.item(), "nfe": int(model.nfe)}

        tag = label.lower().replace("(1)", "1")
        histories[label] = run.train(tag, step, steps, {"model": model, "opt": opt})
        seconds[label] = run.train_seconds[tag]

    with torch.no_grad():
        final = {label: (m(x) - y).pow(2).mean().item() for label, m in models.items()}
        ts = torch.linspace(0, 1, 50)
        node_traj = models["NODE"](x, ts)[..., 0]  # [50, 2]
        anode = models["ANODE(1)"]
        anode_traj = anode._integrate(anode.vector_field, anode.augment(x), ts)  # [50, 2, 2]
        grid = torch.linspace(-2, 2, 201).reshape(-1, 1)
        node_map = models["NODE"](grid)[:, 0]
    node_best = min(h["loss"] for h in histories["NODE"])
    run.metric("final_mse", final)
    run.metric("node_best_training_mse", node_best)
    run.metric("node_map_min_slope_on_[-2,2]", (node_map.diff() / grid[:, 0].diff()).min().item())
    run.metric("node_outputs", models["NODE"](x).detach().flatten())
    run.metric("anode_outputs", anode(x).detach().flatten())
    run.metric("final_nfe", {k: h[-1]["nfe"] for k, h in histories.items()})
    run.metric("train_seconds", seconds)

    run.check(
        "NODE final MSE (order-preserving flow; theory: >= 1)",
        final["NODE"],
        ">=",
        0.9,
        claim="NODE cannot represent g1d [V]",
    )
    run.check("ANODE(1) final MSE", final["ANODE(1)"], "<=", 1e-2, claim="ANODE represents g1d [V]")

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for j, colour in enumerate(("tab:blue", "tab:red")):
        axes[0].plot(ts, node_traj[:, j], color=colour, label=f"x0 = {x[j, 0]:+.0f} → target {y[j, 0]:+.0f}")
        axes[1].plot(anode_traj[:, j, 0], anode_traj[:, j, 1], color=colour)
        axes[1].scatter(anode_traj[0, j, 0], anode_traj[0, j, 1], color=colour, marker="o")
        axes[1].scatter(anode_traj[-1, j, 0], anode_traj[-1, j, 1], color=colour, marker="*", s=120)
    axes[0].set_xlabel("t")
    axes[0].set_ylabel("x(t)")
    axes[0].set_title(f"NODE trajectories (final MSE {final['NODE']:.3f})")
    axes[0].legend()
    axes[1].axvline(-1, color="grey", ls=":")
    axes[1].axvline(1, color="grey", ls=":")
    axes[1].set_xlabel("x (output coordinate)")
    axes[1].set_ylabel("augmented coordinate a")
    axes[1].set_title(f"ANODE(1) trajectories (final MSE {final['ANODE(1)']:.1e})")
    axes[2].plot(grid[:, 0], node_map, label="NODE time-1 map")
    axes[2].plot(grid[:, 0], -grid[:, 0], "k--", lw=1, label="g(x) = -x on {±1}")
    axes[2].scatter(x[:, 0], y[:, 0], color="k", zorder=3)
    axes[2].set_xlabel("x")
    axes[2].set_ylabel("φ(x)")
    axes[2].set_title("NODE's map is increasing")
    axes[2].legend()
    run.figure(
        "g1d_flows",
        fig,
        "Left: the NODE's two trajectories cannot cross, so both collapse towards 0. "
        "Middle: ANODE(1) trajectories in the augmented plane pass around each other (o start, * end). "
        "Right: the NODE's learned map on [-2, 2] is increasing.",
    )

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    _history_plot(axes[0], histories, "loss", "training MSE", log=True)
    _history_plot(axes[1], histories, "nfe", "forward NFE", log=False)
    run.figure("g1d_training", fig, "Training MSE and forward NFE per step.")


# -- anode-spheres -----------------------------------------------------------------------------


def _accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return (torch.sign(pred) == y).float().mean().item()


@experiment(
    "anode-spheres",
    title="ANODE vs NODE on 2-D concentric spheres",
    paper="Dupont, Doucet, Teh, Augmented Neural ODEs, NeurIPS 2019, arXiv 1904.01681",
    claim="ANODE trains faster, generalises better and needs fewer NFEs; NODE's NFE grows during training",
)
def run_anode_spheres(run: Run) -> None:
    """NODE vs ANODE(5) on Dupont's concentric-spheres configuration, dopri5 at tol 1e-3."""
    _anode_spheres(run)


def _train_spheres(
    run: Run,
    tag: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch: int,
    seed: int,
) -> list[dict[str, Any]]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    per_epoch = math.ceil(len(x) / batch)
    gen = torch.Generator().manual_seed(seed)
    order: list[torch.Tensor] = []

    def step(i: int) -> dict[str, Any]:
        epoch, k = divmod(i, per_epoch)
        while len(order) <= epoch:  # one permutation per epoch, reproducible on resume
            order.append(torch.randperm(len(x), generator=gen))
        idx = order[epoch][k * batch : (k + 1) * batch]
        opt.zero_grad()
        pred = model(x[idx])
        nfe = int(model.nfe)
        loss = nn.functional.smooth_l1_loss(pred, y[idx])
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "nfe": nfe, "acc": _accuracy(pred.detach(), y[idx])}

    return run.train(tag, step, epochs * per_epoch, {"model": model, "opt": opt}, every=per_epoch)


def _anode_spheres(run: Run) -> None:
    import matplotlib.pyplot as plt

    # Full tier: Dupont et al.'s 10 repeats, seeds 10s..10s+9 for experiment seed s (disjoint
    # across experiment seeds). With 3 repeats the NFE ratio of the means moved from 1.45 to 1.79
    # between experiment seeds: one repeat in five has ANODE's NFE grow too (ratio 1.05). With 10
    # repeats it still spans 1.46-1.66 over experiment seeds 0-2 (30 repeats, about 1.55 pooled):
    # the anchor's ">= 1.5" sits inside that spread, so the check is >= 1.3 (robust) and whether
    # the ratio reaches 1.5 is reported (nfe_ratio_at_least_1_5).
    seeds = run.pick([run.seed], [10 * run.seed + k for k in range(10)])
    epochs, inner, outer = 30, 500, 1500
    batch, hidden, augment = 64, 32, 5
    solve = dict(solver="dopri5", rtol=1e-3, atol=1e-3)
    run.note(
        f"Data: concentric spheres in 2-D (r1 = 0.5, r2 = 1.0, r3 = 1.5), {inner} inner / {outer} "
        f"outer training points uniform in area, and a test set of the same size from another seed. "
        f"Models (Dupont et al.'s config): time-dependent MLP field, 2 hidden layers of {hidden}, "
        f"ReLU, linear read-out to 1 output; ANODE appends {augment} zero dimensions. "
        f"dopri5 at rtol = atol = 1e-3, Huber loss, Adam lr 1e-3, batch {batch}, {epochs} epochs, "
        f"seeds {seeds}. 'Final NFE' is the mean forward NFE over the last epoch's batches."
        + (
            " Quick tier: the same configuration with one seed, hence a looser NFE-ratio criterion."
            if run.quick
            else ""
        )
    )
    results: dict[str, dict[str, Any]] = {}
    keep: dict[str, Any] = {}
    per_epoch = math.ceil((inner + outer) / batch)
    for seed in seeds:
        x, y = concentric_spheres(2, inner, outer, seed=1000 + seed)
        x_test, y_test = concentric_spheres(2, inner, outer, seed=2000 + seed)
        for label, aug in (("NODE", 0), ("ANODE", augment)):
            torch.manual_seed(seed)
            model = AugmentedNeuralODE(
                TimeMLP(2 + aug, hidden), augment_dims=aug, readout=nn.Linear(2 + aug, 1), **solve
            )
            tag = f"{label.lower()}-seed{seed}"
            hist = _train_spheres(run, tag, model, x, y, epochs=epochs, batch=batch, seed=seed)
            seconds = run.train_seconds[tag]
            last = hist[-per_epoch:]
            with torch.no_grad():
                pred = model(x_test)
                test_nfe = int(model.nfe)
                test_loss = nn.functional.smooth_l1_loss(pred, y_test).item()
            first_nfe = sum(h["nfe"] for h in hist[:per_epoch]) / per_epoch
            last_nfe = sum(h["nfe"] for h in last) / len(last)
            results[f"{label}/seed{seed}"] = {
                "test_accuracy": _accuracy(pred, y_test),
                "test_loss": test_loss,
                "last_epoch_train_loss": sum(h["loss"] for h in last) / len(last),
                "first_epoch_forward_nfe": first_nfe,
                "last_epoch_forward_nfe": last_nfe,
                "nfe_growth": last_nfe / first_nfe,
                "test_forward_nfe": test_nfe,
                "train_seconds": round(seconds, 1),
            }
            if seed == seeds[0]:
                keep[label] = (model, hist, x_test, y_test)
        ratio = (
            results[f"NODE/seed{seed}"]["last_epoch_forward_nfe"]
            / results[f"ANODE/seed{seed}"]["last_epoch_forward_nfe"]
        )
        results[f"NODE/seed{seed}"]["nfe_ratio_node_over_anode"] = ratio
    run.metric("per_seed", results)

    def mean(label: str, key: str) -> float:
        vals = [results[f"{label}/seed{s}"][key] for s in seeds]
        return sum(vals) / len(vals)

    keys = [k for k in results[f"ANODE/seed{seeds[0]}"]]
    summary = {label: {k: mean(label, k) for k in keys} for label in ("NODE", "ANODE")}
    run.metric("mean_over_seeds", summary)
    nfe_ratio = summary["NODE"]["last_epoch_forward_nfe"] / summary["ANODE"]["last_epoch_forward_nfe"]
    run.metric("nfe_ratio_node_over_anode", nfe_ratio)

    worst_anode = min(results[f"ANODE/seed{s}"]["test_accuracy"] for s in seeds)
    run.check(
        f"ANODE test accuracy (worst of {len(seeds)} seed(s))",
        worst_anode,
        ">=",
        0.99,
        claim="ANODE ~100% on spheres [V, figures]",
    )
    if run.quick:
        run.check(
            "NODE / ANODE final forward NFE (quick tier, one seed: looser, NODE > ANODE; full tier >= 1.3)",
            nfe_ratio,
            ">",
            1.0,
            claim="ANODE uses fewer NFEs [V]",
        )
    else:
        run.metric("nfe_ratio_at_least_1_5", nfe_ratio >= 1.5)
        run.check(
            f"NODE / ANODE final forward NFE (mean over {len(seeds)} seeds; 1.46-1.66 over experiment "
            "seeds 0-2, so >= 1.3 is checked and >= 1.5 reported)",
            nfe_ratio,
            ">=",
            1.3,
            claim="ANODE uses fewer NFEs [V]",
        )
    run.check(
        f"NODE forward NFE growth, last / first epoch (worst of {len(seeds)} seed(s))",
        min(results[f"NODE/seed{s}"]["nfe_growth"] for s in seeds),
        ">=",
        1.3,
        claim="NODE's NFE grows during training [V]",
    )
    run.check(
        "ANODE / NODE last-epoch training loss (mean over seeds)",
        summary["ANODE"]["last_epoch_train_loss"] / summary["NODE"]["last_epoch_train_loss"],
        "<",
        1.0,
        claim="ANODE losses fall faster and lower [V]",
    )

    # figures: training curves, decision regions and the flow of the test points (first seed)
    hists = {label: keep[label][1] for label in keep}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    _history_plot(axes[0], hists, "loss", "training Huber loss (per batch)", log=True)
    _history_plot(axes[1], hists, "nfe", "forward NFE", log=False)
    for label, hist in hists.items():
        epochs_nfe = [
            sum(h["nfe"] for h in hist[e : e + per_epoch]) / per_epoch for e in range(0, len(hist), per_epoch)
        ]
        axes[1].plot(
            [e + per_epoch / 2 for e in range(0, len(hist), per_epoch)],
            epochs_nfe,
            lw=2.5,
            label=f"{label}, epoch mean",
        )
    axes[1].legend()
    run.figure(
        "spheres_training",
        fig,
        f"Loss and forward NFE over training (per batch, and epoch means; seed {seeds[0]}).",
    )

    g = torch.linspace(-2, 2, 121)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    fig, axes = plt.subplots(2, 2, figsize=(10, 10))
    for col, label in enumerate(("NODE", "ANODE")):
        model, _, x_test, y_test = keep[label]
        with torch.no_grad():
            region = model(grid).reshape(g.numel(), g.numel())
            ts = torch.linspace(0, 1, 30)
            traj = model._integrate(model.vector_field, model.augment(x_test), ts)  # [30, N, d]
        ax = axes[0, col]
        ax.contourf(gx, gy, region.clamp(-1.5, 1.5), levels=30, cmap="RdBu_r", alpha=0.8)
        ax.contour(gx, gy, region, levels=[0.0], colors="k", linewidths=1.5)
        ax.scatter(x_test[:, 0], x_test[:, 1], c=y_test[:, 0], cmap="RdBu_r", s=3, edgecolors="none")
        acc = results[f"{label}/seed{seeds[0]}"]["test_accuracy"]
        ax.set_title(f"{label}: output (test accuracy {acc:.1%})")
        ax.set(xlabel="x1", ylabel="x2")
        ax.set_aspect("equal")
        ax = axes[1, col]
        colours = ["tab:blue" if v < 0 else "tab:red" for v in y_test[::8, 0]]
        for j, c in zip(range(0, len(x_test), 8), colours):
            ax.plot(traj[:, j, 0], traj[:, j, 1], color=c, lw=0.4, alpha=0.6)
        ax.scatter(traj[-1, ::8, 0], traj[-1, ::8, 1], c=colours, s=4)
        ax.set_title(f"{label}: flow of test points (coordinates 1-2)")
        ax.set(xlabel="h1(t)", ylabel="h2(t)")
        ax.set_aspect("equal")
    run.figure(
        "spheres_regions_and_flows",
        fig,
        "Top: the model's output over the plane with the 0 level set (black) and the test points. "
        "Bottom: trajectories of every 8th test point in the first two state coordinates; the NODE "
        "must squeeze the inner ball (blue) between the shell's points.",
    )
