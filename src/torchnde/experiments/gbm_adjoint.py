r"""The stochastic adjoint converges to the true pathwise gradient (Li et al. 2020).

X. Li, T.-K. L. Wong, R. T. Q. Chen, D. Duvenaud, *Scalable Gradients for Stochastic
Differential Equations*, AISTATS 2020, arXiv 2001.01328, Sec. 7.1.

Geometric Brownian motion :math:`dy = \mu y\,dt + \sigma y\,dW` (Itô) has the closed-form
solution :math:`y_T = y_0 \exp\bigl((\mu - \sigma^2/2) T + \sigma W_T\bigr)`, so on one fixed
Brownian path the loss :math:`L = \frac1P \sum_p y_T^{(p)}` has the pathwise derivatives

.. math:: \frac{\partial L}{\partial \mu} = \frac1P\sum_p T\,y_T^{(p)},\qquad
          \frac{\partial L}{\partial \sigma} = \frac1P\sum_p (W_T^{(p)} - \sigma T)\,y_T^{(p)},\qquad
          \frac{\partial L}{\partial y_0^{(p)}} = \frac{y_T^{(p)}}{P\,y_0^{(p)}}.

The model is a :class:`~torchnde.models.NeuralSDE` whose drift and diffusion are
:math:`\mu y` and :math:`\sigma y` with learnable :math:`\mu, \sigma`; it is solved by Milstein's
method on one :class:`~torchnde.BrownianInterval` for steps ``dt`` from 1e-1 to 1e-3, and the
gradient is taken by the stochastic adjoint (backward Stratonovich SDE on the same path). The
relative error against the analytic gradient must be at most 1e-2 at ``dt = 1e-3`` and fall with
``dt`` (log–log slope at least 0.4). For comparison the exact gradient of the discretisation
(backprop) and reversible Heun (the Stratonovich form, :math:`(\mu - \sigma^2/2) y` drift) are
reported too.

```python
from torchnde.experiments import run_experiment
doc = run_experiment("stochastic-adjoint-gbm", quick=True, out="/tmp/gbm")  # or: torchnde run ... --quick
print(doc["passed"], doc["metrics"]["relative_error"]["adjoint"])
```
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import torchnde as nde
from torchnde.models.neural_sde import NeuralSDE

from ._fits import loglog_slope
from ._framework import Run, experiment

__all__: list[str] = []

_MU, _SIGMA, _T = 0.5, 0.5, 1.0
_DTYPE = torch.float64


class GBMField(nn.Module):
    r"""``scale * y`` with ``scale`` a learnable scalar, less ``correction * sigma**2 / 2`` when a
    ``sigma`` is shared (the Stratonovich drift :math:`(\mu - \sigma^2/2) y`)."""

    def __init__(self, scale: float, sigma: nn.Parameter | None = None) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale, dtype=_DTYPE))
        self.sigma = sigma

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.sigma is None:
            return self.scale * y
        return (self.scale - 0.5 * self.sigma**2) * y


def analytic_gradient(y0: torch.Tensor, w_t: torch.Tensor, mu: float, sigma: float, t: float) -> torch.Tensor:
    """``[dL/dmu, dL/dsigma, dL/dy0 (one per path)]`` for ``L = mean(y_T)`` on the path ``W_T = w_t``."""
    y_t = y0 * torch.exp((mu - 0.5 * sigma**2) * t + sigma * w_t)
    n = y0.numel()
    return torch.cat(
        [
            (t * y_t).sum().reshape(1) / n,
            ((w_t - sigma * t) * y_t).sum().reshape(1) / n,
            (y_t / (n * y0)).reshape(-1),
        ]
    )


def pathwise_gradient(strategy: str, y0: torch.Tensor, bm: nde.BrownianInterval, dt: float) -> torch.Tensor:
    """The gradient of ``mean(y_T)`` in the layout of :func:`analytic_gradient`, by ``strategy``:
    ``"adjoint"`` and ``"backprop"`` solve the Itô SDE by Milstein's method, ``"reversible"`` its
    Stratonovich form by reversible Heun."""
    diffusion = GBMField(_SIGMA)
    if strategy == "reversible":
        drift = GBMField(_MU, diffusion.scale)
        options: dict[str, Any] = dict(calculus="stratonovich", solver="reversible_heun")
    else:
        drift = GBMField(_MU)
        options = dict(solver="milstein")
    model = NeuralSDE(drift, diffusion, dt=dt, gradient=strategy, t_span=(0.0, _T), **options)
    x0 = y0.clone().requires_grad_(True)
    loss = model(x0, brownian=bm).mean()
    g_mu, g_sigma, g_y0 = torch.autograd.grad(loss, (drift.scale, diffusion.scale, x0))
    return torch.cat([g_mu.reshape(1), g_sigma.reshape(1), g_y0.reshape(-1)])


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


@experiment(
    "stochastic-adjoint-gbm",
    title="Stochastic adjoint: pathwise gradients of geometric Brownian motion",
    paper="Li, Wong, Chen, Duvenaud, Scalable Gradients for Stochastic Differential Equations, AISTATS 2020, "
    "arXiv 2001.01328",
    claim="the stochastic adjoint converges to the true pathwise gradient as the step size shrinks",
)
def run_gbm_adjoint(run: Run) -> None:
    """Adjoint (and backprop, reversible Heun) gradients against the closed form, dt 1e-1 to 1e-3."""
    import matplotlib.pyplot as plt

    n_paths = run.pick(8, 32)
    dts = run.pick([1e-1, 1e-2, 1e-3], [1e-1, 5e-2, 2e-2, 1e-2, 5e-3, 2e-3, 1e-3])
    strategies = run.pick(("adjoint",), ("adjoint", "backprop", "reversible"))
    run.note(
        f"GBM dy = mu y dt + sigma y dW (Ito), mu = {_MU}, sigma = {_SIGMA}, y0 ~ U[0.5, 1.5], T = {_T}, "
        f"{n_paths} paths on one BrownianInterval (seed {run.seed}, leaves of 2^-14), loss mean(y_T), float64. Milstein forward; "
        "the adjoint solves the backward SDE in Stratonovich form by the midpoint method; reversible Heun "
        f"solves the Stratonovich form. Steps dt = {dts}."
    )
    y0 = 0.5 + torch.rand(n_paths, 1, generator=run.generator(), dtype=_DTYPE)
    # leaves of 2**-14 (6e-5, below the smallest step): fewer tree levels per query, the same law
    bm = nde.BrownianInterval(0.0, _T, (n_paths, 1), dtype=_DTYPE, seed=run.seed, tol=2**-14)
    want = analytic_gradient(y0, bm(0.0, _T), _MU, _SIGMA, _T)
    errors: dict[str, list[float]] = {s: [] for s in strategies}
    with run.stage("gradients", total=len(dts) * len(strategies), unit="solve") as bar:
        for dt in dts:
            for strategy in strategies:
                errors[strategy].append(_relative(pathwise_gradient(strategy, y0, bm, dt), want))
                bar.update()
    slopes = {s: loglog_slope(dts, e) for s, e in errors.items()}
    run.metric("dt", dts)
    run.metric("relative_error", errors)
    run.metric("loglog_slope", slopes)
    run.metric("analytic_gradient_mu_sigma", want[:2])
    run.check(
        "adjoint relative gradient error at dt = 1e-3",
        errors["adjoint"][-1],
        "<=",
        1e-2,
        claim="the adjoint converges to the true pathwise gradient [R]",
    )
    run.check("adjoint error log-log slope in dt", slopes["adjoint"], ">=", 0.4)

    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, marker in zip(strategies, "osd"):
        ax.loglog(dts, errors[strategy], marker=marker, label=f"{strategy} (slope {slopes[strategy]:.2f})")
    ref = errors["adjoint"][0]
    ax.loglog(dts, [ref * (d / dts[0]) ** 0.5 for d in dts], "k:", lw=1, label="slope 0.5")
    ax.loglog(dts, [ref * (d / dts[0]) for d in dts], "k--", lw=1, label="slope 1")
    ax.axhline(1e-2, color="tab:red", lw=0.8, ls="-.", label="criterion at dt = 1e-3")
    ax.set_xlabel("step size dt")
    ax.set_ylabel("relative gradient error")
    ax.set_title(f"GBM pathwise gradient, {n_paths} paths, one Brownian path")
    ax.legend(fontsize=7)
    run.figure(
        "gradient_error",
        fig,
        "Relative error of the gradient of mean(y_T) with respect to (mu, sigma, y0) against the closed "
        "form, on one Brownian path.",
    )
