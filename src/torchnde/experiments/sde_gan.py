r"""An SDE-GAN learns the law of an Ornstein–Uhlenbeck process (Kidger et al. 2021).

P. Kidger, J. Foster, X. Li, H. Oberhauser, T. Lyons, *Neural SDEs as Infinite-Dimensional
GANs*, ICML 2021, arXiv 2102.03657; training as in P. Kidger, J. Foster, X. Li, T. Lyons,
*Efficient and Accurate Gradients for Neural SDEs*, NeurIPS 2021 (reversible Heun, Brownian
interval, weight clipping with LipSwish) and torchsde's ``examples/sde_gan.py``.

The data are exact paths of the time-dependent OU process
:math:`dY = (\theta(\mu - Y) + \kappa t)\,dt + \sigma\,dW`, :math:`\theta = 1`, :math:`\mu = 0.5`,
:math:`\kappa = 1`, :math:`\sigma = 0.6`, :math:`Y(0) \sim \mathcal N(0, 0.1^2)`, at 13 times
on :math:`[0, 4]` (:func:`torchnde.datasets.ornstein_uhlenbeck`); the model's clock counts the
samples (0, 1, ..., 12), as in torchsde's example. The model is :class:`torchnde.models.SDEGAN`
(hidden 16, noise 3, initial noise 5, MLP width 16; the generator's initial network times 3 and
its drift and diffusion times 0.5 at initialisation, as in torchsde's example), both equations
solved by reversible Heun with one step per sample interval (``gradient="backprop"``: the same
gradients as ``"reversible"``, see ``tests/test_sde_gan.py``, and faster at this size). The
generator and the discriminator take one joint step per iteration (Wasserstein loss, the
generator's gradients negated, Adadelta with lr 0.1 for both and weight decay 0.01, the
discriminator's weights clipped to :math:`\pm 1/n_{in}`), and the generator evaluated is the
average of its weights over the second half of training (stochastic weight averaging). Full tier:
5,000 iterations at batch 256; quick tier: 300 at batch 128.

**The scale of the data decides whether the spread is learnt.** The paths are shifted by their
overall mean and divided by their within-time standard deviation averaged over the times (one
scale for all times; the generated samples are mapped back). Divided by their overall standard
deviation instead (3x larger: the mean rises from 0 to 3.5 while the spread is about 0.4), the
paths vary by about 0.3 per sample, the clipped critic is close to linear over that range and
sees only the mean: trained alone against real paths whose deviations from the mean are inflated
1.5x, its Wasserstein estimate reached 0.1 of the spread of its scores in 400 steps, against
0.7-1.2 at the within-time scale; the GAN then matched the mean and left the std 40-300% too
large in every setting tried (Adam or Adadelta, learning rates 1e-4 to 1, clipping by
:math:`1/n_{out}`, four critic steps per generator step, up to 2,000 iterations). At the
within-time scale and equal learning rates the std converges, with oscillations that the weight
averaging removes.

**What holds** (full tier, one thread, about 4 minutes a seed): the mean within 4% at every seed
0-2; the std within 12% at seeds 0 and 1, 22% too large at :math:`t = 2` at seed 2 (a bias in
the std's profile over time, steady over the last 4,000 iterations, not an oscillation: the
paper's batch of 1,024 left it at 19%, a critic of hidden size 32 at 23%, and the paths scaled
to a within-time spread of 2 at 21%, the average then too narrow at :math:`t = 3`). Seeds 3 to 6:
the worst std errors 13.1%, 15.0%, 12.6% and 12.2% (the mean within 2.5% at seeds 5 and 6), so
six of seven seeds pass and seed 2 fails. The figures per seed are in the report.

**A constant diffusion was measured and not adopted.** With ``SDEGAN(diffusion="constant")``
(a learnt diffusion matrix: the OU law is then exactly representable and the spread must come from
mean reversion) the full tier's worst std errors at seeds 0-4 were 15.9% (t = 1), 8.2%, 4.0%,
6.2% and 14.0% (the paper's neural diffusion: 11.6%, 12.1%, 22.1%, 13.1%, 15.0%): a lower median,
the same four seeds of five within 15%. The paper's neural diffusion stays, as the model being
reproduced; at seed 2 it builds the spread from a time-varying diffusion (37% too narrow at
t = 1/3, 22-26% too wide from t = 2 to 8/3) with paths more persistent than the data's (lag-one
correlation 0.73-0.77 against 0.69-0.72). Decaying both learning rates to 0 over the averaging
window (seed 0: 15.4%), turning off the generator's weight decay (seed 2: 30.6%), a 5x faster
critic (diverged) and a critic that scores every sample time (``readout="all"``: the same profile)
did not help.

**The discriminator steps as the paper's code does.** torchsde's example hands torchcde's ODE
form :math:`dH/dt = f(t, H)\,dX/dt` to its reversible Heun, whose carried evaluation reads, at
each knot of the piecewise linear path, the slope of the interval before it
(``CDEDiscriminator(stepping="derivative")``, the default). Stepped as a controlled equation
instead (``stepping="increments"``: :math:`f(t, H)` times the path's increment over each step,
second order), the full tier's worst std errors were 33.5%, 64.4%, 76.7%, 38.1% and 53.2% at
seeds 0-4, every one too narrow (worst mean errors 1.0-3.0%): trained alone for 400 steps
against paths whose spread is 1.5x too wide, that critic's Wasserstein estimate reached 0.60,
0.20 and 0.18 of the spread of its scores at seeds 0-2, against 0.62, 0.60 and 0.56 for the
paper's stepping (a shifted mean: 0.43-0.48 against 0.37-0.45). The paper's stepping is kept as
the model being reproduced.

**Criterion** (issue 17 and the project's paper anchors, which call it flaky): the generated mean and standard deviation
at :math:`t = 1, 2, 3` within 15% of the analytic OU moments
(:class:`torchnde.datasets.OrnsteinUhlenbeck`), on 4,096 generated paths. The quick tier checks
that training runs and improves the first moment: the averaged generator's mean error (|generated
mean - mean| / std averaged over the sample times after 0) at most half its initial one. The std
is not learnt in 300 iterations (it oscillates for the first thousands), so the quick tier does
not check it.
"""

from __future__ import annotations

from typing import Any

import torch

from torchnde.datasets import ornstein_uhlenbeck
from torchnde.models import SDEGAN

from ._framework import Run, experiment

__all__: list[str] = []

EVAL_TIMES = (1.0, 2.0, 3.0)
STEPS, T_END = 13, 4.0  # sample times 0, 1/3, ..., 4: the evaluation times are on the grid
TOLERANCE = 0.15
QUICK_RATIO = 0.5  # the quick tier: the averaged generator's mean error at most half its initial one
SPREAD = 1.0  # the training data's within-time standard deviation (averaged over the times)
INIT_SCALE = (3.0, 0.5)  # the generator's initial weights times these (initial network; drift and diffusion)
FLAKY = (
    "GAN training is unstable: the project's paper anchors call this criterion flaky and never gate CI on it; "
    "torchsde's example trains 10,000 steps at batch 1,024, this tier 5,000 at batch 256."
)


def _config(run: Run) -> dict[str, Any]:
    return run.pick(
        dict(iterations=300, batch=128, data=2048, lr=0.1, gradient="backprop", samples=2048, every=50),
        dict(iterations=5000, batch=256, data=8192, lr=0.1, gradient="backprop", samples=4096, every=250),
    )


def _optimiser(module: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adadelta(module.parameters(), lr=lr, weight_decay=0.01)


def _moment_errors(
    samples: torch.Tensor, index: list[int], mean: torch.Tensor, std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(generated mean, generated std, |relative error| of each) at the time indices ``index``."""
    y = samples[:, index, 0].double()
    m, s = y.mean(0), y.std(0)
    return m, s, (m / mean - 1).abs(), (s / std - 1).abs()


@experiment(
    "sde-gan-ou",
    title="SDE-GAN on a time-dependent Ornstein–Uhlenbeck process",
    paper="Kidger, Foster, Li, Oberhauser, Lyons, Neural SDEs as Infinite-Dimensional GANs, ICML 2021, "
    "arXiv 2102.03657",
    claim="a neural SDE generator trained against a neural CDE discriminator (Wasserstein, weight clipping, "
    "LipSwish) learns the law of time-dependent OU paths",
)
def run_sde_gan_ou(run: Run) -> None:
    """Train an SDE-GAN on exact OU paths; compare the generated moments with the analytic ones."""
    cfg = _config(run)
    data = ornstein_uhlenbeck(n=cfg["data"], t_end=T_END, steps=STEPS, seed=run.seed)
    ts = data.t
    # the model's clock counts samples (0, 1, ..., as torchsde's example): over a short clock the
    # discriminator's CDE barely moves from its initial state and sees little past the first sample
    clock = torch.arange(STEPS, dtype=ts.dtype)
    real = data.paths.transpose(0, 1)  # [n, time, 1]
    # one shift and one scale for every time: the overall mean, and the within-time spread averaged
    # over the times (not the overall std, which the mean's rise from 0 to 3.5 inflates 3x): only
    # at this scale does the clipped critic see a wrong spread (see the module docstring)
    shift, scale = real.mean(), real.std(0).mean() / SPREAD
    normalised = (real - shift) / scale
    index = [int(torch.argmin((ts - t).abs())) for t in EVAL_TIMES]
    true_mean, true_std = data.mean[index].double(), data.std[index].double()
    run.note(
        f"Data: {cfg['data']} exact paths of dY = (theta (mu - Y) + kappa t) dt + sigma dW, theta = 1, mu = 0.5, "
        f"kappa = 1, sigma = 0.6, Y(0) ~ N(0, 0.1^2), at {STEPS} times on [0, {T_END:g}]. SDEGAN hidden 16, noise 3, "
        f"initial noise 5, width 16; reversible Heun, one step per interval, gradient={cfg['gradient']!r}; "
        f"{cfg['iterations']} joint iterations at batch {cfg['batch']}, Adadelta (lr {cfg['lr']} for both, weight "
        "decay 0.01), the generator's weights averaged over the second half."
        + (" Quick tier: checks only that training improves the mean." if run.quick else " " + FLAKY)
    )

    torch.manual_seed(run.seed)
    gan = SDEGAN(1, hidden_size=16, noise_size=3, initial_noise_size=5, width=16, gradient=cfg["gradient"])
    with torch.no_grad():  # torchsde's example: a wider initial law, a gentler initial SDE
        for p in gan.generator.initial.parameters():
            p.mul_(INIT_SCALE[0])
        for p in [*gan.generator.drift.parameters(), *gan.generator.diffusion.parameters()]:
            p.mul_(INIT_SCALE[1])
    g_opt = _optimiser(gan.generator, cfg["lr"])
    d_opt = _optimiser(gan.discriminator, cfg["lr"])
    averaged = torch.optim.swa_utils.AveragedModel(gan.generator)
    batches = run.generator(1)
    start_average = cfg["iterations"] // 2

    def evaluate(generator: torch.nn.Module) -> tuple[torch.Tensor, ...]:
        state = torch.random.get_rng_state()
        torch.manual_seed(run.seed + 10_000)  # the same noise at every evaluation
        with torch.no_grad():
            samples = generator(clock, cfg["samples"]) * scale + shift
        torch.random.set_rng_state(state)
        return (samples, *_moment_errors(samples, index, true_mean, true_std))

    def error(generator: torch.nn.Module) -> tuple[float, float]:
        """The moment errors over the sample times after the first: the mean of |generated mean -
        mean| / std (in units of the law's std: the mean passes through 0), and of |generated std /
        std - 1|."""
        y = evaluate(generator)[0][:, 1:, 0].double()
        mean, std = data.mean[1:].double(), data.std[1:].double()
        return float(((y.mean(0) - mean).abs() / std).mean()), float((y.std(0) / std - 1).abs().mean())

    _, _, _, em0, es0 = evaluate(gan.generator)
    run.metric("initial_relative_error_mean", em0)
    run.metric("initial_relative_error_std", es0)

    initial_error = error(gan.generator)
    curve: list[tuple[int, float, float]] = [(0, *initial_error)]

    def step(i: int) -> dict[str, Any]:
        pick = torch.randint(0, len(normalised), (cfg["batch"],), generator=batches)
        loss = gan.training_step(normalised[pick], clock, g_opt, d_opt)
        if i >= start_average:
            averaged.update_parameters(gan.generator)
        info: dict[str, Any] = {"wasserstein": loss}
        if (i + 1) % cfg["every"] == 0:
            info["moment_error"] = error(gan.generator)
        return info

    history = run.train(
        "sde_gan", step, cfg["iterations"], {"gan": gan, "g_opt": g_opt, "d_opt": d_opt, "averaged": averaged}
    )
    train_seconds = run.train_seconds["sde_gan"]
    curve += [(i + 1, *h["moment_error"]) for i, h in enumerate(history) if "moment_error" in h]

    samples, gen_mean, gen_std, err_mean, err_std = evaluate(averaged.module)
    final_error = error(averaged.module)
    run.metric("eval_times", list(EVAL_TIMES))
    run.metric("analytic_mean", true_mean)
    run.metric("analytic_std", true_std)
    run.metric("generated_mean", gen_mean)
    run.metric("generated_std", gen_std)
    run.metric("relative_error_mean", err_mean)
    run.metric("relative_error_std", err_std)
    # reported, not checked: the last iterate (its weights oscillate; the average is what is checked)
    _, _, _, last_err_mean, last_err_std = evaluate(gan.generator)
    run.metric("last_iterate_relative_error_mean", last_err_mean)
    run.metric("last_iterate_relative_error_std", last_err_std)
    run.metric("mean_error_initial", initial_error[0])
    run.metric("mean_error_final_averaged", final_error[0])
    run.metric("std_error_initial", initial_error[1])
    run.metric("std_error_final_averaged", final_error[1])
    run.metric("moment_error_curve_current_weights", curve)
    run.metric("train_seconds", round(train_seconds, 1))
    run.metric("seconds_per_iteration", round(train_seconds / max(1, len(history)), 4))
    run.metric("config", cfg)

    if run.quick:
        run.check(
            "mean error of the averaged generator / its initial mean error (quick tier: training improves)",
            final_error[0] / initial_error[0],
            "<=",
            QUICK_RATIO,
        )
    else:
        claim = "generated mean and std at 3 times within 15% of the analytic OU moments [issue 17; paper anchors, tier C]"
        run.check("max relative error of the generated mean at t = 1, 2, 3", err_mean.max(), "<=", TOLERANCE,
                  claim=claim)  # fmt: skip
        run.check(
            "max relative error of the generated std at t = 1, 2, 3",
            err_std.max(),
            "<=",
            TOLERANCE,
            claim=claim,
        )
    _figures(run, ts, real, samples, data, curve, history, final_error)


def _figures(run: Run, ts: torch.Tensor, real: torch.Tensor, samples: torch.Tensor, data: Any,
             curve: list[tuple[int, float, float]], history: list[dict[str, Any]],
             averaged: tuple[float, float]) -> None:  # fmt: skip
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    fine = torch.linspace(0.0, T_END, 100, dtype=torch.float64)
    mean, std = data.process.mean(fine), data.process.std(fine)
    for ax, paths, title in ((axes[0], real, "data (exact OU paths)"), (axes[1], samples, "SDE-GAN samples")):
        ax.plot(ts, paths[:40, :, 0].T, color="tab:blue", lw=0.5, alpha=0.4)
        ax.plot(fine, mean, color="k", lw=1.5, label="analytic mean")
        ax.plot(fine, mean + 2 * std, color="k", lw=1, ls="--", label="analytic mean ± 2 std")
        ax.plot(fine, mean - 2 * std, color="k", lw=1, ls="--")
        ax.set_xlabel("t")
        ax.set_title(title)
    axes[0].set_ylabel("Y(t)")
    axes[0].legend(fontsize=8)
    run.figure(
        "sde_gan_paths", fig, "40 data paths and 40 generated paths (averaged generator), with the OU law."
    )

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    axes[0].plot([h["wasserstein"] for h in history], lw=0.6)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("Wasserstein estimate E D(fake) - E D(real)")
    axes[1].plot([c[0] for c in curve], [c[1] for c in curve], marker="o", ms=3, label="|mean error| / std")
    axes[1].plot([c[0] for c in curve], [c[2] for c in curve], marker="s", ms=3, label="|std / true std - 1|")
    axes[1].plot([curve[-1][0]] * 2, averaged, ls="none", marker="*", ms=11, color="k",
                 label="averaged weights (mean, std)")  # fmt: skip
    axes[1].axhline(TOLERANCE, color="0.5", ls=":", lw=1)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("moment error (average over t > 0)")
    axes[1].legend(fontsize=8)
    run.figure(
        "sde_gan_training",
        fig,
        "The Wasserstein estimate per iteration, and the generator's moment errors averaged over the sample "
        "times after t = 0 (current weights; stars: the averaged weights evaluated; dotted: 15%).",
    )
