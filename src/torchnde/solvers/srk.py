r"""Stochastic Runge–Kutta methods of strong order 1.5 for Itô SDEs (Rößler 2010).

With :math:`I_k = \Delta W`, :math:`I_{(k,0)} = \int_{t_0}^{t_1} W(t_0, s)\,ds = h\,(\Delta W/2 + H)`
(:math:`H` the space-time Lévy area, which the Brownian motion must provide:
``levy_area=True``), :math:`I_{(k,k)} = (\Delta W^2 - h)/2` and
:math:`I_{(k,k,k)} = (\Delta W^3 - 3h\,\Delta W)/6`:

- **SRI2** (diagonal and scalar noise), stages :math:`i = 1..4`:

  .. math:: H^{(0)}_i = y_0 + \sum_{j<i} A^{(0)}_{ij} f(H^{(0)}_j)\,h + \sum_{j<i} B^{(0)}_{ij}
            g(H^{(1)}_j)\,\frac{I_{(k,0)}}{h},\qquad
            H^{(1)}_i = y_0 + \sum_{j<i} A^{(1)}_{ij} f(H^{(0)}_j)\,h + \sum_{j<i} B^{(1)}_{ij}
            g(H^{(1)}_j)\,\sqrt h,

  .. math:: y_1 = y_0 + \sum_i \alpha_i f(H^{(0)}_i)\,h + \sum_i g(H^{(1)}_i)\Big(\beta^{(1)}_i I_k
            + \beta^{(2)}_i \frac{I_{(k,k)}}{\sqrt h} + \beta^{(3)}_i \frac{I_{(k,0)}}{h}
            + \beta^{(4)}_i \frac{I_{(k,k,k)}}{h}\Big),

  with :math:`f` at :math:`t_0 + c^{(0)}_i h` and :math:`g` at :math:`t_0 + c^{(1)}_i h`, products
  taken entry by entry (diagonal) or along the one noise column (scalar).
- **SRA1** (additive noise, :math:`g = g(t)`), two stages:
  :math:`H^{(0)}_i = y_0 + \sum_{j<i} A^{(0)}_{ij} f(H^{(0)}_j)h + \sum_{j<i} B^{(0)}_{ij}
  g(t_0 + c^{(1)}_j h)\,I_{(k,0)}/h`,
  :math:`y_1 = y_0 + \sum_i \alpha_i f(H^{(0)}_i) h + \sum_i g(t_0 + c^{(1)}_i h)(\beta^{(1)}_i I_k
  + \beta^{(2)}_i I_{(k,0)}/h)`.

Each stage's drift and diffusion is evaluated once, and evaluations with zero weight are
skipped: SRI2 costs three drift (the first is the loop's ``f0``) and four diffusion
evaluations, SRA1 two of each.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Func, StepResult
from .stochastic import AbstractSDESolver, axpy, step_columns

__all__ = ["SRK"]

# Rößler (2010), SRI2 (Table 5.2 of the paper, the diagonal-noise variant): (c0, c1, A0, A1, B0,
# B1, alpha, beta1..beta4), A and B strictly lower triangular rows.
_SRI2 = {
    "c0": (0.0, 1.0, 0.5, 0.0),
    "c1": (0.0, 0.25, 1.0, 0.25),
    "a0": ((), (1.0,), (0.25, 0.25), (0.0, 0.0, 0.0)),
    "a1": ((), (0.25,), (1.0, 0.0), (0.0, 0.0, 0.25)),
    "b0": ((), (0.0,), (1.0, 0.5), (0.0, 0.0, 0.0)),
    "b1": ((), (-0.5,), (1.0, 0.0), (2.0, -1.0, 0.5)),
    "alpha": (1 / 6, 1 / 6, 2 / 3, 0.0),
    "beta1": (-1.0, 4 / 3, 2 / 3, 0.0),
    "beta2": (1.0, -4 / 3, 1 / 3, 0.0),
    "beta3": (2.0, -4 / 3, -2 / 3, 0.0),
    "beta4": (-2.0, 5 / 3, -2 / 3, 1.0),
}
# Rößler (2010), SRA1 (Table 6.1).
_SRA1 = {
    "c0": (0.0, 0.75),
    "c1": (1.0, 0.0),
    "a0": ((), (0.75,)),
    "b0": ((), (1.5,)),
    "alpha": (1 / 3, 2 / 3),
    "beta1": (1.0, 0.0),
    "beta2": (-1.0, 1.0),
}


def _combine(base: torch.Tensor, terms: list[tuple[float, Any, Any]]) -> torch.Tensor:
    """``base + sum(c * scale * x)`` over the terms with a non-zero coefficient ``c`` (``scale``:
    a float, or per sample a column; ``x`` may be ``None`` where ``c`` is zero)."""
    out = base
    for c, scale, x in terms:
        if c != 0.0:
            out = axpy(out, x, c * scale)
    return out


class SRK(AbstractSDESolver):
    r"""Rößler's stochastic Runge–Kutta methods of strong order 1.5 for Itô SDEs: SRI2 for
    diagonal and scalar noise, SRA1 for additive noise (see the module docstring), as torchsde's
    ``srk``. The Brownian motion must carry the space-time Lévy area (``solve`` makes one that
    does when the term has none).

    ??? cite "Reference"
        A. Rößler, Runge–Kutta methods for the strong approximation of solutions of stochastic
        differential equations, *SIAM J. Numer. Anal.* 48 (2010) 922–952.

    ```python
    import torch, torchnde as nde
    term = nde.SDETerm(lambda t, y: -y, lambda t, y: 0.5 * torch.ones(*y.shape, 1, dtype=y.dtype),
                       noise="additive")
    sol = nde.solve(term, torch.zeros(4, 1, dtype=torch.float64), torch.linspace(0, 1, 2),
                    solver="srk", dt=0.05)
    ```
    """

    name: ClassVar[str] = "srk"
    order: ClassVar[int] = 2
    noises: ClassVar[tuple[str, ...]] = ("additive", "diagonal", "scalar")
    strong_orders: ClassVar[dict[str, float]] = {"additive": 1.5, "diagonal": 1.5, "scalar": 1.5}
    weak_order: ClassVar[float] = 1.5
    levy_area: ClassVar[bool] = True

    def step(self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = False,
             state: Any = None) -> StepResult:  # fmt: skip
        sde = func.sde  # type: ignore[attr-defined]
        dw, hh = sde.levy(t0, dt)
        steps = step_columns(dt, dw)  # the increments' layout: [B, ..., m] per sample
        i_k0 = steps[0] * (0.5 * dw + hh)
        if sde.noise == "additive":
            return StepResult(self._additive(func, sde, t0, y0, f0, dt, steps, dw, i_k0), (), (), None)
        return StepResult(self._diagonal(func, sde, t0, y0, f0, dt, steps, dw, i_k0), (), (), None)

    @staticmethod
    def _additive(func: Func, sde: Any, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, steps: tuple,
                  dw: torch.Tensor, i_k0: torch.Tensor) -> torch.Tensor:  # fmt: skip
        tab = _SRA1
        h, _ = step_columns(dt, y0)
        per_step = steps[1]  # divides i_k0, in the increments' layout
        gs = [sde.diffusion(t0 + c * dt, y0) for c in tab["c1"]]
        fs = [f0]
        for i in range(1, len(tab["c0"])):
            a, b = tab["a0"][i], tab["b0"][i]
            stage = _combine(y0, [(a[j], h, fs[j]) for j in range(i)])
            for j in range(i):
                if b[j] != 0.0:
                    stage = stage + sde.prod(gs[j], i_k0 * (b[j] / per_step))
            fs.append(func(t0 + tab["c0"][i] * dt, stage))
        y1 = _combine(y0, [(w, h, f) for w, f in zip(tab["alpha"], fs)])
        for i, g in enumerate(gs):
            y1 = y1 + sde.prod(g, tab["beta1"][i] * dw + tab["beta2"][i] / per_step * i_k0)
        return y1

    @staticmethod
    def _diagonal(func: Func, sde: Any, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, steps: tuple,
                  dw: torch.Tensor, i_k0: torch.Tensor) -> torch.Tensor:  # fmt: skip
        tab = _SRI2
        h, _ = step_columns(dt, y0)
        root = h**0.5
        dh, ddiv = steps  # in the increments' layout (scalar noise: [..., 1])
        droot = ddiv**0.5
        i_kk = 0.5 * (dw * dw - dh)
        i_kkk = (dw * dw * dw - 3 * dh * dw) / 6
        scalar = sde.noise == "scalar"
        fs: list[torch.Tensor | None] = []
        gs: list[torch.Tensor] = []
        y1 = y0
        for i in range(len(tab["c0"])):
            a0, a1, b0, b1 = tab["a0"][i], tab["a1"][i], tab["b0"][i], tab["b1"][i]
            drifts = [(a0[j], h, fs[j]) for j in range(i)]
            h0 = _combine(
                y0, drifts + [(b0[j], 1.0, gs[j] * (i_k0 / ddiv)) for j in range(i) if b0[j] != 0.0]
            )
            h1 = _combine(
                y0, [(a1[j], h, fs[j]) for j in range(i)] + [(b1[j], root, gs[j]) for j in range(i)]
            )
            later = any(row[i] != 0.0 for k in range(i + 1, 4) for row in (tab["a0"][k], tab["a1"][k]))
            if i == 0:
                f = f0
            elif tab["alpha"][i] != 0.0 or later:
                f = func(t0 + tab["c0"][i] * dt, h0)
            else:
                f = None
            fs.append(f)
            g = sde.diffusion(t0 + tab["c1"][i] * dt, h1)
            g = g.squeeze(-1) if scalar else g
            gs.append(g)
            weight = (tab["beta1"][i] * dw + tab["beta2"][i] / droot * i_kk + tab["beta3"][i] / ddiv * i_k0
                      + tab["beta4"][i] / ddiv * i_kkk)  # fmt: skip
            if f is not None and tab["alpha"][i] != 0.0:
                y1 = axpy(y1, f, tab["alpha"][i] * h)
            y1 = y1 + g * weight
        return y1
