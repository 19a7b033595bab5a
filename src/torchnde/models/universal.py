r"""Universal differential equations: a known mechanistic field plus a neural network.

C. Rackauckas, Y. Ma, J. Martensen, C. Warner, K. Zubov, R. Supekar, D. Skinner, A. Ramadhan,
A. Edelman, *Universal Differential Equations for Scientific Machine Learning*, arXiv
2001.04385, 2020.

- :class:`UniversalODE` — :math:`\dot y = k(t, y; p) + U_\theta(y)`: the known part ``k`` with
  named physical parameters ``p`` (trainable or fixed, optionally in log space) and a network
  ``U`` for what the physics misses; the network can be switched off.
- :func:`trajectory_loss`, :func:`make_step`, :func:`fit_staged` — the paper's training recipe:
  fit the physics with the network off, then the network (Adam, then L-BFGS; the paper used
  Adam(0.1) for 200 iterations then BFGS), one optimiser step per call so that the experiment
  harness (``Run.train``) can show progress and checkpoint.

After training, :mod:`torchnde.discovery` turns the network's output into equations.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._names import did_you_mean
from ._base import SolveOptions, as_field, time_grid

__all__ = ["FitResult", "UniversalODE", "fit_staged", "make_step", "trajectory_loss"]


def _names(value: bool | Iterable[str], all_names: list[str], what: str) -> set[str]:
    if value is True:
        return set(all_names)
    if value is False or value is None:
        return set()
    if isinstance(value, str):
        value = [value]
    chosen = set(value)
    unknown = sorted(chosen - set(all_names))
    if unknown:
        raise ValueError(
            f"{what} names {unknown} are not parameters; valid: {sorted(all_names)}."
            f"{did_you_mean(unknown, all_names)}"
        )
    return chosen


class UniversalODE(SolveOptions):
    r"""A universal differential equation :math:`\dot y = k(t, y; p) + U_\theta(y)` (Rackauckas et al. 2020).

    The known part ``k`` carries the physics one trusts, with named parameters ``p``; the network
    ``U`` learns the rest from trajectory data. The model's ``forward(y0, t_eval)`` solves the
    hybrid equation and returns the time-first trajectory; gradients reach ``θ`` and the
    trainable physical parameters through any of the solver's gradient strategies.

    **Arguments:**

    - ``known``: ``known(t, y, **params) -> dy/dt`` (same shape as ``y``), or ``None`` for no
      known part (a plain neural ODE).
    - ``network``: the ``nn.Module`` ``U``; called as ``network(y)`` if its ``forward`` takes one
      argument, else as ``network(t, y)`` (see :func:`~torchnde.models.as_field`).
    - ``params``: the physical parameters ``{name: value}`` passed to ``known`` by keyword
      (plain numbers take the network's dtype; tensors keep theirs).
    - ``trainable``: which of them are trained: ``True`` (all, default), ``False`` (none: kept as
      buffers) or an iterable of names.
    - ``positive``: parameters kept positive by storing :math:`\log p` and using
      :math:`p = e^{\log p}` (``True`` for all, or names). Rates in biology and chemistry are
      positive; the log keeps the optimiser from crossing zero and makes steps relative.
    - solve options (``solver``, ``rtol``, ``atol``, ``dt``, ``gradient``, ...): see
      :class:`~torchnde.models.SolveOptions`.

    ``model.network_enabled = False`` (or ``with model.network_off(): ...``) drops the network
    term, leaving the mechanistic model; :meth:`learned_term` evaluates ``U`` alone;
    :attr:`params` gives the current physical parameter values.

    ```python
    import torch
    from torch import nn
    from torchnde.models.universal import UniversalODE

    def known(t, u, alpha, delta):                  # the trusted part of Lotka-Volterra
        return torch.stack([alpha * u[..., 0], -delta * u[..., 1]], -1)

    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    model = UniversalODE(known, net, params={"alpha": 1.3, "delta": 1.8}, trainable=False)
    ys = model(torch.tensor([0.44, 4.6], dtype=torch.float64), torch.linspace(0, 3, 31))
    ys.shape                                        # torch.Size([31, 2])
    ```
    """

    def __init__(
        self,
        known: Callable[..., Any] | None,
        network: nn.Module | None,
        *,
        params: Mapping[str, float | torch.Tensor] | None = None,
        trainable: bool | Iterable[str] = True,
        positive: bool | Iterable[str] = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if known is not None and not callable(known):
            raise TypeError(f"known must be a callable known(t, y, **params) or None, got {known!r}")
        if network is not None and not callable(network):
            raise TypeError(f"network must be an nn.Module (or callable) or None, got {network!r}")
        if known is None and network is None:
            raise ValueError("UniversalODE needs a known part, a network, or both; got neither")
        params = dict(params or {})
        if params and known is None:
            raise ValueError("params are passed to `known`, but known is None")
        names = list(params)
        for name in names:
            if not name.isidentifier():
                raise ValueError(
                    f"parameter names must be Python identifiers (passed as keywords), got {name!r}"
                )
        self._trainable = _names(trainable, names, "trainable")
        self._positive = _names(positive, names, "positive")
        self.known = known
        self.network = network
        self._field = as_field(network) if network is not None else None
        self.physics = nn.ParameterDict()
        self._param_names = names
        # Plain numbers take the network's dtype (float64 physics with a float64 network).
        dtype = next(
            (p.dtype for p in self.network_parameters() if p.is_floating_point()), torch.get_default_dtype()
        )
        for name, value in params.items():
            value = (
                torch.as_tensor(value) if torch.is_tensor(value) else torch.tensor(float(value), dtype=dtype)
            )
            if not value.is_floating_point():
                value = value.to(dtype)
            value = value.detach().clone()
            if name in self._positive:
                if bool((value <= 0).any()):
                    raise ValueError(
                        f"parameter {name!r} is declared positive but its value is {value.tolist()}"
                    )
                value = value.log()
            if name in self._trainable:
                self.physics[name] = nn.Parameter(value)
            else:
                self.register_buffer(f"_fixed_{name}", value)
        self.network_enabled = network is not None

    # -- parameters ---------------------------------------------------------------------------

    def _raw(self, name: str) -> torch.Tensor:
        return self.physics[name] if name in self._trainable else getattr(self, f"_fixed_{name}")

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The physical parameters' current values (``exp`` applied to the log-space ones)."""
        out = {}
        for name in self._param_names:
            raw = self._raw(name)
            out[name] = raw.exp() if name in self._positive else raw
        return out

    def physics_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable physical parameters (raw: the log for positive ones)."""
        return iter(self.physics.values())

    def network_parameters(self) -> Iterator[nn.Parameter]:
        """The network's parameters (none when there is no network)."""
        if isinstance(self.network, nn.Module):
            return self.network.parameters()
        return iter(())

    @contextlib.contextmanager
    def network_off(self) -> Iterator[UniversalODE]:
        """Within the block the model is the mechanistic part alone."""
        before = self.network_enabled
        self.network_enabled = False
        try:
            yield self
        finally:
            self.network_enabled = before

    # -- the field ----------------------------------------------------------------------------

    def known_term(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:math:`k(t, y; p)` (zero when there is no known part)."""
        if self.known is None:
            return torch.zeros_like(y)
        return self.known(t, y, **self.params)

    def learned_term(self, y: torch.Tensor, t: torch.Tensor | float | None = None) -> torch.Tensor:
        """:math:`U_\\theta(y)` (or :math:`U_\\theta(t, y)`) alone; ``t`` defaults to 0."""
        if self._field is None:
            raise RuntimeError("this UniversalODE has no network, so there is no learned term")
        t = (
            torch.zeros((), dtype=y.dtype, device=y.device)
            if t is None
            else torch.as_tensor(t, dtype=y.dtype)
        )
        return self._field(t, y)

    def vector_field(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The hybrid field :math:`k(t, y; p) + U_\\theta(y)` (without ``U`` when switched off)."""
        out = self.known_term(t, y)
        if self.network_enabled and self._field is not None:
            out = out + self._field(t, y)
        return out

    def forward(self, y0: torch.Tensor, t_eval: Any) -> torch.Tensor:
        """The trajectory ``[len(t_eval), *y0.shape]`` from ``y(t_eval[0]) = y0``."""
        if not torch.is_tensor(y0) or not y0.is_floating_point():
            raise TypeError(f"y0 must be a floating tensor, got {type(y0).__name__}")
        if t_eval is None:
            raise ValueError("UniversalODE needs t_eval: the times at which to return the trajectory")
        return self._solve(self.vector_field, y0, time_grid(t_eval, y0)).ys

    def extra_repr(self) -> str:
        values = {
            k: round(float(v.detach()), 6) if v.numel() == 1 else tuple(v.shape)
            for k, v in self.params.items()
        }
        return f"params={values}, trainable={sorted(self._trainable)}, positive={sorted(self._positive)}"


# -- training -------------------------------------------------------------------------------------


class _Initial(nn.Module):
    """Holds a trainable initial state so that it checkpoints like a model."""

    def __init__(self, y0: torch.Tensor) -> None:
        super().__init__()
        self.y0 = nn.Parameter(y0.detach().clone())


def trajectory_loss(
    model: nn.Module, y0: torch.Tensor, t_eval: torch.Tensor, data: torch.Tensor, *, reduction: str = "sum"
) -> torch.Tensor:
    r"""Squared error of the model's trajectory against ``data``: :math:`\sum_k \|\hat y(t_k) - y_k\|^2`.

    ``reduction="sum"`` (the paper's ``sum(abs2, X - X̂)``) or ``"mean"``. Rackauckas et al.,
    *Universal Differential Equations for Scientific Machine Learning*, arXiv 2001.04385, 2020.

    ```python
    import torch
    from torch import nn
    from torchnde.models.universal import UniversalODE, trajectory_loss
    t = torch.linspace(0, 2, 21, dtype=torch.float64)
    data = 2 * torch.exp(-0.7 * t)[:, None]                  # y' = -0.7 y
    model = UniversalODE(lambda t, y, k: -k * y, nn.Linear(1, 1).double(), params={"k": 0.3})
    trajectory_loss(model, data[0], t, data).backward()
    ```
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(
            f"reduction must be 'sum' or 'mean', got {reduction!r}.{did_you_mean(reduction, ('sum', 'mean'))}"
        )
    pred = model(y0, t_eval)
    if pred.shape != data.shape:
        raise ValueError(
            f"the model's trajectory has shape {tuple(pred.shape)} but data has {tuple(data.shape)}"
        )
    err = (pred - data).pow(2)
    return err.sum() if reduction == "sum" else err.mean()


def make_step(
    model: nn.Module,
    y0: torch.Tensor,
    t_eval: torch.Tensor,
    data: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    loss: Callable[[], torch.Tensor] | None = None,
) -> Callable[[int], dict[str, float]]:
    """One optimiser step per call: the ``step_fn(i)`` that :meth:`Run.train` expects.

    The training loop of the UDE recipe (Rackauckas et al., arXiv 2001.04385, 2020), one step
    at a time. Works for first-order optimisers (``zero_grad``, backward, ``step``) and for
    ``torch.optim.LBFGS`` (a closure; one ``LBFGS.step``, that is ``max_iter`` iterations with
    their line searches, per call).
    Returns ``{"loss": ..., "nfe": ...}``: the loss before an Adam step, or after an L-BFGS
    step (one extra forward solve), and the last forward solve's evaluation count.

    ```python
    import torch
    from torch import nn
    from torchnde.models.universal import UniversalODE, make_step
    t = torch.linspace(0, 2, 21, dtype=torch.float64)
    data = 2 * torch.exp(-0.7 * t)[:, None]                  # y' = -0.7 y
    model = UniversalODE(lambda t, y, k: -k * y, nn.Linear(1, 1).double(), params={"k": 0.3})
    step = make_step(model, data[0], t, data, torch.optim.Adam(model.parameters(), lr=0.05))
    history = [step(i) for i in range(20)]                   # [{"loss": ..., "nfe": ...}, ...]
    ```
    """
    compute = loss if loss is not None else (lambda: trajectory_loss(model, y0, t_eval, data))
    is_lbfgs = isinstance(optimizer, torch.optim.LBFGS)

    def nfe() -> float:
        try:
            return float(torch.as_tensor(model.nfe).float().mean())
        except (AttributeError, RuntimeError):
            return float("nan")

    last: dict[str, float] = {}

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = compute()
        if not torch.isfinite(value):
            raise FloatingPointError(
                "the training loss is not finite: the solve diverged. Lower the learning rate, "
                "or pass throw=False and a smaller max_steps to the model to skip such steps"
            )
        value.backward()
        last["loss"] = value.item()
        return value

    def step(i: int) -> dict[str, float]:
        if is_lbfgs:
            optimizer.step(closure)
            with torch.no_grad():  # the loss where the line search stopped (one forward solve)
                last["loss"] = compute().item()
        else:
            closure()
            optimizer.step()
        return {"loss": last["loss"], "nfe": nfe()}

    return step


def _loop(
    tag: str, step: Callable[[int], dict[str, Any]], steps: int, state: dict[str, Any]
) -> list[dict[str, Any]]:
    return [step(i) for i in range(steps)]


@dataclass
class FitResult:
    """What :func:`fit_staged` did (Rackauckas et al., arXiv 2001.04385, 2020).

    ``histories[stage]`` is the list of per-step dicts (``loss``, ``nfe``) of each stage that ran
    (``"mechanistic"``, ``"network"``, ``"lbfgs"``) in the kept attempt; ``y0`` the initial
    state used (fitted when ``fit_y0``). With ``target_loss``, ``attempts`` lists the final loss
    of every attempt in order (the first from the model as given, then one per fresh
    initialisation), ``restarts`` how many fresh initialisations ran, and ``kept`` the index
    of the attempt whose parameters the model holds (the lowest final loss).

    ```python
    import torch
    from torch import nn
    from torchnde.models.universal import UniversalODE, fit_staged
    t = torch.linspace(0, 2, 21, dtype=torch.float64)
    data = 2 * torch.exp(-0.7 * t)[:, None]                  # y' = -0.7 y
    model = UniversalODE(lambda t, y, k: -k * y, nn.Linear(1, 1).double(), params={"k": 0.3})
    result = fit_staged(model, data[0], t, data, network_steps=20)
    result.final_loss, result.histories["network"][-1]
    ```
    """

    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    y0: torch.Tensor | None = None
    attempts: list[float] = field(default_factory=list)
    restarts: int = 0
    kept: int = 0

    @property
    def final_loss(self) -> float:
        """The last recorded loss of the kept attempt (NaN before any step)."""
        return _final_loss(self.histories)


def _final_loss(histories: Mapping[str, list[dict[str, Any]]]) -> float:
    for name in ("lbfgs", "network", "mechanistic"):
        if histories.get(name):
            return float(histories[name][-1]["loss"])
    return math.nan


def _resettable(model: UniversalODE) -> list[nn.Module]:
    """The network's submodules with ``reset_parameters`` (every ``torch.nn`` layer has one)."""
    if not isinstance(model.network, nn.Module):
        return []
    return [m for m in model.network.modules() if callable(getattr(m, "reset_parameters", None))]


def _reinitialise(
    model: UniversalODE,
    physics: Mapping[str, torch.Tensor],
    initial: _Initial | None,
    y0: torch.Tensor,
    seed: int,
) -> None:
    """A fresh draw of the network's parameters from its layers' own initialisers, seeded by
    ``seed`` without touching the global generators; the physics and ``y0`` back to their start."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in _resettable(model):
            module.reset_parameters()
    with torch.no_grad():
        for name, value in physics.items():
            model.physics[name].copy_(value)
        if initial is not None:
            initial.y0.copy_(y0)


def _ordered(loss: float) -> float:
    """A loss to compare attempts by: NaN (no step ran, or it diverged) ranks last."""
    return loss if not math.isnan(loss) else math.inf


def _snapshot(model: UniversalODE, initial: _Initial | None) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    if initial is not None:
        out["y0"] = initial.y0.detach().clone()
    return out


def _restore(model: UniversalODE, initial: _Initial | None, saved: Mapping[str, torch.Tensor]) -> None:
    model.load_state_dict({k[len("model.") :]: v for k, v in saved.items() if k.startswith("model.")})
    if initial is not None:
        with torch.no_grad():
            initial.y0.copy_(saved["y0"])


def _check_restarts(model: UniversalODE, target_loss: float | None, restarts: int, seed: int) -> None:
    if target_loss is not None and not (math.isfinite(target_loss) and target_loss > 0):
        raise ValueError(f"target_loss must be a positive finite number or None, got {target_loss!r}")
    if int(restarts) != restarts or restarts < 0:
        raise ValueError(f"restarts must be a non-negative integer, got {restarts!r}")
    if int(seed) != seed:
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if restarts and target_loss is None:
        raise ValueError(
            "restarts retrain from a fresh initialisation while the final loss is above target_loss: "
            "pass target_loss (for a sum of squared errors, about the number of data values times the "
            "noise variance)"
        )
    if restarts and not _resettable(model):
        raise ValueError(
            "restarts need a network whose layers can be re-initialised (torch.nn layers have "
            "reset_parameters()); this model's network has none: pass restarts=0"
        )


def fit_staged(
    model: UniversalODE,
    y0: torch.Tensor,
    t_eval: torch.Tensor,
    data: torch.Tensor,
    *,
    mechanistic_steps: int = 0,
    network_steps: int = 200,
    lbfgs_steps: int = 0,
    lbfgs_iterations: int = 10,
    lr: float = 0.1,
    mechanistic_lr: float | None = None,
    freeze_physics: bool = False,
    fit_y0: bool = False,
    history_size: int = 100,
    target_loss: float | None = None,
    restarts: int = 0,
    seed: int = 0,
    train: Callable[..., list[dict[str, Any]]] | None = None,
    tag: str = "ude",
) -> FitResult:
    r"""The staged UDE recipe of Rackauckas et al. (2020): physics first, then the network.

    1. ``mechanistic``: with the network off, Adam(``mechanistic_lr`` or ``lr``) on the
       trainable physical parameters for ``mechanistic_steps`` (skipped when there are none).
    2. ``network``: with the network on, Adam(``lr``) on the network (and the physics, unless
       ``freeze_physics``) for ``network_steps`` (the paper: Adam(0.1), 200 iterations).
    3. ``lbfgs``: L-BFGS (strong-Wolfe line search, ``history_size``) on the same parameters
       for ``lbfgs_steps`` steps of ``lbfgs_iterations`` iterations each (the paper: BFGS). Each
       ``torch.optim.LBFGS.step`` re-evaluates the loss at its start, so several iterations per
       step save about one solve per iteration.

    The loss is :func:`trajectory_loss` (sum of squares). ``fit_y0`` also trains the initial
    state (from ``y0``). ``train(tag, step_fn, steps, state)`` runs each stage; pass the
    experiment's ``run.train`` for progress bars and resumable checkpoints (stage tags are
    ``f"{tag}-mechanistic"`` etc.); the default is a plain loop.

    **Restarts.** A fit whose loss stays far above the noise is a local minimum or a stalled
    optimiser, not a fit. With ``target_loss`` :math:`L^*` and ``restarts`` :math:`R`, while
    the final loss is above :math:`L^*` and fewer than :math:`R` restarts ran, the network is
    drawn afresh (each layer's ``reset_parameters()`` under ``torch.manual_seed(seed + r)``
    for restart :math:`r = 1, \dots, R`; the global generators are left as they were), the
    physics and ``y0`` go back to their starting values, and the three stages run again
    (tags ``f"{tag}-restart{r}-network"`` etc.). The model keeps the attempt with the lowest
    final loss. For a sum of squared errors over :math:`N` values with noise variance
    :math:`\sigma^2`, a fit at the noise level has :math:`\mathrm{SSE} \approx N\sigma^2`
    (a :math:`\chi^2` variable: :math:`N\sigma^2 (1 \pm \sqrt{2/N})`), so
    ``target_loss = 2 * N * sigma**2`` flags only fits that are certainly not there.

    Rackauckas et al., *Universal Differential Equations for Scientific Machine Learning*,
    arXiv 2001.04385, 2020.

    ```python
    import torch
    from torch import nn
    from torchnde.models.universal import UniversalODE, fit_staged
    t = torch.linspace(0, 2, 21, dtype=torch.float64)
    data = 2 * torch.exp(-0.7 * t)[:, None]                  # y' = -0.7 y
    model = UniversalODE(lambda t, y, k: -k * y, nn.Linear(1, 1).double(), params={"k": 0.3})
    result = fit_staged(model, data[0], t, data, mechanistic_steps=200, network_steps=50, lbfgs_steps=2, lr=0.05)
    model.params["k"], result.final_loss                     # k close to 0.7
    result = fit_staged(model, data[0], t, data, network_steps=20, target_loss=1e-6, restarts=2, seed=7)
    result.attempts, result.restarts, result.kept            # the final loss of each attempt
    ```
    """
    if not isinstance(model, UniversalODE):
        raise TypeError(f"fit_staged trains a UniversalODE, got {type(model).__name__}")
    for name, value in (
        ("mechanistic_steps", mechanistic_steps),
        ("network_steps", network_steps),
        ("lbfgs_steps", lbfgs_steps),
    ):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if int(lbfgs_iterations) != lbfgs_iterations or lbfgs_iterations < 1:
        raise ValueError(f"lbfgs_iterations must be a positive integer, got {lbfgs_iterations!r}")
    if not (lr > 0):
        raise ValueError(f"lr must be positive, got {lr!r}")
    _check_restarts(model, target_loss, restarts, seed)
    train = train if train is not None else _loop
    initial = _Initial(y0) if fit_y0 else None
    start = initial.y0 if initial is not None else y0
    extra = [initial.y0] if initial is not None else []
    physics_start = {name: p.detach().clone() for name, p in model.physics.items()}

    def state(opt: torch.optim.Optimizer) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model, "opt": opt}
        if initial is not None:
            out["y0"] = initial
        return out

    physics = list(model.physics_parameters())
    network = list(model.network_parameters())
    params = network + ([] if freeze_physics else physics) + extra
    if (network_steps or lbfgs_steps) and not params:
        raise ValueError(
            "nothing to train in the network stages: the model has no network and no trainable physics"
        )

    def attempt(prefix: str) -> dict[str, list[dict[str, Any]]]:
        histories: dict[str, list[dict[str, Any]]] = {}
        if mechanistic_steps and physics:
            opt = torch.optim.Adam(physics + extra, lr=mechanistic_lr or lr)
            with model.network_off():
                step = make_step(model, start, t_eval, data, opt)
                histories["mechanistic"] = train(f"{prefix}-mechanistic", step, mechanistic_steps, state(opt))
        if network_steps:
            opt = torch.optim.Adam(params, lr=lr)
            step = make_step(model, start, t_eval, data, opt)
            histories["network"] = train(f"{prefix}-network", step, network_steps, state(opt))
        if lbfgs_steps:
            opt = torch.optim.LBFGS(
                params,
                lr=1.0,
                max_iter=int(lbfgs_iterations),
                max_eval=4 * int(lbfgs_iterations),
                history_size=history_size,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-12,
                tolerance_change=1e-14,
            )
            step = make_step(model, start, t_eval, data, opt)
            histories["lbfgs"] = train(f"{prefix}-lbfgs", step, lbfgs_steps, state(opt))
        return histories

    result = FitResult(histories=attempt(tag))
    result.attempts.append(result.final_loss)
    kept_state: dict[str, torch.Tensor] = {}
    while (
        target_loss is not None
        and not (result.attempts[result.kept] <= target_loss)
        and result.restarts < restarts
    ):
        if result.kept == len(result.attempts) - 1:  # the best so far is about to be overwritten
            kept_state = _snapshot(model, initial)
        result.restarts += 1
        _reinitialise(model, physics_start, initial, y0, int(seed) + result.restarts)
        histories = attempt(f"{tag}-restart{result.restarts}")
        result.attempts.append(_final_loss(histories))
        if _ordered(result.attempts[-1]) < _ordered(result.attempts[result.kept]):
            result.kept, result.histories = result.restarts, histories
    if result.kept != len(result.attempts) - 1:  # an earlier attempt was better: put it back
        _restore(model, initial, kept_state)
    result.y0 = start.detach().clone()
    return result
