r"""A latent SDE on the stochastic Lorenz system (Li et al. 2020, Sec. 7.2), scaled down.

X. Li, T.-K. L. Wong, R. T. Q. Chen, D. Duvenaud, *Scalable Gradients for Stochastic
Differential Equations*, AISTATS 2020, arXiv 2001.01328; set-up after torchsde's
``latent_sde_lorenz`` example.

Data: paths of the stochastic Lorenz system (:func:`torchnde.datasets.stochastic_lorenz`: drift
(10, 28, 8/3), multiplicative diffusion (0.1, 0.28, 0.3), 50 observations on [0, 1], noise 0.01,
standardised), split into training and held-out paths; every training batch is 32 training paths
and their mirror images (below). Model: a
:class:`~torchnde.models.LatentSDE` with a 4-d latent state, a GRU context encoder (context 32),
drift networks of width 64, a per-coordinate diffusion, a Gaussian likelihood of fixed scale 0.1;
Euler–Maruyama with ``dt = 1e-2``; Adam on the ELBO with the KL terms annealed in (``p(z0)`` is
learned through ``KL(q(z0) || p(z0))``).

Why the training batches are mirrored: at ``t = 1`` every path is on one of the attractor's two
lobes, so the means of ``x`` and ``y`` are set by the lobes' shares. Seed 2's 128 training paths
put 62.5% on one lobe (their own ``x`` and ``y`` means are 0.17 and 0.20 of the std off the fresh
paths'), and a prior trained on them exaggerated the imbalance: 0.31 and 0.32 off, failing the
mean criterion. The system's law is invariant under :math:`(x, y, z) \mapsto (-x, -y, z)`
(:func:`torchnde.datasets.mirror_lorenz`), so each batch holds 32 training paths and their
mirror images: the lobes in exactly equal shares, the data's law unchanged, the cost of a step
the same (64 paths). Seed 2's worst mean error fell from 0.316 to 0.036 of the std (seeds 0, 1:
0.054, 0.049, against 0.053, 0.083 before).

Why the likelihood scale is fixed: the posterior SDE shares the prior's diffusion and is
discretised with ``dt = 1e-2``, so it cannot pin a path to an observation more finely than
:math:`\sigma\sqrt{dt}` (about 0.05 for ``z`` in standardised units). A learned scale shrank with
the fit (to 0.056 after 1,500 steps) and the ELBO then traded the diffusion down (``z``'s, in data
units, 0.32 against the system's 0.52 at ``t = 1``): the prior's ``z`` at ``t = 1`` came out 24%,
24% and 27% too narrow at seeds 0, 1, 2. With the scale fixed at 0.1, above that resolution, the
diffusion of ``z`` rises to 0.39 and the prior's ``z`` is 16%, 18% and 15% narrow: the bias is
reduced, not removed, and the margin is thin (with 256 training paths, or a scale of 0.2, seed 0
gave 23% and 22%; ``dt = 5e-3`` gave 10%, 16% and 17% at seeds 0, 1, 2, no clear gain for twice
the cost). With mirrored batches the prior's ``z`` at ``t = 1`` is 17.2%, 17.9% and **21.5%**
narrow at seeds 0, 1, 2: seed 2 now fails the std criterion (``x`` and ``y`` within 6% at every
seed). Whether the mirroring or the run-to-run spread moved seed 2 from 15% to 21.5% one run each
cannot tell (the estimate itself, 1,024 prior samples against 1,024 fresh paths, has a standard
error of about 3%); batches of 64 drawn from the 256 original and mirrored paths, instead of
pairs, gave 20.2% at seed 2 (mean error 0.011), so the pairing is not the cause. The shortfall is systematic: seeds 3 and 4 (full tier, checked since) give ``z`` 21.4% and
17.7% narrow (0.266 and 0.279 against 0.339 and 0.340; the posterior given the held-out paths
0.260 and 0.308 against their 0.314 and 0.348), so 17.2% to 21.5% over seeds 0 to 4, two of five
failing; ``x`` and ``y`` within 5%, mean errors within 0.076 of the std, coverage 93% and 92%.
Seeds 5 and 6 (checked later): 25.6% and 24.2% (``x`` and ``y`` within 7%, mean errors within
0.115 of the std, coverage 94% and 91%). Over seeds 0 to 6 the prior's ``z`` at ``t = 1`` is
17.2% to 25.6% narrow, 20.8% on average, four of seven beyond the 20% limit.
Where the shortfall comes from, measured on seed 2's trained model (1,024 prior samples, a
standard error of about 3% on a standard deviation; the data's ``z`` at ``t = 1`` has 0.337):

- Not ``p(z0)``. The prior is narrow at ``t = 0`` (``x``: 0.059 against the data's 0.116, the
  likelihood of scale 0.1 explaining most of that spread as noise), but ``z`` at ``t = 1`` hardly
  depends on it: ``p(z0)``'s standard deviation doubled gives 0.259 instead of 0.249, the prior
  started from the training paths' ``q(z0)`` 0.251.
- The diffusion makes the spread. With it switched off the prior's ``z`` at ``t = 1`` has 0.069
  (the system without noise: 0.067; with the noise of ``z`` alone: 0.307); the learned diffusion
  scaled by 1.2 gives 0.29, by 1.5 0.37. The sigmoid is not saturated (0.14 to 0.71 along prior
  paths).
- The aggregate posterior is already narrow: posterior samples given the training paths have
  0.289 at ``t = 1`` against those paths' 0.339 (given the held-out paths 0.280 against 0.316).
  Each path's posterior mean, regressed on its observation, has slope 0.84 at ``t = 1`` and 0.91
  to 0.94 for ``t`` in [0.9, 0.98] in ``z`` (0.99 in ``x`` and ``y``), and the posterior's own
  spread per path (0.052) does not make up for it.
- The prior follows the posterior as closely as its drift can: refitting the prior drift alone to
  the posterior drift along posterior paths (the KL path term's regression, weighted by
  :math:`1/\sigma^2`) takes ``z`` from 0.247 to 0.26, a fresh drift network to 0.273, and one that
  also sees ``t`` to 0.275: no gain from a time-dependent prior.
- The ELBO itself chooses this diffusion. With the posterior held fixed and the diffusion scaled
  by ``k`` = 0.8, 0.9, 1, 1.1, 1.25, the training ELBO is 145.8, 148.3, 149.0, 148.4, 145.8 (the
  likelihood loses about 31 nats per unit of ``k`` there, the KL terms gain about 32). Late in the
  paths the system's noise moves ``z`` by about 0.07 from one observation to the next
  (:math:`0.3 z \sqrt{\Delta t}` in standardised units), less than the likelihood scale of 0.1: the posterior smooths the noise-driven wiggles away, and the prior, fitted to the
  posterior's paths, learns a diffusion too small. A smaller scale would make the posterior follow
  them but sits at the Euler posterior's resolution :math:`\sigma\sqrt{dt}` (above), where the
  ELBO pays for the diffusion instead.

What did not help (seed 2; the prior's ``z`` at ``t = 1`` every 250 steps, 512 samples, against
the default's 0.249 after 1,500 steps): twice the schedule (3,000 steps, learning-rate decay 0.999
a step) gave 0.344, 0.298, 0.283, 0.278 at steps 250 to 1,000: the prior narrows as the fit
improves, so more steps do not let it catch up (stopped there). A posterior drift that also sees
the share of the observation interval still ahead (the exact posterior's drift, an
:math:`h`-transform, pulls harder as an observation nears) reached a better ELBO (151 against 145
at step 1,000) and a narrower prior (0.333, 0.301, 0.262, 0.243). A likelihood scale of 0.13:
0.347, 0.284, 0.286, 0.269 (and a larger share of the data's variance left to the likelihood,
outside the prior's samples).
Halving ``dt`` to 5e-3 and the scale to 0.07 (the same ratio to the resolution
:math:`\sigma\sqrt{dt}`, so the posterior can follow more of the wiggles; twice the cost): 0.377,
0.322, 0.296, 0.290, 0.285, 0.284 at steps 250 to 1,500, wider than the others at every step but
not enough: the full tier's measure gives 0.268, 20.4% narrow (mean errors within 0.025 of the
std, MSE ratio 0.0020, coverage 93%). A Laplace likelihood (torchsde's example uses one) of the
same standard deviation (:math:`b = 0.0707`), which charges small misfits more and so should make
the posterior follow the wiggles: narrower still, ``z`` 26.0% and 29.9% narrow at seeds 2 and 3
(full tier; the Gaussian's 21.5% and 21.4%), the rest as good (mean errors within 0.034 of the
std, coverage 90% and 92%). A tighter likelihood, of either shape, narrows the prior. A looser
Gaussian (scale 0.2): 13.2% at seed 2 but 21.7% at seed 3 (coverage 93% and 95%, posterior MSE
doubled): the seed-to-seed spread of this figure (about 5 points) is as large as any setting's
effect, so no single run settles a setting.

Criteria (full tier): posterior samples given a held-out path are closer to it than prior
samples (MSE); the prior's marginal at ``t = 1`` matches the data's: per coordinate the mean
within 20% of the data's standard deviation (the data's means of ``x`` and ``y`` are near zero by
the system's symmetry, so a relative error of the mean would be meaningless) and the standard
deviation within 20%; the band between the 5% and 95% quantiles of posterior samples covers
80–97% of the held-out observations (the data's observation noise is 0.001 in standardised units,
so the prior's samples, the likelihood's mean, are compared with the data as they are; the band
widened by the likelihood scale, which stands for the model's error too, is reported beside it).
The quick tier checks that training improves the held-out ELBO and that posterior samples beat
prior samples.

```python
from torchnde.experiments import run_experiment
doc = run_experiment("latent-sde-lorenz", quick=True, out="/tmp/latent-sde")  # or: torchnde run ... --quick
print(doc["passed"], doc["metrics"]["heldout_elbo"])
```
"""

from __future__ import annotations

from typing import Any

import torch

from torchnde.datasets.lorenz import mirror_lorenz, stochastic_lorenz
from torchnde.models.latent_sde import LatentSDE

from ._framework import Run, experiment

__all__: list[str] = []

_COORDS = ("x", "y", "z")


def _heldout_elbo(model: LatentSDE, xs: torch.Tensor, ts: torch.Tensor, seed: int, repeats: int = 4) -> float:
    """The mean ELBO of held-out paths over ``repeats`` posterior samples each (fixed seed)."""
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        return sum(float(model.elbo(xs, ts).elbo) for _ in range(repeats)) / repeats


def _reference(run: Run, n: int, params: dict[str, Any]) -> torch.Tensor:
    """Fresh paths at ``t = 1`` in the training data's standardised units: ``[n, 3]``."""
    raw = stochastic_lorenz(n, 2, 1.0, noise=params["noise"], normalise=False, seed=run.seed + 7919)
    mean, std = torch.tensor(params["mean"]), torch.tensor(params["std"])
    return (raw.noisy[-1] - mean) / std


@experiment(
    "latent-sde-lorenz",
    title="Latent SDE on the stochastic Lorenz system",
    paper="Li, Wong, Chen, Duvenaud, Scalable Gradients for Stochastic Differential Equations, AISTATS 2020, "
    "arXiv 2001.01328, Sec. 7.2",
    claim="a latent SDE fits the stochastic Lorenz system: posterior samples follow held-out paths, "
    "prior samples reproduce the data's distribution (qualitative [V])",
)
def run_latent_lorenz(run: Run) -> None:
    """Train a latent SDE on stochastic Lorenz paths; score posterior, prior and calibration."""
    n_train, n_test = run.pick(64, 128), run.pick(32, 64)
    iters, batch = run.pick(30, 1500), run.pick(32, 64)
    anneal, lr, gamma = run.pick(10, 200), 1e-2, run.pick(1.0, 0.998)
    n_samples, n_prior = run.pick(20, 100), run.pick(256, 1024)
    data = stochastic_lorenz(n_train + n_test, 50, 1.0, seed=run.seed)
    ts = data.t
    train, test = data.noisy[:, :n_train], data.noisy[:, n_train:]
    mirrored = mirror_lorenz(train, data.params)
    run.note(
        f"Stochastic Lorenz, {n_train} training and {n_test} held-out paths, 50 observations on [0, 1], "
        "noise 0.01, standardised. LatentSDE(latent 4, context 32, hidden 64), Gaussian likelihood of fixed "
        "scale 0.1 (above the Euler posterior's resolution sigma sqrt(dt)), Euler dt = 1e-2. "
        f"Adam lr {lr} (decay {gamma} per step), batches of {batch // 2} training paths and their mirror images "
        "under the system's symmetry (x, y, z) -> (-x, -y, z), which leaves the data's law unchanged and "
        f"balances the attractor's two lobes, {iters} steps, KL weight annealed "
        f"linearly over {anneal} steps. Evaluation: {n_samples} posterior samples per held-out path, "
        f"{n_prior} prior samples, a reference of {n_prior} fresh paths at t = 1."
    )
    torch.manual_seed(run.seed)
    model = LatentSDE(3, 4, 32, 64, obs_noise=0.1, solver="euler", dt=1e-2)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    gen = run.generator(1)
    elbo_before = _heldout_elbo(model, test, ts, run.seed)

    def step(i: int) -> dict[str, Any]:
        idx = torch.randperm(n_train, generator=gen)[: batch // 2]
        opt.zero_grad()
        paths = torch.cat([train[:, idx], mirrored[:, idx]], dim=1)  # the lobes in equal shares
        terms = model.elbo(paths, ts, kl_weight=min(1.0, (i + 1) / anneal))
        terms.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
        sched.step()
        return {"loss": terms.loss, "elbo": terms.elbo, "kl": terms.kl_z0 + terms.kl_path}

    hist = run.train("latent-sde", step, iters, {"model": model, "opt": opt, "sched": sched, "gen": gen})
    elbo_after = _heldout_elbo(model, test, ts, run.seed)
    run.metric("heldout_elbo", {"before": elbo_before, "after": elbo_after})
    run.metric("noise_scale", float(model.noise_scale.detach()))
    run.check("held-out ELBO after training minus before", elbo_after - elbo_before, ">", 0.0)

    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(run.seed + 1)
        post = model.sample_posterior(test, ts, n_samples)  # [T, S, B, 3]
        prior = model.sample_prior(ts, n_samples * n_test).reshape(post.shape)
        final = model.sample_prior(ts, n_prior)[-1]
        predictive = post + model.noise_scale * torch.randn_like(post)
    post_mse = float((post - test.unsqueeze(1)).pow(2).mean())
    prior_mse = float((prior - test.unsqueeze(1)).pow(2).mean())
    lo, hi = post.quantile(0.05, dim=1), post.quantile(0.95, dim=1)
    coverage = float(((test >= lo) & (test <= hi)).double().mean())
    wide_lo, wide_hi = predictive.quantile(0.05, dim=1), predictive.quantile(0.95, dim=1)
    run.metric(
        "coverage_90_with_likelihood_noise", float(((test >= wide_lo) & (test <= wide_hi)).double().mean())
    )
    ref = _reference(run, n_prior, data.params)
    mean_err = ((final.mean(0) - ref.mean(0)).abs() / ref.std(0)).tolist()
    std_err = ((final.std(0) / ref.std(0) - 1).abs()).tolist()
    run.metric("posterior_mse", post_mse)
    run.metric("prior_mse", prior_mse)
    run.metric("coverage_90", coverage)
    run.metric("final_mean", {"prior": final.mean(0).tolist(), "data": ref.mean(0).tolist()})
    run.metric("final_std", {"prior": final.std(0).tolist(), "data": ref.std(0).tolist()})
    run.metric(  # the prior learns the aggregate posterior's law: where its narrowness starts
        "posterior_final_std",
        {"posterior": post[-1].flatten(0, 1).std(0).tolist(), "heldout": test[-1].std(0).tolist()},
    )
    run.metric("final_mean_error_over_std", dict(zip(_COORDS, mean_err)))
    run.metric("final_std_relative_error", dict(zip(_COORDS, std_err)))
    run.check("posterior-sample MSE / prior-sample MSE on held-out paths", post_mse / prior_mse, "<", 1.0)
    if not run.quick:
        run.check(
            "prior final-time mean error / data std (worst coordinate)",
            max(mean_err),
            "<=",
            0.2,
            claim="qualitative: samples resemble the data [V]",
        )
        run.check("prior final-time std relative error (worst coordinate)", max(std_err), "<=", 0.2)
        run.check("90% posterior band coverage of held-out points", coverage, ">=", 0.80)
        run.check("90% posterior band coverage of held-out points (not over-wide)", coverage, "<=", 0.97)
    run.note(
        "Measured in the full tier at seeds 0, 1, 2: mirroring the batches took seed 2's worst prior mean error "
        "from 0.316 to 0.036 of the std (its training paths put 62.5% on one lobe); the prior's z at t = 1 is "
        "17.2%, 17.9% and 21.5% too narrow (the criterion is 20%: seed 2 fails it), x and y within 6%; over seeds "
        "0 to 6 it is 17.2% to 25.6% narrow, 20.8% on average, four of seven beyond 20%: the criterion is fragile. The "
        "posterior given held-out paths is already narrow in z at t = 1 (seed 2: 0.280 against 0.316; metric "
        "posterior_final_std), the prior narrower again. The ELBO itself selects the too-small diffusion: the "
        "likelihood scale of 0.1 lets the posterior smooth away z's noise-driven wiggles (about 0.07 between "
        "observations); a longer schedule, a time-dependent prior drift, a posterior drift that sees the time "
        "to the next observation and a scale of 0.13 did not widen the prior (module docstring)."
    )
    _figures(run, hist, ts, test, post, lo, hi, final, ref)


def _figures(
    run: Run,
    hist: list[dict[str, Any]],
    ts: torch.Tensor,
    test: torch.Tensor,
    post: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    final: torch.Tensor,
    ref: torch.Tensor,
) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([-h["elbo"] for h in hist], lw=1, label="-ELBO (batch)")
    ax.plot([h["loss"] for h in hist], lw=1, label="loss (annealed KL)")
    ax.set_yscale("symlog")
    ax.set_xlabel("step")
    ax.set_ylabel("negative ELBO")
    ax.set_title("training")
    ax.legend(fontsize=8)
    run.figure("training", fig, "Training objective per step (one posterior sample per path).")

    fig, axes = plt.subplots(2, 3, figsize=(13, 6), sharex=True)
    for row, path in enumerate((0, 1)):
        for col, name in enumerate(_COORDS):
            ax = axes[row, col]
            ax.fill_between(ts, lo[:, path, col], hi[:, path, col], alpha=0.3, label="90% posterior band")
            for s in range(min(5, post.shape[1])):
                ax.plot(ts, post[:, s, path, col], lw=0.7, color="tab:blue")
            ax.plot(ts, test[:, path, col], "k.", ms=3, label="held-out observations")
            ax.set_title(f"held-out path {path}, {name}", fontsize=10)
            ax.set_xlabel("t")
            ax.set_ylabel(f"{name} (standardised)")
    axes[0, 0].legend(fontsize=7)
    run.figure("posterior", fig, "Posterior samples given two held-out paths, with their 90% band.")

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for col, name in enumerate(_COORDS):
        ax = axes[col]
        ax.hist(ref[:, col], bins=30, density=True, alpha=0.5, label="data")
        ax.hist(final[:, col], bins=30, density=True, alpha=0.5, label="prior samples")
        ax.set_xlabel(f"{name}(1) (standardised)")
        ax.set_ylabel("density")
        ax.set_title(f"marginal of {name} at t = 1", fontsize=10)
    axes[0].legend(fontsize=8)
    run.figure("prior_marginals", fig, "The prior's marginals at t = 1 against fresh data paths.")
