r"""Neural controlled differential equations: a classifier/regressor driven by the data all along.

P. Kidger, J. Morrill, J. Foster, T. Lyons, *Neural controlled differential equations for
irregular time series*, NeurIPS 2020, arXiv 2005.08926. Long series: J. Morrill, C. Salvi,
P. Kidger, J. Foster, T. Lyons, *Neural rough differential equations for long time series*,
ICML 2021, arXiv 2009.08295.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from .._names import did_you_mean
from ..gradients import Adjoint
from ..interpolation import AbstractPath, CubicSplinePath, HermitePath, LinearPath, RectilinearPath
from ..log_ode import LogSignaturePath, logsignature_channels
from ..solvers import resolve_solver
from ..terms import CDETerm
from ._base import SolveOptions

__all__ = ["NeuralCDE"]

_PATHS: dict[str, type[AbstractPath]] = {
    "hermite": HermitePath,
    "cubic": CubicSplinePath,
    "linear": LinearPath,
    "rectilinear": RectilinearPath,
}
_OUTPUTS = ("final", "all")


def _mlp(inputs: int, width: int, layers: int, outputs: int) -> nn.Sequential:
    """``layers`` ReLU layers of ``width``, then a linear layer and a tanh (Kidger et al.'s field)."""
    sizes = [inputs, *[width] * layers]
    mods: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods, nn.Linear(sizes[-1], outputs), nn.Tanh())


class NeuralCDE(SolveOptions):
    r"""A neural CDE (Kidger et al., NeurIPS 2020): the hidden state is driven by a path
    :math:`X` built from the observations,

    .. math:: z(t_0) = \zeta_\theta(X(t_0)), \qquad dz(t) = f_\theta(z(t))\,dX(t), \qquad
              \hat y = \ell_\theta(z(t_N)),

    solved as the ODE :math:`\dot z = f_\theta(z)\,\dot X(t)` on a :class:`~torchnde.CDETerm`.
    :math:`f_\theta` maps the ``hidden`` state to a ``[hidden, channels]`` matrix (an MLP ending in
    tanh, which keeps the field bounded as the paper recommends). Missing values (NaN, per
    channel) are interpolated by the path; per-sample time grids ``t [batch, time]`` are solved
    per sample (each on its own span); for long series the log-ODE option steps once per window
    with the window's log-signature (a neural rough differential equation).

    **Arguments:**

    - ``channels``: the data's channels ``C`` (time and observation-count channels included: add
      them with :func:`torchnde.with_time_channel` / :func:`torchnde.with_observation_counts`).
    - ``hidden``: the size of :math:`z`; ``out``: the readout's size.
    - ``width``, ``layers``: the field's MLP (``layers`` hidden ReLU layers of ``width``).
    - ``field``, ``initial``, ``readout``: modules replacing the defaults (``field(z)`` must
      return ``[*z.shape, path channels]``; ``initial`` maps ``C`` channels to ``hidden``;
      ``readout`` maps ``hidden`` to anything).
    - ``interpolation``: ``"hermite"`` (cubic Hermite with backward differences, the default:
      causal at the knots, :math:`C^1`), ``"cubic"`` (natural spline), ``"linear"``,
      ``"rectilinear"``; see :mod:`torchnde.interpolation`.
    - ``logsignature_depth``, ``window``: give both for the log-ODE method: the path is a
      :class:`~torchnde.LogSignaturePath` of that depth over windows of that length, and the
      field returns ``logsignature_channels(C, depth)`` columns (shared grids only).
    - ``output``: ``"final"`` (the readout at the last time, ``[batch, out]``) or ``"all"`` (at
      every time of ``t``, time first as :func:`torchnde.solve`: ``[time, batch, out]``).
    - solve options (``solver``, ``dt``, ``rtol``, ``atol``, ``gradient``, ...): see
      :class:`~torchnde.models.SolveOptions`. The default ``solver="rk4"`` with ``dt=None`` takes
      one step per interval between observations (per window with the log-ODE option), landing
      on every knot; an adaptive solver with ``dt=None`` uses ``rtol``/``atol``. Every gradient
      strategy works (``gradient="adjoint"`` gets the module's parameters).

    Calling the model on ``x [*batch, time, C]`` (or a ready path) and ``t`` (``[time]``, or
    ``[*batch, time]`` per sample; default ``0, ..., time - 1``) returns the readout.

    ```python
    import torch, torchnde as nde
    t = torch.linspace(0, 1, 20)
    x = torch.randn(8, 20, 2).cumsum(1)
    x[0, 5:9] = float("nan")                          # missing points
    x = nde.with_time_channel(x, t)                   # [8, 20, 3]
    model = nde.models.NeuralCDE(3, hidden=16, out=4)
    logits = model(x, t)                              # [8, 4]
    per_time = nde.models.NeuralCDE(3, 16, 4, output="all")(x, t)  # [20, 8, 4]
    rough = nde.models.NeuralCDE(3, 16, 4, logsignature_depth=2, window=0.25)(x, t)  # 4 steps
    assert logits.shape == rough.shape == (8, 4) and per_time.shape == (20, 8, 4)
    ```
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        out: int,
        *,
        width: int = 64,
        layers: int = 2,
        field: nn.Module | None = None,
        initial: nn.Module | None = None,
        readout: nn.Module | None = None,
        interpolation: str = "hermite",
        logsignature_depth: int | None = None,
        window: float | None = None,
        output: str = "final",
        solver: Any = "rk4",
        **options: Any,
    ) -> None:
        super().__init__(solver=solver, **options)
        for name, value in (("channels", channels), ("hidden", hidden), ("out", out)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if interpolation not in _PATHS:
            raise ValueError(
                f"unknown interpolation {interpolation!r}; valid: {', '.join(_PATHS)}."
                f"{did_you_mean(interpolation, _PATHS)}"
            )
        if output not in _OUTPUTS:
            raise ValueError(
                f"unknown output {output!r}; valid: {', '.join(_OUTPUTS)}.{did_you_mean(output, _OUTPUTS)}"
            )
        if (logsignature_depth is None) != (window is None):
            raise ValueError(
                "the log-ODE option needs both logsignature_depth= (1, 2 or 3) and window= (a length "
                "in time); give both or neither"
            )
        self.channels, self.hidden, self.out = channels, hidden, out
        self.interpolation, self.output = interpolation, output
        self.logsignature_depth, self.window = logsignature_depth, window
        self.path_channels = (
            channels if logsignature_depth is None else logsignature_channels(channels, logsignature_depth)
        )
        self.field = field if field is not None else _mlp(hidden, width, layers, hidden * self.path_channels)
        self.initial = initial if initial is not None else nn.Linear(channels, hidden)
        self.readout = readout if readout is not None else nn.Linear(hidden, out)

    def vector_field(self, t: Any, z: torch.Tensor) -> torch.Tensor:
        """:math:`f_\\theta(z)` as ``[*z.shape, path channels]`` (``t`` is unused: the path carries time)."""
        del t
        return self.field(z).view(*z.shape, self.path_channels)

    def path(self, x: torch.Tensor, t: Any = None) -> AbstractPath:
        """The control built from ``x [*batch, time, C]``: the chosen interpolation, or the
        log-signature path with the log-ODE option."""
        if x.shape[-1] != self.channels:
            raise ValueError(
                f"NeuralCDE was built for {self.channels} channels, got data with {x.shape[-1]} "
                f"(shape {tuple(x.shape)}): build it with channels={x.shape[-1]}, or add the same "
                "time/count channels as in training"
            )
        if self.logsignature_depth is not None:
            return LogSignaturePath(x, t, depth=self.logsignature_depth, window=float(self.window))  # type: ignore[arg-type]
        return _PATHS[self.interpolation](x, t)

    def forward(self, x: torch.Tensor | AbstractPath, t: Any = None) -> torch.Tensor:
        """The readout at the last time ``[*batch, out]`` (``output="final"``), or at every time
        of ``t`` ``[time, *batch, out]`` (``output="all"``)."""
        path = x if isinstance(x, AbstractPath) else self.path(x, t)
        if path.channels != self.path_channels:
            raise ValueError(
                f"the path has {path.channels} channels, the model's field returns {self.path_channels}"
            )
        times = path.times if t is None or isinstance(x, AbstractPath) else t
        times = torch.as_tensor(times, dtype=path.dtype, device=path.device)
        if times.ndim > 2:
            raise ValueError(
                f"per-sample times must be [batch, time] (one batch axis), got shape {tuple(times.shape)}: "
                "flatten the batch axes of x and t first"
            )
        z0 = self.initial(path.evaluate(times[..., 0])[..., : self.channels])
        t_eval = times if self.output == "all" else times[..., [0, -1]]
        override: dict[str, Any] = {"per_sample": True} if times.ndim > 1 else {}
        if self.gradient == "adjoint" or (
            isinstance(self.gradient, Adjoint) and self.gradient.params is None
        ):
            # discovered from the term: the parameters and the path's coefficients (gradients to the data)
            override["gradient"] = Adjoint() if self.gradient == "adjoint" else self.gradient
        one_step_a_piece = (
            self.dt is None
            and "controller" not in self.solve_options
            and not resolve_solver(self.solver).adaptive
        )
        if one_step_a_piece:  # the knots are stops, so a step of the whole span is cut at each one
            override["dt"] = float(times.max() - times.min())
        term = CDETerm(
            self.vector_field, path, land_on_knots=one_step_a_piece and isinstance(path, CubicSplinePath)
        )
        zs = self._solve(term, z0, t_eval, **override).ys  # [len(t_eval), *batch, hidden]
        return self.readout(zs[-1] if self.output == "final" else zs)
