r"""ODE-RNN: a recurrent network whose hidden state follows a neural ODE between observations.

Y. Rubanova, R. T. Q. Chen, D. Duvenaud, *Latent ODEs for Irregularly-Sampled Time Series*,
NeurIPS 2019, arXiv 1907.03907, Algorithm 1.

Between two observation times the hidden state evolves by :math:`\dot h = f_\theta(t, h)`; at
an observation it is updated by a GRU cell that sees the observed values and which channels
were observed. The time gaps therefore enter through the dynamics, not as an input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from ..gradients import Adjoint
from ._base import SolveOptions, as_field

__all__ = ["ODERNN", "ODERNNStates", "check_series", "evolve"]


class ODERNNStates(NamedTuple):
    """The hidden states of an ODE-RNN run, batch first.

    - ``before``: ``[B, T, H]``, the state evolved up to each observation time, before its update
      (what the earlier observations predict there).
    - ``after``: ``[B, T, H]``, the state just after the update at each observation time.
    - ``final``: ``[B, H]``, the state at the end of the run (after the last update in the
      direction of travel, evolved on to ``t_end`` when given).

    Index ``i`` always refers to ``times[..., i]``, also when the run goes backwards.
    """

    before: torch.Tensor
    after: torch.Tensor
    final: torch.Tensor


def check_series(
    times: Any, values: torch.Tensor, mask: torch.Tensor | None, who: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(times, values, mask)`` checked and normalised, or an error naming the fix.

    ``times`` is ``[T]`` (a grid shared by the batch, strictly increasing) or ``[B, T]`` (one
    grid per sample, non-decreasing: a repeated time is padding and must be masked out);
    ``values`` is ``[B, T, C]``; ``mask`` is ``None`` (all observed), ``[B, T]`` (per time point)
    or ``[B, T, C]`` (per channel), boolean or 0/1. Returns ``mask`` as a ``[B, T, C]`` bool
    tensor and ``times`` as a floating tensor.
    """
    if not isinstance(values, torch.Tensor) or values.ndim != 3:
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"{who}: values must be a [batch, time, channels] tensor, got {shape}")
    batch, length, channels = values.shape
    t = times if isinstance(times, torch.Tensor) else torch.as_tensor(times, dtype=values.dtype)
    t = t.to(values.device)
    if not t.is_floating_point():
        t = t.to(values.dtype)
    if t.shape not in ((length,), (batch, length)):
        raise ValueError(
            f"{who}: times must be [T] (shared) or [B, T] (per sample) with T = {length} and B = {batch} "
            f"to match values {tuple(values.shape)}, got {tuple(t.shape)}"
        )
    if length < 1:
        raise ValueError(f"{who}: the series is empty (values has 0 time points)")
    gaps = t.diff(dim=-1)
    if t.ndim == 1 and bool((gaps <= 0).any()):
        raise ValueError(
            f"{who}: a shared time grid must be strictly increasing; merge repeated times into one "
            "point (mask the channels not observed there) or pass per-sample times [B, T]"
        )
    if t.ndim == 2 and bool((gaps < 0).any()):
        raise ValueError(f"{who}: per-sample times [B, T] must be non-decreasing along each row")
    if mask is None:
        full = torch.ones_like(values, dtype=torch.bool)
    else:
        if not isinstance(mask, torch.Tensor) or mask.shape not in (
            (batch, length),
            (batch, length, channels),
        ):
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(
                f"{who}: mask must be [B, T] or [B, T, C] = {tuple(values.shape)} (True where observed), got {shape}"
            )
        full = (mask != 0).to(values.device)
        if full.ndim == 2:
            full = full.unsqueeze(-1).expand(batch, length, channels)
    if t.ndim == 2 and bool((full.any(-1)[:, 1:] & (gaps == 0)).any()):
        raise ValueError(
            f"{who}: a repeated time in per-sample times is padding and must be fully masked; merge "
            "observations at the same time into one point"
        )
    return t, values, full


def _with_params(strategy: Any, params: tuple[torch.Tensor, ...]) -> Any:
    """``strategy`` with ``params`` filled in when it is an adjoint that has none."""
    if strategy == "adjoint":
        strategy = Adjoint()
    if isinstance(strategy, Adjoint) and strategy.params is None:
        return dataclasses.replace(strategy, params=params)
    return strategy


def evolve(
    model: SolveOptions, field: Callable, params: Callable[[], tuple[torch.Tensor, ...]], h: torch.Tensor,
    t_from: torch.Tensor, t_to: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    r"""``h`` carried by ``field`` from ``t_from`` to ``t_to`` with ``model``'s solve options.

    Both times are 0-d (a shared grid: one solve on ``[t_from, t_to]``) or ``[B]`` (per sample).
    Per sample, the batch is solved together on :math:`s \in [0, 1]` with
    :math:`t = t_\text{from} + s\,\Delta` and :math:`dh/ds = \Delta\, f(t, h)`, the same ODE
    rescaled to each sample's own gap :math:`\Delta` (zero: the state stays; negative: backwards).
    A fixed ``dt`` is kept as the largest step in time units. The adjoint gets ``params()`` (the
    field's parameters) only.
    """
    gradient = _with_params(model.gradient, params())
    if t_from.ndim == 0:
        if bool(t_from == t_to):
            return h
        return model._solve(field, h, torch.stack([t_from, t_to]), gradient=gradient).ys[-1]
    span = (t_to - t_from).to(h.dtype)
    longest = float(span.detach().abs().max())
    if longest == 0.0:
        return h
    shape = (-1,) + (1,) * (h.ndim - 1)
    start, gap = t_from.to(h.dtype).reshape(shape), span.reshape(shape)

    def rescaled(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return gap * field(start + s * gap, y)

    override = {} if model.dt is None else {"dt": min(1.0, model.dt / longest)}
    unit = torch.tensor([0.0, 1.0], dtype=h.dtype, device=h.device)
    return model._solve(rescaled, h, unit, gradient=gradient, **override).ys[-1]


class ODERNN(SolveOptions):
    r"""An ODE-RNN (Rubanova et al., NeurIPS 2019): a GRU whose hidden state follows a neural ODE
    between irregular observations.

    For observation times :math:`t_1 < \dots < t_T` (or backwards, ``reverse=True``):

    .. math::

        h_i' = \mathrm{ODESolve}(f_\theta, h_{i-1}, (t_{i-1}, t_i)), \qquad
        h_i = \begin{cases} \mathrm{GRUCell}([x_i \odot m_i,\ m_i],\ h_i') & \text{if any } m_i \\
        h_i' & \text{if } t_i \text{ is wholly missing} \end{cases}

    with :math:`h_0 = 0` at the first time, :math:`x_i` the values and :math:`m_i` the 0/1
    observation mask of each channel. A missing value never reaches the network (it is replaced
    by 0 and flagged by the mask), so whatever it holds, NaN included, does not change the output.

    **Arguments:**

    - ``field``: the hidden-state network :math:`f_\theta` (``field(h)`` or ``field(t, h)``).
    - ``cell``: the update at an observation, an ``nn.GRUCell(2 * channels, hidden)`` (any
      ``nn.RNNCellBase`` with that input size works).
    - ``readout``: optional module from the hidden state to an output (``nn.Linear(hidden, C)``),
      used by :meth:`predict` and :meth:`one_step`.
    - solve options (``solver``, ``rtol``, ``atol``, ``dt``, ``gradient``, ...): see
      :class:`~torchnde.models.SolveOptions`; each gap between observations is one solve.
      ``gradient="adjoint"`` differentiates the field's parameters only. After a call,
      ``self.stats`` / ``self.nfe`` describe the last of these solves.

    **Data layout** (batch first, as torchcde): ``times`` ``[T]`` shared by the batch (strictly
    increasing; a union grid with masks) or ``[B, T]`` per sample (non-decreasing; a repeated
    time is padding and must be masked out); ``values`` ``[B, T, C]``; ``mask`` ``[B, T]`` or
    ``[B, T, C]``, True where observed (``None``: all observed). Per-sample gaps are solved
    together as one batch, each sample's ODE rescaled to its own gap (see :func:`evolve`), so a
    per-sample grid costs the same number of solves as a shared one.

    ```python
    import torch, torchnde as nde
    from torch import nn
    rnn = nde.models.ODERNN(nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 8)),
                            nn.GRUCell(2 * 2, 8), readout=nn.Linear(8, 2), solver="rk4", dt=0.1)
    times, values = torch.linspace(0, 1, 5), torch.randn(3, 5, 2)
    mask = torch.rand(3, 5, 2) > 0.3
    rnn(times, values, mask).shape                                 # torch.Size([3, 8]): the final state
    rnn.predict(times, values, mask, torch.tensor([1.5, 2.0])).shape  # torch.Size([3, 2, 2])
    ```
    """

    def __init__(
        self,
        field: Callable[..., Any],
        cell: nn.RNNCellBase,
        *,
        readout: nn.Module | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not isinstance(cell, nn.RNNCellBase):
            raise TypeError(
                f"ODERNN: cell must be an nn.GRUCell (or another nn.RNNCellBase), got {type(cell).__name__}"
            )
        if cell.input_size % 2:
            raise ValueError(
                f"ODERNN: the cell sees [values, mask], so its input size must be 2 * channels; got {cell.input_size}"
            )
        self.field = field
        self.cell = cell
        self.readout = readout

    @property
    def hidden_size(self) -> int:
        """The size of the hidden state :math:`h`."""
        return int(self.cell.hidden_size)

    def vector_field(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The hidden-state field :math:`f_\\theta(t, h)`."""
        return as_field(self.field)(t, h)

    def _field_params(self) -> tuple[torch.Tensor, ...]:
        net = self.field
        return tuple(p for p in net.parameters() if p.requires_grad) if isinstance(net, nn.Module) else ()

    def _evolve(self, h: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor) -> torch.Tensor:
        return evolve(self, self.vector_field, self._field_params, h, t_from, t_to)

    def states(
        self,
        times: Any,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        reverse: bool = False,
        h0: torch.Tensor | None = None,
        t_end: Any = None,
    ) -> ODERNNStates:
        """Run over the observations and return every hidden state (:class:`ODERNNStates`).

        ``reverse=True`` runs from the last time to the first (the latent-ODE encoder);
        ``h0`` is the state at the first time of travel (default zeros); ``t_end``, if given,
        is a time beyond the last one of travel (a float, or ``[B]``) to which the final state is
        carried after the last update.
        """
        t, values, mask = check_series(times, values, mask, type(self).__name__)
        channels = values.shape[-1]
        if 2 * channels != self.cell.input_size:
            raise ValueError(
                f"ODERNN: values have {channels} channels, so the cell needs input size {2 * channels} "
                f"([values, mask]); it has {self.cell.input_size}"
            )
        batch, length = values.shape[:2]
        if h0 is not None and tuple(h0.shape) != (batch, self.hidden_size):
            raise ValueError(
                f"ODERNN: h0 must be [batch, hidden] = {(batch, self.hidden_size)}, got {tuple(h0.shape)}"
            )
        h = values.new_zeros(batch, self.hidden_size) if h0 is None else h0
        clean = torch.where(mask, values, torch.zeros_like(values))
        inputs = torch.cat([clean, mask.to(values.dtype)], dim=-1)
        seen = mask.any(-1, keepdim=True)
        order = range(length - 1, -1, -1) if reverse else range(length)
        before: list[torch.Tensor] = [values.new_empty(0)] * length
        after: list[torch.Tensor] = [values.new_empty(0)] * length
        previous: int | None = None
        for i in order:
            if previous is not None:
                h = self._evolve(h, t[..., previous], t[..., i])
            before[i] = h
            h = torch.where(seen[:, i], self.cell(inputs[:, i], h), h)
            after[i] = h
            previous = i
        if t_end is not None and previous is not None:
            end = torch.as_tensor(t_end, dtype=t.dtype, device=t.device)
            if end.ndim == 0 and t.ndim == 2:
                end = end.expand(batch)
            start = t[..., previous]
            if end.ndim == 1 and start.ndim == 0:
                start = start.expand(batch)
            h = self._evolve(h, start, end)
        return ODERNNStates(torch.stack(before, 1), torch.stack(after, 1), h)

    def forward(
        self,
        times: Any,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        reverse: bool = False,
        h0: torch.Tensor | None = None,
        t_end: Any = None,
    ) -> torch.Tensor:
        """The final hidden state ``[B, H]`` (see :meth:`states` for the arguments)."""
        return self.states(times, values, mask, reverse=reverse, h0=h0, t_end=t_end).final

    def _read(self, h: torch.Tensor) -> torch.Tensor:
        if self.readout is None:
            raise ValueError("ODERNN: predictions need a readout; pass readout=nn.Linear(hidden, channels)")
        return self.readout(h)

    def one_step(self, times: Any, values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T, out]``: the readout at each observation time of the state before its update,
        i.e. each point predicted from the earlier ones only (the ODE-RNN's own training target)."""
        return self._read(self.states(times, values, mask).before)

    def predict(
        self, times: Any, values: torch.Tensor, mask: torch.Tensor | None, t_query: Any
    ) -> torch.Tensor:
        """``[B, Q, out]``: the readout at ``t_query`` (``[Q]`` or ``[B, Q]``, increasing, not before
        the last observation time) of the state carried on from the last observation."""
        run = self.states(times, values, mask)
        t, _, _ = check_series(times, values, mask, type(self).__name__)
        q = torch.as_tensor(t_query, dtype=t.dtype).to(t.device)
        last = t[..., -1]
        if q.ndim not in (1, 2) or bool((q.diff(dim=-1) <= 0).any()) or bool((q[..., 0] < last).any()):
            raise ValueError(
                "ODERNN.predict: t_query must be increasing [Q] or [B, Q] times at or after the last "
                "observation time; for times inside the series use one_step"
            )
        per_sample = q.ndim == 2 or t.ndim == 2
        if per_sample:
            q = q.expand(values.shape[0], -1) if q.ndim == 1 else q
            start = last.expand(values.shape[0]) if last.ndim == 0 else last
            grid = torch.cat([start.unsqueeze(-1), q], -1)
        else:
            grid = torch.cat([last.unsqueeze(0), q])
        hs = run.final
        out = []
        for j in range(q.shape[-1]):
            hs = self._evolve(hs, grid[..., j], grid[..., j + 1])
            out.append(self._read(hs))
        return torch.stack(out, 1)
