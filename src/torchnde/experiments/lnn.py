r"""Lagrangian neural networks: the double pendulum and a relativistic particle.

M. Cranmer, S. Greydanus, S. Hoyer, P. Battaglia, D. Spergel, S. Ho, *Lagrangian Neural
Networks*, ICLR 2020 DeepDiffEq workshop, arXiv:2003.04630 (repository
``MilesCranmer/lagrangian_nns``).

- ``lnn-double-pendulum``: one chaotic trajectory from :math:`(3\pi/7, 3\pi/4, 0, 0)`, split 50/50
  in time; an LNN (2x128 softplus plus a fixed quadratic velocity term) against an MLP of the same
  size that predicts the accelerations. Both see the angles through :math:`(\sin q, \cos q)` (the
  repository wraps them instead), so neither has to learn the periodicity. Rollouts of 1,000 RK4
  steps from test states are scored by the true energy.
- ``lnn-relativistic``: :math:`L = -\sqrt{1 - \dot q^2} - q^2/2`. An LNN trained on
  :math:`(q, \dot q)` against an HNN fed the non-canonical :math:`p := \dot q` (it cannot represent
  the flow, which does not preserve area in those coordinates); an HNN given the canonical
  :math:`p = \gamma \dot q` is reported as a control.

```python
from torchnde.experiments import run_experiment
doc = run_experiment("lnn-relativistic", quick=True, out="/tmp/lnn-relativistic")   # or: torchnde run lnn-relativistic --quick
print(doc["passed"], [c["measured"] for c in doc["checks"]])
```
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from torchnde.datasets.physics import double_pendulum, relativistic_particle
from torchnde.models.hamiltonian import HamiltonianNN
from torchnde.models.lagrangian import LagrangianNN

from ._figures import data_range
from ._framework import Run, experiment

__all__: list[str] = []
from .hnn import _fit_derivatives, _mse

# Turning points up to 2 (energy up to 3 = gamma_max): speeds up to about 0.94 c.
_AMPLITUDE = (0.5, 2.0)

_PAPER = (
    "M. Cranmer, S. Greydanus, S. Hoyer, P. Battaglia, D. Spergel, S. Ho, Lagrangian Neural Networks, "
    "ICLR 2020 DeepDiffEq workshop, arXiv:2003.04630"
)


class _AngleFeatures(nn.Module):
    r"""``cat([q, q̇])`` to ``cat([sin q, cos q, s q̇])``: a periodic embedding of angles, with the
    velocities scaled by a fixed ``s`` (e.g. one over their standard deviation in the data)."""

    def __init__(self, dim: int, velocity_scale: float = 1.0) -> None:
        super().__init__()
        self.dim = dim
        self.velocity_scale = float(velocity_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, qd = x[..., : self.dim], x[..., self.dim :]
        return torch.cat([torch.sin(q), torch.cos(q), self.velocity_scale * qd], -1)


class _KineticPrior(nn.Module):
    r"""``L(x) = net(x) + (s q̇)^2 / 2``: a network Lagrangian whose velocity Hessian starts at
    :math:`s^2 I` (positive definite) instead of an arbitrary, often indefinite matrix."""

    def __init__(self, net: nn.Module, dim: int, velocity_scale: float) -> None:
        super().__init__()
        self.net = net
        self.dim = dim
        self.velocity_scale = float(velocity_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kinetic = 0.5 * (self.velocity_scale * x[..., self.dim :]).square().sum(-1, keepdim=True)
        return self.net(x) + kinetic


def _softplus_mlp(n_in: int, n_out: int, hidden: int = 128, head: nn.Module | None = None) -> nn.Sequential:
    """``[head] -> n_in -> hidden -> hidden -> n_out`` with softplus activations."""
    layers: list[nn.Module] = [] if head is None else [head]
    layers += [nn.Linear(n_in, hidden), nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus()]
    layers.append(nn.Linear(hidden, n_out))
    return nn.Sequential(*layers)


def _rk4_rollout(field: Any, x0: torch.Tensor, steps: int, dt: float) -> torch.Tensor:
    """``steps`` RK4 steps of ``dt`` from ``x0`` ``[N, 2d]``; ``[steps + 1, N, 2d]`` (NaN after a blow-up)."""
    import torchnde as nde

    t = torch.linspace(0.0, steps * dt, steps + 1, dtype=torch.float64)
    with torch.no_grad():
        sol = nde.solve(field, x0, t, solver="rk4", dt=dt, max_steps=10 * steps, throw=False)
    return sol.ys


def _finite_or_inf(value: float) -> float:
    return value if math.isfinite(value) else float("inf")


@experiment(
    "lnn-double-pendulum",
    title="LNN vs baseline on the double pendulum",
    paper=_PAPER,
    claim="the LNN conserves energy along rollouts where the baseline MLP drifts (table values not retrieved)",
)
def run_lnn_double_pendulum(run: Run) -> None:
    """LNN vs an acceleration MLP on one double-pendulum trajectory; energy error of 1,000-step rollouts."""
    # full tier: the repository's data set (3,000 points, one per second); quick: 600 on [0, 120]
    n_points, t_end = run.pick((600, 120.0), (3000, 3000.0))
    data = double_pendulum(n_points, t_span=(0.0, t_end), seed=run.seed)
    train, test = data.split(0.5)
    x, dx = train.flat()
    x_test, dx_test = test.flat()
    acc, acc_test = dx[:, 2:], dx_test[:, 2:]
    steps = run.pick(600, 4000)
    batch = run.pick(None, 500)
    scale = 1.0 / float(x[:, 2:].std())

    lnn = LagrangianNN(
        _KineticPrior(_softplus_mlp(6, 1, head=_AngleFeatures(2, scale)), 2, scale), derivatives="autograd"
    )
    base = _softplus_mlp(6, 2, head=_AngleFeatures(2, scale))

    def lnn_acc(v: torch.Tensor) -> torch.Tensor:
        return lnn.accelerations(v[:, :2], v[:, 2:])

    hist_lnn = _fit_derivatives(run, "lnn", lnn, lnn_acc, x, acc, steps, lr=1e-2, decay=True, batch=batch)
    hist_base = _fit_derivatives(run, "baseline", base, base, x, acc, steps, lr=1e-2, decay=True, batch=batch)
    with torch.no_grad():
        test_mse = {"lnn": _mse(lnn_acc(x_test), acc_test), "baseline": _mse(base(x_test), acc_test)}
        train_mse = {"lnn": _mse(lnn_acc(x), acc), "baseline": _mse(base(x), acc)}
        _, rows = lnn.gradient_and_hessian(x_test[:, :2], x_test[:, 2:])
        mass_eigs = torch.linalg.eigvalsh(0.5 * (rows[..., 2:] + rows[..., 2:].mT))

    # RK4 steps of dt = 0.01 from 8 states spread over the test half: 1,000 for the check, and
    # in the full tier 5,000 to show the longer-term trend.
    pick = torch.linspace(0, test.x.shape[1] - 1, 8).round().long()
    x0 = test.x_clean[0, pick]
    n_steps, dt = run.pick(1000, 5000), 0.01
    trajs = {
        "true": data.reference(x0, torch.linspace(0.0, n_steps * dt, n_steps + 1, dtype=torch.float64)),
        "lnn": _rk4_rollout(lambda t, y: lnn.vector_field(t, y), x0, n_steps, dt),
        "baseline": _rk4_rollout(lambda t, y: torch.cat([y[..., 2:], base(y)], -1), x0, n_steps, dt),
    }
    e0 = data.energy_fn(x0.to(torch.float64))
    energies = {k: data.energy_fn(v.to(torch.float64)) for k, v in trajs.items()}
    rel_t = {k: (e - e0).abs() / e0 for k, e in energies.items()}  # [T, 8]
    error = {k: _finite_or_inf(float(v[:1001].amax(0).mean())) for k, v in rel_t.items()}
    final = {k: _finite_or_inf(float(v[1000].mean())) for k, v in rel_t.items()}
    windows = {
        k: [
            _finite_or_inf(float(v[i * 1000 : (i + 1) * 1000 + 1].amax(0).mean()))
            for i in range(n_steps // 1000)
        ]
        for k, v in rel_t.items()
        if k != "true"
    }

    run.metric("train_acceleration_mse", train_mse)
    run.metric("test_acceleration_mse", test_mse)
    run.metric(
        "lnn_velocity_hessian_eigenvalues_test",
        {
            "min": float(mass_eigs.min()),
            "max": float(mass_eigs.max()),
            "min_abs": float(mass_eigs.abs().min()),
        },
    )
    run.metric("relative_energy_error_1000_steps", error)
    run.metric("relative_energy_error_at_step_1000", final)
    run.metric("relative_energy_error_per_1000_step_window", windows)
    run.metric("initial_energy", float(e0.mean()))
    run.note(
        f"One trajectory of {n_points} points on [0, {t_end:g}] from (3pi/7, 3pi/4, 0, 0), first half for training "
        f"({x.shape[0]} states), second half for testing. {steps} Adam steps ({'full batch' if batch is None else f'minibatches of {batch}'}; lr 1e-2, cosine-annealed "
        "to 1e-4) on the accelerations, both models 2x128 softplus on (sin q, cos q, s qdot), s = 1 / std(qdot), "
        "PyTorch's default initialisation. The LNN's Lagrangian is the network plus (s qdot)^2 / 2, so that its "
        "velocity Hessian starts positive definite (the network can cancel the term); exact (undamped) "
        "Euler-Lagrange solve. (In a short study on the quick-tier data the network alone trained to MSEs of "
        "75-350 with the repository's initialisation (lnn_init_), or with near-singular velocity Hessians and "
        "exploding test errors otherwise.)"
    )
    run.note(
        "Energy error: mean over 8 test initial states of max_t |E(t) - E(0)| / E(0) over 1,000 RK4 steps of dt "
        "0.01 (t in [0, 10]), with the true energy E (zero at rest, E(0) about 32). The same per window of 1,000 "
        f"steps over {n_steps} steps: LNN {[f'{w:.3g}' for w in windows['lnn']]}, baseline "
        f"{[f'{w:.3g}' for w in windows['baseline']]}."
    )
    ratio = error["baseline"] / max(error["lnn"], 1e-300)
    run.metric("energy_error_ratio_baseline_over_lnn", ratio)
    if len(windows["lnn"]) == 1:  # quick tier: one window of 1,000 steps
        run.check(
            "baseline energy error / LNN energy error (1,000 steps)",
            ratio,
            ">=",
            5.0,
            claim="LNN energy error bounded where the baseline drifts (target of this reproduction: >= 5x)",
        )
    else:  # full tier: the claim over the long rollout, where drift shows
        # LNN / baseline, so that a baseline that blows up (error inf) gives 0, a finite measurement
        last = windows["lnn"][-1] / windows["baseline"][-1] if windows["baseline"][-1] > 0 else math.inf
        growth = max(windows["lnn"]) / max(windows["lnn"][0], 1e-300)
        run.metric("energy_error_ratio_lnn_over_baseline_last_window", last)
        run.metric("lnn_energy_error_growth_max_window_over_first", growth)
        run.note(
            f"Over the first 1,000 steps alone the baseline's energy error is {ratio:.2f}x the LNN's; the claim "
            "is about the long run (bounded against drifting), so the full tier checks the last of the "
            f"{len(windows['lnn'])} windows of 1,000 steps and the LNN's growth across them."
        )
        run.check(
            f"LNN energy error / baseline's, last 1,000-step window (of {len(windows['lnn'])})",
            last,
            "<=",
            0.2,
            claim="LNN energy error bounded where the baseline drifts (target of this reproduction: >= 5x smaller)",
        )
        run.check(
            "LNN energy error, largest window / first window",
            growth,
            "<=",
            2.0,
            claim="LNN energy error bounded over the rollout",
        )
    fit_ratio = test_mse["lnn"] / test_mse["baseline"]
    run.metric("test_acceleration_mse_ratio_lnn_over_baseline", fit_ratio)
    run.note(
        f"The LNN's test acceleration MSE is {fit_ratio:.2f}x the baseline's here. It is reported, not checked: "
        "the paper claims bounded energy error, not a fit as good as an MLP's, and the ratio moves with the seed "
        "(quick tier, seeds 1-4: 1.16, 1.52, 1.93, 3.39), while the energy-error ratio it is judged on stayed at "
        "9.9x or more (needed: 5x)."
    )

    import matplotlib.pyplot as plt

    t = torch.linspace(0.0, n_steps * dt, n_steps + 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    colors = {"true": "k", "lnn": "tab:blue", "baseline": "tab:red"}
    rels = []
    for key, tr in trajs.items():
        axes[0].plot(t, tr[:, 0, 0], color=colors[key], lw=1, label=f"{key} q1")
        axes[0].plot(t, tr[:, 0, 1], color=colors[key], lw=1, ls="--", label=f"{key} q2")
        rels.append(((energies[key] - e0).abs() / e0).mean(-1).clamp_min(1e-9))
        axes[1].semilogy(t, rels[-1], color=colors[key], label=key)
    axes[1].set_ylim(*data_range([r[1:] for r in rels], log=True))  # not the exact zero at t = 0
    axes[0].set_xlabel("t")
    axes[0].set_ylabel("angle")
    axes[0].set_title("A test rollout (chaotic: trajectories separate)")
    axes[0].legend(fontsize=7, ncol=3)
    axes[1].set_xlabel("t")
    axes[1].set_ylabel("mean |E(t) - E(0)| / E(0)")
    axes[1].set_title(f"True energy along {n_steps}-step RK4 rollouts (dt 0.01)")
    axes[1].legend()
    run.figure("rollouts", fig, "Double pendulum: angles of one test rollout and the relative energy error.")

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharex=True, sharey=True)
    for ax, key in zip(axes, ["true", "lnn", "baseline"]):
        tr = trajs[key][:, 0]
        ax.plot(tr[:, 0], tr[:, 2], lw=0.6, color=colors[key])
        ax.set_title(f"{key}: (q1, q1dot)")
        ax.set_xlabel("q1")
    axes[0].set_ylabel("q1dot")
    run.figure("phase_portraits", fig, "Phase portraits (q1, q1dot) of one test rollout.")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy([h["loss"] for h in hist_base], color="tab:red", label="baseline")
    ax.semilogy([h["loss"] for h in hist_lnn], color="tab:blue", label="LNN")
    ax.set_xlabel("step")
    ax.set_ylabel("train acceleration MSE")
    ax.legend()
    run.figure("training", fig, "Training loss.")


def _to_velocity(x: torch.Tensor) -> torch.Tensor:
    """Canonical ``(q, p)`` to ``(q, q̇)`` for the relativistic particle (``q̇ = p / sqrt(1 + p^2)``)."""
    q, p = x[..., :1], x[..., 1:]
    return torch.cat([q, p / torch.sqrt(1 + p.square())], -1)


@experiment(
    "lnn-relativistic",
    title="LNN vs HNN on a relativistic particle in non-canonical coordinates",
    paper=_PAPER,
    claim="an HNN fed (q, qdot) instead of canonical momenta fails; the LNN learns the dynamics",
)
def run_lnn_relativistic(run: Run) -> None:
    """LNN on (q, q̇) vs an HNN with p := q̇ (and an HNN with the canonical p as a control)."""
    n_traj = run.pick(20, 60)
    data = relativistic_particle(n_traj, amplitude=_AMPLITUDE, seed=run.seed)
    canon = relativistic_particle(n_traj, amplitude=_AMPLITUDE, coordinates="canonical", seed=run.seed)
    train, test = data.split(0.5)
    ctrain, _ = canon.split(0.5)
    x, dx = train.flat()
    cx, cdx = ctrain.flat()
    steps = run.pick(500, 3000)

    scale = 1.0 / float(x[:, 1:].std())
    lnn = LagrangianNN(_KineticPrior(_softplus_mlp(2, 1), 1, scale), derivatives="autograd")
    hnn = HamiltonianNN(_softplus_mlp(2, 1))
    hnn_canonical = HamiltonianNN(_softplus_mlp(2, 1))

    def lnn_acc(v: torch.Tensor) -> torch.Tensor:
        return lnn.accelerations(v[:, :1], v[:, 1:])

    hist = {
        "lnn": _fit_derivatives(run, "lnn", lnn, lnn_acc, x, dx[:, 1:], steps, lr=1e-2, decay=True),
        "hnn": _fit_derivatives(
            run, "hnn", hnn, lambda v: hnn.vector_field(0.0, v), x, dx, steps, lr=1e-2, decay=True
        ),
        "hnn_canonical": _fit_derivatives(
            run,
            "hnn_canonical",
            hnn_canonical,
            lambda v: hnn_canonical.vector_field(0.0, v),
            cx,
            cdx,
            steps,
            lr=1e-2,
            decay=True,
        ),
    }
    x_test, dx_test = test.flat()
    with torch.no_grad():
        test_mse = {
            "lnn": _mse(lnn_acc(x_test), dx_test[:, 1:]),
            "hnn": _mse(hnn.vector_field(0.0, x_test)[:, 1:], dx_test[:, 1:]),
        }

    n_steps, dt = 1000, 0.01
    x0 = test.x_clean[:, 0]
    t = torch.linspace(0.0, n_steps * dt, n_steps + 1, dtype=torch.float64)
    gamma = 1 / torch.sqrt(1 - x0[:, 1:].square())
    x0_canonical = torch.cat([x0[:, :1], gamma * x0[:, 1:]], -1)
    trajs = {
        "true": data.reference(x0, t),
        "lnn": _rk4_rollout(lambda s, y: lnn.vector_field(s, y), x0, n_steps, dt),
        "hnn": _rk4_rollout(lambda s, y: hnn.vector_field(s, y), x0, n_steps, dt),
        "hnn_canonical": _to_velocity(
            _rk4_rollout(lambda s, y: hnn_canonical.vector_field(s, y), x0_canonical, n_steps, dt)
        ),
    }
    error = {
        k: _finite_or_inf(_mse(v.double(), trajs["true"].double())) for k, v in trajs.items() if k != "true"
    }
    energies = {k: data.energy_fn(v.to(torch.float64)) for k, v in trajs.items()}
    e0 = data.energy_fn(x0.to(torch.float64))
    energy_error = {
        k: _finite_or_inf(float(((e - e0).abs() / e0).amax(0).mean()))
        for k, e in energies.items()
        if k != "true"
    }

    run.metric("rollout_state_mse", error)
    run.metric("relative_energy_error", energy_error)
    run.metric("test_acceleration_mse", test_mse)
    ratio = error["lnn"] / error["hnn"] if math.isfinite(error["hnn"]) else 0.0
    run.metric("rollout_error_ratio_lnn_over_hnn", ratio)
    run.note(
        f"{n_traj} trajectories (turning points U[0.5, 2], speeds up to about 0.94 c) x 50 points on [0, 10], "
        f"half for training. {steps} full-batch Adam steps (lr 1e-2, cosine-annealed to 1e-4), every network 2x128 "
        "softplus (the LNN's plus (s qdot)^2 / 2, s = 1 / std(qdot), as in lnn-double-pendulum). Rollout error: MSE of (q, qdot) against the truth over 1,000 RK4 steps of dt 0.01 from the test "
        f"initial states. The HNN given the canonical momentum p = gamma qdot (a control, not checked) reaches "
        f"{error['hnn_canonical']:.3g}: the HNN's failure is the coordinates', not the network's."
    )
    run.check(
        "LNN rollout error / HNN(p := qdot) rollout error",
        ratio,
        "<=",
        0.1,
        claim="HNN fails without canonical momenta; LNN works (target of this reproduction: <= 0.1x)",
    )

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    colors = {"true": "k", "lnn": "tab:blue", "hnn": "tab:red", "hnn_canonical": "tab:green"}
    labels = {
        "true": "truth",
        "lnn": "LNN (q, qdot)",
        "hnn": "HNN, p := qdot",
        "hnn_canonical": "HNN, canonical p",
    }
    tt = t.float()
    for key, tr in trajs.items():
        axes[0].plot(
            tt, tr[:, 0, 0], color=colors[key], lw=1.2, ls="--" if key == "true" else "-", label=labels[key]
        )
        for i in range(min(4, tr.shape[1])):
            axes[1].plot(tr[:, i, 0], tr[:, i, 1], color=colors[key], lw=1, ls="--" if key == "true" else "-")
    # ranges from the truth and the LNN: a model that leaves them is clipped at the edge
    good = [trajs[k] for k in ("true", "lnn")]
    axes[0].set_ylim(*data_range([tr[:, 0, 0] for tr in good], margin=0.15))
    axes[1].set_xlim(*data_range([tr[:, :4, 0] for tr in good], margin=0.15))
    axes[1].set_ylim(*data_range([tr[:, :4, 1] for tr in good], margin=0.15))
    axes[0].set_xlabel("t")
    axes[0].set_ylabel("q")
    axes[0].set_title("A test rollout")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("q")
    axes[1].set_ylabel("qdot")
    axes[1].set_title("Phase portraits of 4 test rollouts")
    run.figure("rollouts", fig, "Relativistic particle: LNN vs HNN rollouts against the truth (dashed).")

    fig, ax = plt.subplots(figsize=(6, 3.8))
    rels = []
    for key in ("lnn", "hnn", "hnn_canonical"):
        rels.append(((energies[key] - e0).abs() / e0).mean(-1).clamp_min(1e-12))
        ax.semilogy(tt, rels[-1], color=colors[key], label=labels[key])
    ax.set_ylim(*data_range([r[1:] for r in rels], log=True))  # not the exact zero at t = 0
    ax.set_xlabel("t")
    ax.set_ylabel("mean |E(t) - E(0)| / E(0)")
    ax.legend(fontsize=8)
    ax.set_title("True energy along the rollouts")
    run.figure("energy", fig, "Relative error of the true energy along 1,000-step rollouts.")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, h in hist.items():
        ax.semilogy([r["loss"] for r in h], color=colors[key], label=labels[key])
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (derivative MSE)")
    ax.legend(fontsize=8)
    run.figure("training", fig, "Training loss.")
