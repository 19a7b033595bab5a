r"""Universal differential equation on Lotka–Volterra, then equation discovery (the main job).

Rackauckas et al., *Universal Differential Equations for Scientific Machine Learning*, arXiv
2001.04385, 2020, scenario 1 (repository ``LotkaVolterra/scenario_1.jl``):

1. Data: :math:`\dot x = \alpha x - \beta x y`, :math:`\dot y = \gamma x y - \delta y`,
   :math:`(\alpha, \beta, \gamma, \delta) = (1.3, 0.9, 0.8, 1.8)`, 31 noisy points on [0, 3]
   (noise 5% of each state's mean).
2. UDE: :math:`\dot x = \alpha x + U_1(x, y)`, :math:`\dot y = -\delta y + U_2(x, y)` with the
   known :math:`\alpha, \delta` and a 2-5-5-5-2 network with Gaussian RBF activations
   :math:`e^{-z^2}` (87 parameters), trained from the first noisy point with Adam(0.1) for 200
   steps, then L-BFGS, on the sum of squared errors. A fit at the noise level has
   :math:`\mathrm{SSE} \approx N\sigma^2` (:math:`N = 62` values); while the SSE is above twice
   that, the network is retrained from a fresh draw (at most 3 times, seeded from the run's
   seed; ``fit_staged(target_loss=, restarts=)``). Over seeds 0-9 (quick tier) seeds 1, 4 and 9
   ended Adam + L-BFGS at 2.5x-3x and seed 8 at 14x (a stalled L-BFGS); one or two restarts
   bring each to 1.2x-1.8x (held-out seed 11: three, 3.3x to 0.75x).
3. Discovery: sample :math:`U` along the fitted trajectory (every 0.05), STLSQ sweep over a
   degree-5 polynomial + sin library, Pareto choice; then the candidates of the sweep are
   scored on the data (refit + BIC) and pruned (:meth:`torchnde.discovery.Discovery.refine`).
4. Extrapolate the discovered hybrid model to t = 20 and compare with the true structure
   refitted to the same data (the oracle: what these 31 points allow) and with a plain neural
   ODE (the same network as the whole field) trained the same way.

**What holds, and what is fragile** (quick tier; seeds 0-9 to develop, 10-14 held out and run
once). Checked, because it held for every seed: the fit at the noise level, exactly x·y in
dx/dt with β within 15% (within 4%), the discovered model's BIC within 2 of the oracle's, and
the plain neural ODE's relative error past t = 3 above 100% (at least 173%). Reported only:

- exactly x·y in dy/dt (``exact_structure``): 8 of seeds 0-9, 2 of the held-out 10-14 (10 of
  15). For seeds 2 and 6 the 31 points prefer :math:`U_y = c\,y` by 4.8 and 3.0 in BIC (so
  does the network's own output, for seed 6); for 10, 11 and 14 they prefer
  :math:`c\,y + c' x^2`, :math:`c\,y^2`, :math:`c\,y^2 + c' \sin x` by 3.5, 0.6 and 4.6:
  the data cannot tell these apart, and most of them blow up past t = 3.
  Letting the network's output decide within a BIC window of 6
  (``refine(tiebreak="targets")``) fixes seed 2 but breaks seeds 6 and 8: not used.
- γ within 15% and the extrapolation (hybrid error at t = 20 at most 1.1x the oracle's, below
  the neural ODE's): hold exactly where dy/dt is x·y (the recovered model is then the oracle).
- the error at t = 20 below 25% (``hybrid_at_20_below_25_percent``): 6 of 0-9, 1 of 10-14; below 10%, the
  paper's figure (``ten_percent_at_20``): 3 of 0-9, 0 of 10-14. The oracle itself misses y(20) by up to 55%
  (seed 13; seed 5: 48%, γ 13.5% off): 31 noisy points on [0, 3] do not pin γ well enough for three cycles.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from .._optional import require
from ..datasets.systems import lotka_volterra
from ..discovery import discover
from ..models.universal import UniversalODE, fit_staged
from ._framework import Run, experiment

TRUE = {"alpha": 1.3, "beta": 0.9, "gamma": 0.8, "delta": 1.8}
KNOWN = {"alpha": TRUE["alpha"], "delta": TRUE["delta"]}
# Training is retried from a fresh initialisation (up to RESTARTS times) while the SSE is above
# TARGET_OVER_FLOOR times the noise level N σ² (fit_staged's target_loss).
TARGET_OVER_FLOOR = 2.0
RESTARTS = 3
FRAGILE = (
    "Fragile claims, reported, not checked: exactly x·y in dy/dt (exact_structure), γ within 10%, the "
    "recovered model extrapolating as well as the true structure refitted to the same data "
    "(hybrid_over_oracle_at_20) and better than the plain neural ODE, and its error at t = 20 below 25% "
    "(hybrid_at_20_below_25_percent) or 10% (ten_percent_at_20). For some seeds 31 points at 5% noise "
    "prefer U_y = c·y by a few units of BIC, and even the true structure refitted to them misses y(20) by "
    "up to 55%; exactly x·y in dy/dt held for 10 of seeds 0-14, see the module docstring for the seed counts."
)


class GaussianRBF(nn.Module):
    """The activation :math:`e^{-z^2}` of the paper's network (Rackauckas et al., arXiv 2001.04385).

    ```python
    GaussianRBF()(torch.zeros(3))   # tensor([1., 1., 1.])
    ```
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`e^{-z^2}` elementwise."""
        return torch.exp(-(z**2))


def rbf_network(dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """The paper's 2-5-5-5-2 network with Gaussian RBF activations (87 parameters).

    Rackauckas et al., arXiv 2001.04385, 2020 (``scenario_1.jl``); PyTorch's default
    initialisation (Lux's is Glorot-uniform weights and zero biases).

    ```python
    sum(p.numel() for p in rbf_network().parameters())   # 87
    ```
    """
    return nn.Sequential(
        nn.Linear(2, 5),
        GaussianRBF(),
        nn.Linear(5, 5),
        GaussianRBF(),
        nn.Linear(5, 5),
        GaussianRBF(),
        nn.Linear(5, 2),
    ).to(dtype)


def known_part(t: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    r"""The trusted physics of scenario 1: :math:`(\alpha x, -\delta y)` (Rackauckas et al., arXiv 2001.04385).

    ```python
    known_part(0.0, torch.tensor([2.0, 3.0]), 1.3, 1.8)   # tensor([ 2.6000, -5.4000])
    ```
    """
    return torch.stack([alpha * u[..., 0], -delta * u[..., 1]], dim=-1)


def _rel(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Relative L2 error over all the given points; ``inf`` when the prediction is not finite."""
    if not bool(torch.isfinite(pred).all()):
        return math.inf
    return float((pred - truth).norm() / truth.norm())


def _sindy_on_data(t: torch.Tensor, noisy: torch.Tensor) -> Any:
    """The paper's comparison: SINDy on the raw data, derivatives by finite differences."""
    ps = require("pysindy", extra="experiments", purpose="SINDy on the raw data")

    x = noisy.numpy()
    dx = np.asarray(ps.FiniteDifference()(x, t.numpy()))
    missing = dx - known_part(t, noisy, torch.tensor(KNOWN["alpha"]), torch.tensor(KNOWN["delta"])).numpy()
    return discover(
        torch.from_numpy(missing),
        noisy,
        library="polynomial+sin",
        degree=5,
        feature_names=["x", "y"],
        labels=["U_x", "U_y"],
    )


def _refine(run: Run, what: str, found: Any, y0: torch.Tensor, t: torch.Tensor, noisy: torch.Tensor) -> Any:
    """``found.refine(...)`` on the data as a stage of ``run``, with progress per structure scored."""
    with run.stage(what, total=1, unit="structure") as bar:

        def progress(done: int, planned: int) -> None:
            bar.total = planned
            bar.update(done - bar.n)

        return found.refine(
            known_part,
            y0,
            t,
            noisy,
            params=KNOWN,
            max_terms=3,
            progress=progress,
        )


def _trajectory(model: UniversalODE, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model._solve(model.vector_field, y0, t, throw=False, max_steps=20_000).ys


@experiment(
    "ude-lotka-volterra",
    title="Universal differential equation + sparse regression recovers the Lotka–Volterra interaction",
    paper="Rackauckas et al., Universal Differential Equations for Scientific Machine Learning, arXiv 2001.04385 (2020)",
    claim=(
        "SINDy on the UDE's learned term recovers exactly the x·y interaction in each equation "
        "(β = 0.9, γ = 0.8) from 31 noisy points on [0, 3], and the recovered model extrapolates far "
        "beyond the training window, unlike a purely neural model"
    ),
)
def run_ude(run: Run) -> None:
    """Train the UDE and a plain neural ODE, discover the missing terms, extrapolate, check, plot."""
    dtype = torch.float64
    torch.set_default_dtype(dtype)
    t, clean, noisy, info = lotka_volterra(seed=run.seed, dtype=dtype)
    run.metric("noise_std", info["noise_std"])
    y0 = noisy[0]
    adam_steps = 200
    lbfgs_steps = run.pick(8, 12)  # x 10 L-BFGS iterations each
    run.note(
        f"Data: 31 points on [0, 3], 5% noise (seed {run.seed}). Training: Adam(0.1) x {adam_steps}, then "
        f"L-BFGS x {10 * lbfgs_steps} iterations, from the first noisy point (as scenario_1.jl)."
    )

    # A fit at the noise level has SSE about N σ² (N values); one twice that is a local minimum or
    # a stalled optimiser (seed 8's L-BFGS stalls at 14x), so retrain from a fresh draw.
    floor = len(t) * float(torch.tensor(info["noise_std"]).pow(2).sum())
    recipe = {
        "network_steps": adam_steps,
        "lbfgs_steps": lbfgs_steps,
        "lr": 0.1,
        "target_loss": TARGET_OVER_FLOOR * floor,
        "restarts": RESTARTS,
        "train": run.train,
    }
    run.metric("noise_floor_sse", floor)

    # -- the UDE -----------------------------------------------------------------------------
    ude = UniversalODE(
        known_part, rbf_network(dtype), params=KNOWN, trainable=False, solver="tsit5", rtol=1e-6, atol=1e-6
    )
    n_params = sum(p.numel() for p in ude.network_parameters())
    run.metric("network_parameters", n_params)
    fit = fit_staged(ude, y0, t, noisy, seed=1000 * run.seed + 100, tag="ude", **recipe)
    run.metric("ude_train_sse", fit.final_loss)
    run.metric("ude_sse_over_floor", fit.final_loss / floor)
    run.metric("ude_restarts", fit.restarts)
    run.metric("ude_attempts_sse_over_floor", [a / floor for a in fit.attempts])
    run.metric("noise_sse", float((noisy - clean).pow(2).sum()))

    # -- a plain neural ODE, same network and recipe ---------------------------------------------
    node = UniversalODE(
        None, rbf_network(dtype), solver="tsit5", rtol=1e-6, atol=1e-6, throw=False, max_steps=5000
    )
    node_fit = fit_staged(node, y0, t, noisy, seed=1000 * run.seed + 200, tag="node", **recipe)
    run.metric("node_train_sse", node_fit.final_loss)
    run.metric("node_sse_over_floor", node_fit.final_loss / floor)
    run.metric("node_restarts", node_fit.restarts)
    run.note(
        f"Fits at the noise level: the SSE of a fit that reached the noise has about N σ² = {floor:.4f} "
        f"(N = {noisy.numel()} values); while a fit ends above {TARGET_OVER_FLOOR:g}x that, it is retrained "
        f"from a fresh initialisation (at most {RESTARTS} times; the best attempt is kept). This run: the UDE "
        f"ended at {fit.final_loss / floor:.2f}x after {fit.restarts} restart(s), the plain neural ODE at "
        f"{node_fit.final_loss / floor:.2f}x after {node_fit.restarts}."
    )
    t_train = sum(run.train_seconds.values())  # every stage of both fits, resumed ones whole

    # -- discovery on the learned term ------------------------------------------------------------
    t1 = time.perf_counter()
    with run.stage("discovery: sparse regression (STLSQ sweep) on the network's output"):
        ts = torch.linspace(0.0, 3.0, 61, dtype=dtype)
        states = _trajectory(ude, y0, ts)
        with torch.no_grad():
            learned = ude.learned_term(states)
        result = discover(
            learned,
            states,
            library="polynomial+sin",
            degree=5,
            criterion="pareto",
            feature_names=["x", "y"],
            labels=["U_x", "U_y"],
        )
    run.note(
        "SINDy on the network's output (regression-space Pareto choice):\n\n```\n" + str(result) + "\n```"
    )
    refined = _refine(
        run, "discovery: refitting candidate structures to the data (BIC)", result, y0, t, noisy
    )
    final = refined.discovery
    run.note(
        "After scoring the regression's candidate structures on the data (refit + BIC), pruning, and a final "
        "refit of the coefficients and the initial state:\n\n```\n" + str(final) + "\n```"
    )
    t_discovery = time.perf_counter() - t1

    # The same refit with the true structure given (an oracle): what these 31 points allow at best.
    xy = result.library.names.index("x*y")
    oracle_xi = np.zeros_like(result.coefficients)
    oracle_xi[0, xy], oracle_xi[1, xy] = -TRUE["beta"], TRUE["gamma"]
    if all(final.support(i) == ["x*y"] for i in range(2)):
        oracle = refined  # the discovered structure is the true one: same fit
    else:
        with run.stage("refitting the true structure (the oracle)"):
            oracle = replace(result, coefficients=oracle_xi).refit(
                known_part, y0, t, noisy, params=KNOWN, steps=100, rtol=1e-8, atol=1e-10
            )

    # SINDy directly on the data (finite-difference derivatives minus the known part), as in the paper.
    with run.stage("SINDy directly on the noisy data (the paper's comparison)"):
        raw = _sindy_on_data(t, noisy)
    run.metric("raw_data_sindy_equations", str(raw))
    run.note(
        "SINDy directly on the noisy data (finite differences, same library, Pareto choice):\n\n```\n"
        + str(raw)
        + "\n```"
    )
    if not run.quick:
        # The same data-based selection, fed with candidates from the raw-data regression instead.
        raw_refined = _refine(
            run, "refitting the raw-data regression's candidate structures to the data", raw, y0, t, noisy
        ).discovery
        run.metric("raw_data_sindy_refined_equations", str(raw_refined))
        run.metric(
            "raw_data_sindy_refined_exact",
            all(raw_refined.support(i) == ["x*y"] for i in range(2)),
        )
        run.note(
            "The same data-based selection with the raw-data regression's candidates instead of the "
            "network's:\n\n```\n" + str(raw_refined) + "\n```"
        )
    run.metric(
        "candidates_scored",
        [{"terms": c["terms"], "sse": c["sse"], "bic": c["score"]} for c in refined.candidates],
    )

    exact = []
    for i in range(2):
        support = final.support(i)
        wrong = len([s for s in support if s != "x*y"]) + (0 if "x*y" in support else 1)
        exact.append(wrong)
    beta_hat = -float(final.coefficients[0, xy])
    gamma_hat = float(final.coefficients[1, xy])
    beta_err = abs(beta_hat - TRUE["beta"]) / TRUE["beta"]
    gamma_err = abs(gamma_hat - TRUE["gamma"]) / TRUE["gamma"]
    # What the network alone says: the least-squares x·y coefficient of its output.
    xy_states = states[:, 0] * states[:, 1]
    network_xy = (learned * xy_states[:, None]).sum(0) / xy_states.pow(2).sum()
    run.metric("discovered_equations", str(final))
    run.metric(
        "discovered_terms",
        {
            lab: {
                name: float(final.coefficients[i, j])
                for j, name in enumerate(final.library.names)
                if final.coefficients[i, j]
            }
            for i, lab in enumerate(final.labels)
        },
    )
    run.metric("known_parameters", KNOWN)
    run.metric("true_parameters", TRUE)
    run.metric("sindy_only_equations", str(result))
    run.metric("beta_hat", beta_hat)
    run.metric("gamma_hat", gamma_hat)
    run.metric("network_xy_fit_beta_gamma", [-float(network_xy[0]), float(network_xy[1])])
    run.metric("fitted_y0", refined.y0.tolist())
    run.metric(
        "oracle_beta_gamma",
        [-float(oracle.discovery.coefficients[0, xy]), float(oracle.discovery.coefficients[1, xy])],
    )

    # -- extrapolation -------------------------------------------------------------------------------
    with run.stage("extrapolating the four models to t = 20"):
        t_long = torch.linspace(0.0, 20.0, 201, dtype=dtype)
        truth = lotka_volterra(t_end=20.0, noise=0.0, dtype=dtype).clean
        hybrid = _trajectory(refined.model, refined.y0, t_long)
        oracle_long = _trajectory(oracle.model, oracle.y0, t_long)
        node_long = _trajectory(node, y0, t_long)
        ude_long = _trajectory(ude, y0, t_long)
    beyond = t_long > 3.0
    err = {
        "hybrid_l2_0_20": _rel(hybrid, truth),
        "hybrid_at_20": _rel(hybrid[-1], truth[-1]),
        "hybrid_l2_3_20": _rel(hybrid[beyond], truth[beyond]),
        "node_l2_3_20": _rel(node_long[beyond], truth[beyond]),
        "node_at_20": _rel(node_long[-1], truth[-1]),
        "ude_network_l2_3_20": _rel(ude_long[beyond], truth[beyond]),
        "hybrid_l2_0_3": _rel(hybrid[: len(t)], truth[: len(t)]),
        "oracle_l2_0_20": _rel(oracle_long, truth),
        "oracle_at_20": _rel(oracle_long[-1], truth[-1]),
    }
    for k, v in err.items():
        run.metric(k, v)
    ratio = err["node_l2_3_20"] / err["hybrid_l2_3_20"] if err["hybrid_l2_3_20"] > 0 else math.inf
    err["oracle_l2_3_20"] = _rel(oracle_long[beyond], truth[beyond])
    run.metric("oracle_l2_3_20", err["oracle_l2_3_20"])
    run.metric("node_over_hybrid_3_20", ratio)
    run.note(
        f"Extrapolation: the recovered model's relative L2 error over [0, 20] is {err['hybrid_l2_0_20']:.3f} "
        f"({err['hybrid_at_20']:.3f} for the state at t = 20 alone). The same refit with the true structure "
        f"given reaches {err['oracle_l2_0_20']:.3f}: what is left comes from estimating β and γ from 31 noisy "
        "points (a few % off), whose small phase error grows over the three cycles up to t = 20."
    )
    run.metric("seconds_training", t_train)
    run.metric("seconds_discovery", t_discovery)

    # -- checks --------------------------------------------------------------------------------------
    # Checked: what held for every one of seeds 0-9 (quick tier). Reported only (see the module
    # docstring for the seed counts): the structure of dy/dt and what depends on it (γ, the
    # extrapolation), because 31 points at 5% noise prefer U_y = c·y for some seeds.
    coef_tol = run.pick(0.15, 0.10)
    oracle_bic = oracle.score
    run.metric("exact_structure", exact == [0, 0])
    run.metric("dy_dt_exact", exact[1] == 0)
    run.metric("gamma_relative_error", gamma_err)
    run.metric("bic_discovered_minus_true_structure", refined.score - oracle_bic)
    run.check(
        "UDE training SSE / noise level N σ²",
        fit.final_loss / floor,
        "<=",
        TARGET_OVER_FLOOR,
        claim="the network fits the data to the noise level (retrained from fresh draws while it does not)",
    )
    run.check("dx/dt: terms other than x·y, or x·y missing", exact[0], "<=", 0, claim="exactly x·y survives")
    run.check("relative error of β (x·y in dx/dt)", beta_err, "<=", coef_tol, claim="within 10% of -0.9")
    run.check(
        "BIC of the discovered model - BIC of the true structure, both refitted to the data",
        refined.score - oracle_bic,
        "<=",
        2.0,
        claim="the discovered equations explain the 31 points as well as the true ones (exactly x·y in "
        "both equations is reported: exact_structure)",
    )
    run.check(
        "plain NODE relative L2 error on (3, 20]",
        err["node_l2_3_20"],
        ">",
        1.0,
        claim="a purely neural model trained on the same data does not extrapolate",
    )
    # Reported: hold when dy/dt is exactly x·y, and the absolute errors also need γ pinned well.
    run.metric("hybrid_over_oracle_at_20", err["hybrid_at_20"] / err["oracle_at_20"])
    run.metric("hybrid_at_20_below_25_percent", err["hybrid_at_20"] < 0.25)
    run.metric("ten_percent_at_20", err["hybrid_at_20"] < 0.10)
    run.note(FRAGILE)
    if run.quick:
        run.note("Quick tier: fewer L-BFGS iterations; coefficient tolerance 15% (full: 10%).")
    run.note(
        "Errors: the check is the issue's criterion, ||y(20) - y_true(20)|| / ||y_true(20)|| for the state at "
        "t = 20; the stricter relative L2 = ||prediction - truth|| / ||truth|| over the whole grid t = 0, 0.1, "
        "..., 20 is reported beside it (hybrid_l2_0_20), as is the part after t = 3. The hybrid model starts from its "
        "fitted initial state, the networks from the first noisy point; the truth from the true u0."
    )

    _figures(
        run,
        t,
        clean,
        noisy,
        ude,
        y0,
        ts,
        states,
        learned,
        result,
        refined,
        t_long,
        truth,
        hybrid,
        node_long,
        ude_long,
        fit,
        node_fit,
    )


def _figures(
    run: Run,
    t: torch.Tensor,
    clean: torch.Tensor,
    noisy: torch.Tensor,
    ude: UniversalODE,
    y0: torch.Tensor,
    ts: torch.Tensor,
    states: torch.Tensor,
    learned: torch.Tensor,
    result: Any,
    refined: Any,
    t_long: torch.Tensor,
    truth: torch.Tensor,
    hybrid: torch.Tensor,
    node_long: torch.Tensor,
    ude_long: torch.Tensor,
    fit: Any,
    node_fit: Any,
) -> None:
    import matplotlib.pyplot as plt

    colors = ("tab:blue", "tab:orange")
    names = ("x (prey)", "y (predator)")

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax = axes[0]
    for i in range(2):
        ax.plot(ts, states[:, i], color=colors[i], label=f"UDE fit {names[i]}")
        ax.plot(t, clean[:, i], "k:", lw=1)
        ax.plot(t, noisy[:, i], "o", ms=3.5, color=colors[i], alpha=0.7)
    ax.plot([], [], "k:", label="truth")
    ax.plot([], [], "o", color="gray", label="noisy data")
    ax.set(xlabel="t", ylabel="state", title="Training window: data, UDE fit, truth")
    ax.legend(fontsize=8)
    ax = axes[1]
    for tag, f in (("UDE", fit), ("plain NODE", node_fit)):
        losses = [h["loss"] for stage in ("network", "lbfgs") for h in f.histories.get(stage, [])]
        ax.semilogy(losses, label=tag)
    ax.axvline(len(fit.histories.get("network", [])), color="gray", lw=0.8, ls="--")
    ax.set(
        xlabel="step (Adam, then L-BFGS x10 iterations)",
        ylabel="sum of squared errors",
        title="Training loss",
    )
    ax.legend(fontsize=8)
    run.figure(
        "fit",
        fig,
        "Left: noisy data (dots), the UDE's fitted trajectory and the truth on [0, 3]. Right: training loss.",
    )

    fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    for i, ax in enumerate(axes):
        ax.plot(t_long, truth[:, i], "k", lw=2.5, alpha=0.35, label="truth")
        ax.plot(t_long, hybrid[:, i], color="tab:green", label="discovered hybrid model")
        ax.plot(t_long, node_long[:, i], color="tab:red", ls="--", label="plain neural ODE")
        ax.plot(t_long, ude_long[:, i], color="tab:purple", ls=":", label="UDE (network)")
        ax.plot(t, noisy[:, i], "o", ms=3, color="k")
        ax.axvspan(0, 3, color="gray", alpha=0.12)
        lim = float(truth[:, i].max()) * 1.6
        ax.set_ylim(-0.1 * lim, lim)
        ax.set_ylabel(names[i])
    axes[0].legend(fontsize=8, ncol=4, loc="upper right")
    axes[1].set_xlabel("t (grey: training window)")
    run.figure("extrapolation", fig, "Extrapolation to t = 20 from 31 noisy points on [0, 3].")

    xy = (states[:, 0] * states[:, 1]).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sparse = refined.discovery.to_torch(dtype=states.dtype)
    with torch.no_grad():
        found = sparse(states)
    for i, (ax, coef, sign) in enumerate(zip(axes, (TRUE["beta"], TRUE["gamma"]), (-1, 1))):
        ax.plot(
            ts, sign * coef * xy, "k", lw=2.5, alpha=0.35, label=f"true {'-0.9' if sign < 0 else '0.8'} x·y"
        )
        ax.plot(ts, learned[:, i], color="tab:purple", label="network U")
        ax.plot(ts, found[:, i], color="tab:green", ls="--", label="discovered term")
        ax.set(
            xlabel="t (along the fitted trajectory)",
            ylabel=f"missing term of d{'xy'[i]}/dt",
            title=f"U_{'xy'[i]}",
        )
        ax.legend(fontsize=8)
    run.figure(
        "interaction",
        fig,
        "The missing interaction terms: truth, the network's output and the discovered terms.",
    )

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for i, ax in enumerate(axes[:2]):
        ks, errs = result.pareto_front(i)
        ax.scatter(ks, np.maximum(errs, 1e-12), s=12, alpha=0.5, label="STLSQ sweep points")
        k_sel = ks[result.selected[i]]
        ax.scatter(
            [k_sel],
            [max(errs[result.selected[i]], 1e-12)],
            s=80,
            facecolors="none",
            edgecolors="r",
            label="Pareto pick",
        )
        ax.set_yscale("log")
        ax.set(
            xlabel="number of terms", ylabel="relative residual on U", title=f"Threshold sweep, U_{'xy'[i]}"
        )
        ax.legend(fontsize=8)
    ax = axes[2]
    cands = refined.candidates
    k_all = [sum(len(s) for s in c["terms"]) for c in cands]
    scores = [c["score"] if math.isfinite(c["score"]) else np.nan for c in cands]
    ax.scatter(k_all, scores, s=14)
    best = refined.score
    k_best = sum(len(refined.discovery.support(i)) for i in range(2))
    ax.scatter([k_best], [best], s=90, facecolors="none", edgecolors="r", label="chosen")
    ax.set(xlabel="terms (both equations)", ylabel="BIC on the data", title="Candidates scored on the data")
    ax.legend(fontsize=8)
    run.figure(
        "sweep",
        fig,
        "Left, middle: the STLSQ threshold sweep (Pareto front) on the network's output. Right: each candidate structure refitted to the data, scored by BIC.",
    )
