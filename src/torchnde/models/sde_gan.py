r"""SDE-GANs: a neural SDE trained as the generator of a Wasserstein GAN whose discriminator is a
neural CDE (P. Kidger, J. Foster, X. Li, H. Oberhauser, T. Lyons, *Neural SDEs as
Infinite-Dimensional GANs*, ICML 2021, arXiv 2102.03657), with the speed-ups of P. Kidger,
J. Foster, X. Li, T. Lyons, *Efficient and Accurate Gradients for Neural SDEs*, NeurIPS 2021,
arXiv 2105.13493 (reversible Heun, the Brownian interval, weight clipping with LipSwish).

**Generator** (:class:`SDEGenerator`). Initial noise :math:`V \sim \mathcal N(0, I_v)`, a hidden
state :math:`X \in \mathbb R^x` and an output :math:`Y \in \mathbb R^y`:

.. math:: X_0 = \zeta_\theta(V),\qquad
          dX_t = \mu_\theta(t, X_t)\,dt + \sigma_\theta(t, X_t)\circ dW_t,\qquad
          Y_t = \alpha_\theta X_t + \beta_\theta,

a Stratonovich SDE with general noise (:math:`\sigma_\theta(t, X) \in \mathbb R^{x \times w}`,
:math:`W` a :math:`w`-dimensional Brownian motion); :math:`\zeta, \mu, \sigma` are MLPs with
LipSwish activations, :math:`\mu, \sigma` with a final tanh.
With ``diffusion="constant"`` the diffusion is a learnt matrix :math:`\Sigma \in \mathbb
R^{x \times w}` (additive noise, :math:`dX = \mu_\theta(t, X)\,dt + \Sigma\,dW`): the law's
spread over time then comes from the drift's mean reversion, as in an Ornstein–Uhlenbeck
process, which this generator represents exactly (a linear drift, a constant :math:`\Sigma`).

**Discriminator** (:class:`CDEDiscriminator`). On the time-augmented path
:math:`\hat Y_t = (t, Y_t)` (the linear interpolation of the generated or the real samples):

.. math:: H_0 = \xi_\phi(\hat Y_{t_0}),\qquad dH_t = f_\phi(t, H_t)\,d\hat Y_t,\qquad
          D = m_\phi \cdot H_T,

a neural CDE (:class:`torchnde.CDETerm` on a :class:`torchnde.LinearPath`), :math:`f_\phi` an MLP
with LipSwish activations and a final tanh, returning :math:`[h, 1 + y]`.
With ``readout="all"`` the score reads every sample time instead of the last,
:math:`D = \frac1{K}\sum_{k=1}^{K} m_\phi \cdot H_{t_k}` (:math:`t_1 < \dots < t_K` the sample
times): each :math:`H_{t_k}` has seen the path up to :math:`t_k`, so every marginal law (the
initial one included) gets a direct say in the score, as diffrax's SDE-GAN example does with
:math:`t_0` and :math:`T`.

**Training** (:meth:`SDEGAN.loss`, :meth:`SDEGAN.training_step`): the Wasserstein estimate
:math:`L = \mathbb E[D(Y_{\text{fake}})] - \mathbb E[D(Y_{\text{real}})]`, minimised by the
discriminator and maximised by the generator. The discriminator is kept Lipschitz by clipping
every weight of its linear layers to :math:`[-1/n_{in}, 1/n_{in}]` after each step (each layer
is then 1-Lipschitz in the :math:`\infty`-norm) with the 1-Lipschitz LipSwish activation
:math:`0.909\,x\,\mathrm{sigmoid}(x)`: the paper's cheaper replacement for the gradient penalty.

Both SDE and CDE are solved by reversible Heun on a fixed grid with exact gradients at
:math:`O(1)` memory (``gradient="reversible"``, the default); ``"backprop"`` and ``"adjoint"``
are options (the stochastic adjoint for the generator, the continuous adjoint for the
discriminator). The generator's Brownian motion is a :class:`torchnde.BrownianInterval`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..brownian import AbstractBrownian, BrownianInterval
from ..interpolation import LinearPath
from ..terms import CDETerm, SDETerm
from ._base import SolveOptions

__all__ = ["SDEGAN", "CDEDiscriminator", "LipSwish", "SDEGenerator", "lipswish_mlp"]

DIFFUSIONS = ("neural", "constant")  # the generator's sigma: an MLP of (t, X), or a learnt matrix
READOUTS = ("last", "all")  # what the discriminator's score reads: H_T, or H at every sample time
STEPPINGS = ("derivative", "increments")  # how the discriminator's CDE is stepped (CDEDiscriminator)
LIPSWISH_SCALE = 0.909  # 1 / max_x d/dx [x sigmoid(x)] = 1 / 1.0998..., rounded down


class LipSwish(nn.Module):
    r"""The 1-Lipschitz activation :math:`0.909\,x\,\sigma(x)` (Chen, Behrmann, Duvenaud,
    Jacobsen, *Residual Flows*, NeurIPS 2019): SiLU's steepest slope is :math:`1.0998`, and the
    factor brings it below 1.

    ```python
    import torch
    from torchnde.models import LipSwish
    x = torch.linspace(-10, 10, 2001, requires_grad=True)
    slope, = torch.autograd.grad(LipSwish()(x).sum(), x)
    assert slope.abs().max() < 1
    ```
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return LIPSWISH_SCALE * nn.functional.silu(x)


def lipswish_mlp(
    inputs: int, outputs: int, width: int, depth: int = 1, final_tanh: bool = False
) -> nn.Sequential:
    """An MLP ``inputs -> width (x depth hidden layers, LipSwish) -> outputs`` (tanh at the end
    with ``final_tanh``): the networks of the SDE-GAN.

    ```python
    from torchnde.models import lipswish_mlp
    net = lipswish_mlp(3, 2, width=16, depth=2, final_tanh=True)
    len(net)  # 6: Linear, LipSwish, Linear, LipSwish, Linear, Tanh
    ```
    """
    for name, value, low in (
        ("inputs", inputs, 1),
        ("outputs", outputs, 1),
        ("width", width, 1),
        ("depth", depth, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"lipswish_mlp: {name} must be an integer >= {low}, got {value!r}")
    layers: list[nn.Module] = [nn.Linear(inputs, width), LipSwish()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), LipSwish()]
    layers.append(nn.Linear(width, outputs))
    if final_tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class _TimeField(nn.Module):
    """``net(cat([t, x], -1))`` reshaped to ``[*x.shape[:-1], *shape]``: a field that sees time."""

    def __init__(self, net: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.net, self.shape = net, shape

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tx = torch.cat([t.to(x.dtype).expand(*x.shape[:-1], 1), x], dim=-1)
        return self.net(tx).view(*x.shape[:-1], *self.shape)


class _ConstantField(nn.Module):
    r"""A learnt matrix ``[*shape]``, the same at every ``(t, x)``: an additive, time-homogeneous
    diffusion. Initialised as ``nn.Linear`` initialises its bias (uniform in
    :math:`\pm 1/\sqrt{n}`, :math:`n` = ``shape[0]``)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        bound = 1.0 / shape[0] ** 0.5
        self.matrix = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.shape = shape

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.matrix.to(x.dtype).expand(*x.shape[:-1], *self.shape)


def _check_times(ts: Any) -> torch.Tensor:
    if not isinstance(ts, torch.Tensor) or ts.ndim != 1 or len(ts) < 2 or not ts.is_floating_point():
        raise ValueError(
            "ts must be a 1-D floating tensor of at least two increasing times (the sample times), got "
            f"{ts!r}"
        )
    return ts


def _grid_step(dt: float | None, ts: torch.Tensor) -> float:
    """The fixed step: ``dt``, else the smallest spacing of ``ts`` (a step per sample interval)."""
    return float(dt) if dt is not None else float(torch.diff(ts).min())


def _check_sizes(who: str, **sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}")


class SDEGenerator(SolveOptions):
    r"""The SDE-GAN's generator: :math:`X_0 = \zeta(V)`, :math:`dX = \mu(t, X)\,dt + \sigma(t, X)
    \circ dW`, :math:`Y = \ell(X)` (see the module docstring).

    **Arguments:**

    - ``data_size``: :math:`y`, the channels of a generated sample.
    - ``hidden_size``: :math:`x`; ``noise_size``: :math:`w`, the Brownian motion's dimension;
      ``initial_noise_size``: :math:`v`.
    - ``width``, ``depth``: of the MLPs :math:`\zeta, \mu, \sigma`.
    - ``diffusion``: ``"neural"`` (:math:`\sigma_\theta(t, X)`, an MLP, the paper's) or
      ``"constant"`` (a learnt matrix :math:`\Sigma`: additive, time-homogeneous noise).
    - the solve options of :class:`~torchnde.models.SolveOptions`; defaults
      ``solver="reversible_heun"``, ``gradient="reversible"``, ``dt=None`` (one step per
      interval of the sample times; give a smaller ``dt`` for a finer solve).

    ``forward(ts, batch)`` returns ``[batch, len(ts), data_size]`` samples at the times ``ts``.

    ```python
    import torch
    from torchnde.models import SDEGenerator
    gen = SDEGenerator(data_size=1, hidden_size=8, noise_size=2, initial_noise_size=3, width=16)
    ts = torch.linspace(0, 1, 9)
    gen(ts, batch=4).shape  # torch.Size([4, 9, 1])
    ```
    """

    def __init__(
        self,
        data_size: int,
        hidden_size: int = 16,
        noise_size: int = 3,
        initial_noise_size: int = 5,
        width: int = 16,
        depth: int = 1,
        *,
        diffusion: str = "neural",
        solver: Any = "reversible_heun",
        gradient: Any = "reversible",
        dt: float | None = None,
        **solve_options: Any,
    ) -> None:
        super().__init__(solver=solver, gradient=gradient, dt=dt, **solve_options)
        if diffusion not in DIFFUSIONS:
            raise ValueError(
                f"SDEGenerator: diffusion must be one of {DIFFUSIONS} ('neural': an MLP of (t, X); 'constant': a "
                f"learnt matrix, additive noise), got {diffusion!r}"
            )
        _check_sizes("SDEGenerator", data_size=data_size, hidden_size=hidden_size, noise_size=noise_size,
                     initial_noise_size=initial_noise_size)  # fmt: skip
        self.data_size, self.hidden_size = data_size, hidden_size
        self.noise_size, self.initial_noise_size = noise_size, initial_noise_size
        self.initial = lipswish_mlp(initial_noise_size, hidden_size, width, depth)
        self.drift = _TimeField(
            lipswish_mlp(1 + hidden_size, hidden_size, width, depth, True), (hidden_size,)
        )
        self.diffusion: nn.Module = (
            _TimeField(
                lipswish_mlp(1 + hidden_size, hidden_size * noise_size, width, depth, True),
                (hidden_size, noise_size),
            )
            if diffusion == "neural"
            else _ConstantField((hidden_size, noise_size))
        )
        self.readout = nn.Linear(hidden_size, data_size)

    def brownian(
        self, ts: torch.Tensor, batch: int, seed: int | None = None, dtype: torch.dtype | None = None
    ) -> BrownianInterval:
        """A Brownian interval over ``ts`` for ``batch`` samples (``seed=None``: from torch's
        global generator): what :meth:`forward` draws when it is given none."""
        return BrownianInterval(
            float(ts[0]), float(ts[-1]), (batch, self.noise_size), dtype=dtype or ts.dtype, seed=seed
        )

    def forward(
        self,
        ts: torch.Tensor,
        batch: int | None = None,
        *,
        initial_noise: torch.Tensor | None = None,
        brownian: AbstractBrownian | None = None,
    ) -> torch.Tensor:
        """``batch`` samples ``[batch, len(ts), data_size]``; ``initial_noise`` (``[batch,
        initial_noise_size]``) and ``brownian`` (shape ``(batch, noise_size)``) fix the randomness
        (default: drawn from torch's global generator)."""
        ts = _check_times(ts)
        if initial_noise is None:
            if batch is None:
                raise ValueError("SDEGenerator: give batch (the number of samples) or initial_noise")
            initial_noise = torch.randn(batch, self.initial_noise_size, dtype=ts.dtype, device=ts.device)
        if initial_noise.ndim != 2 or initial_noise.shape[-1] != self.initial_noise_size:
            raise ValueError(
                f"SDEGenerator: initial_noise must be [batch, {self.initial_noise_size}], got "
                f"{list(initial_noise.shape)}"
            )
        batch = initial_noise.shape[0]
        if brownian is None:
            brownian = self.brownian(ts, batch, dtype=initial_noise.dtype)
        term = SDETerm(
            self.drift, self.diffusion, noise="general", calculus="stratonovich", brownian=brownian
        )
        x0 = self.initial(initial_noise)
        sol = self._solve(term, x0, ts, dt=_grid_step(self.dt, ts))
        return self.readout(sol.ys.transpose(0, 1))


class CDEDiscriminator(SolveOptions):
    r"""The SDE-GAN's discriminator: a neural CDE over the time-augmented path :math:`(t, Y_t)`,
    :math:`H_0 = \xi(t_0, Y_{t_0})`, :math:`dH = f(t, H)\,d(t, Y)`, :math:`D = m \cdot H_T`.

    **Arguments:**

    - ``data_size``: the channels of a sample; ``hidden_size``: of :math:`H`.
    - ``width``, ``depth``: of the MLPs :math:`\xi, f`.
    - ``readout``: ``"last"`` (:math:`D = m \cdot H_T`, the paper's) or ``"all"`` (the average of
      :math:`m \cdot H_{t_k}` over the sample times; see the module docstring).
    - ``stepping``: how the CDE is stepped. ``"derivative"`` (default; the paper's code:
      torchsde's ``sde_gan.py`` hands torchcde's ODE form to its reversible Heun) steps the ODE
      :math:`dH/dt = f(t, H)\,dX/dt` with the path's derivative read at each step's end and
      carried into the next step: with one step per sample interval, every step after the first
      starts from the slope of the interval before it (first order in the step, not second).
      ``"increments"`` steps the :class:`~torchnde.CDETerm` as a controlled equation
      (:math:`f(t, H)` times the path's increment over the step: second order, consistent on
      a piecewise linear path). On ``sde-gan-ou`` the paper's stepping trains generators whose
      spread is within 12-22% at seeds 0-4; with ``"increments"`` the critic sees the spread
      less well (trained alone against paths whose spread is 1.5x too wide, its Wasserstein
      estimate reached 0.18-0.60 of the spread of its scores against 0.56-0.62) and the
      generators' spread came out 33-77% too narrow at the same seeds.
    - the solve options of :class:`~torchnde.models.SolveOptions`; defaults
      ``solver="reversible_heun"``, ``gradient="reversible"``, ``dt=None`` (one step per
      interval of the sample times, landing on every knot of the linear path).

    ``forward(ys, ts)`` scores ``ys`` of shape ``[batch, len(ts), data_size]``: ``[batch]``.
    :meth:`clip_weights_` keeps it Lipschitz.

    ```python
    import torch
    from torchnde.models import CDEDiscriminator
    disc = CDEDiscriminator(data_size=1, hidden_size=8, width=16)
    ts = torch.linspace(0, 1, 9)
    disc(torch.randn(4, 9, 1), ts).shape  # torch.Size([4])
    ```
    """

    def __init__(
        self,
        data_size: int,
        hidden_size: int = 16,
        width: int = 16,
        depth: int = 1,
        *,
        readout: str = "last",
        stepping: str = "derivative",
        solver: Any = "reversible_heun",
        gradient: Any = "reversible",
        dt: float | None = None,
        **solve_options: Any,
    ) -> None:
        super().__init__(solver=solver, gradient=gradient, dt=dt, **solve_options)
        _check_sizes("CDEDiscriminator", data_size=data_size, hidden_size=hidden_size)
        if readout not in READOUTS:
            raise ValueError(
                f"CDEDiscriminator: readout must be one of {READOUTS} ('last': the final hidden state; 'all': "
                f"the average over the sample times), got {readout!r}"
            )
        if stepping not in STEPPINGS:
            raise ValueError(
                f"CDEDiscriminator: stepping must be one of {STEPPINGS} ('derivative': the paper's code, the "
                f"ODE dH/dt = f(t, H) dX/dt; 'increments': the CDE with its control's increments), got {stepping!r}"
            )
        self.data_size, self.hidden_size, self.readout_at = data_size, hidden_size, readout
        self.stepping = stepping
        self.initial = lipswish_mlp(1 + data_size, hidden_size, width, depth)
        self.field = _TimeField(
            lipswish_mlp(1 + hidden_size, hidden_size * (1 + data_size), width, depth, True),
            (hidden_size, 1 + data_size),
        )
        self.readout = nn.Linear(hidden_size, 1)

    def forward(self, ys: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        """The scores ``[batch]`` of the samples ``ys`` ``[batch, len(ts), data_size]``."""
        ts = _check_times(ts)
        if not isinstance(ys, torch.Tensor) or ys.ndim != 3 or ys.shape[1:] != (len(ts), self.data_size):
            got = list(ys.shape) if isinstance(ys, torch.Tensor) else type(ys).__name__
            raise ValueError(
                f"CDEDiscriminator: ys must be [batch, len(ts), data_size] = [batch, {len(ts)}, "
                f"{self.data_size}], got {got}"
            )
        ts = ts.to(ys.dtype)
        x = torch.cat([ts.view(1, -1, 1).expand(ys.shape[0], -1, 1), ys], dim=-1)
        path = LinearPath(x, ts)
        h0 = self.initial(x[:, 0])
        at = ts if self.readout_at == "all" else ts[[0, -1]]
        term = CDETerm(self.field, path)
        # "derivative": the lowered ODE f(t, H) dX/dt, a plain field (no control increments)
        field = term if self.stepping == "increments" else term.lower()
        sol = self._solve(field, h0, at, dt=_grid_step(self.dt, ts))
        if self.readout_at == "all":
            return self.readout(sol.ys).squeeze(-1).mean(0)
        return self.readout(sol.ys[-1]).squeeze(-1)

    @torch.no_grad()
    def clip_weights_(self) -> None:
        """Clip every linear layer's weights to :math:`[-1/n_{in}, 1/n_{in}]` (in place): the
        paper's Lipschitz control, applied after each optimiser step."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / module.in_features
                module.weight.clamp_(-bound, bound)


class SDEGAN(nn.Module):
    r"""An SDE-GAN (Kidger et al., ICML 2021): :class:`SDEGenerator` and :class:`CDEDiscriminator`
    trained on the Wasserstein loss with weight clipping (see the module docstring).

    **Arguments:**

    - ``data_size``: the channels of a sample.
    - ``hidden_size``, ``noise_size``, ``initial_noise_size``, ``width``, ``depth``: the
      generator's (see :class:`SDEGenerator`); the discriminator takes ``discriminator_hidden``
      (default ``hidden_size``), ``width``, ``depth`` and ``discriminator_readout`` (``"last"``
      or ``"all"``) and ``discriminator_stepping`` (``"derivative"`` or ``"increments"``; see
      :class:`CDEDiscriminator`); ``diffusion`` (``"neural"`` or
      ``"constant"``) is the generator's.
    - ``solve_options``: options for both solves (``solver``, ``gradient``, ``dt``, ...; see
      :class:`~torchnde.models.SolveOptions`), e.g. ``gradient="backprop"``.

    ```python
    import torch
    from torchnde.models import SDEGAN
    torch.manual_seed(0)
    gan = SDEGAN(data_size=1, hidden_size=8, width=16)
    ts = torch.linspace(0, 1, 9)
    real = torch.randn(32, 9, 1).cumsum(1) * 0.3
    g_opt = torch.optim.Adadelta(gan.generator.parameters(), lr=1e-2)
    d_opt = torch.optim.Adadelta(gan.discriminator.parameters(), lr=1e-2)
    for _ in range(3):
        w = gan.training_step(real, ts, g_opt, d_opt)   # the Wasserstein estimate before the step
    gan.sample(ts, 5).shape                             # torch.Size([5, 9, 1])
    ```
    """

    def __init__(
        self,
        data_size: int,
        *,
        hidden_size: int = 16,
        noise_size: int = 3,
        initial_noise_size: int = 5,
        width: int = 16,
        depth: int = 1,
        discriminator_hidden: int | None = None,
        discriminator_readout: str = "last",
        discriminator_stepping: str = "derivative",
        diffusion: str = "neural",
        **solve_options: Any,
    ) -> None:
        super().__init__()
        self.generator = SDEGenerator(data_size, hidden_size, noise_size, initial_noise_size, width, depth,
                                      diffusion=diffusion, **solve_options)  # fmt: skip
        self.discriminator = CDEDiscriminator(
            data_size,
            discriminator_hidden or hidden_size,
            width,
            depth,
            readout=discriminator_readout,
            stepping=discriminator_stepping,
            **solve_options,
        )
        self.discriminator.clip_weights_()

    def loss(self, real: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        r"""The Wasserstein estimate :math:`\mathbb E[D(\text{fake})] - \mathbb E[D(\text{real})]`
        on ``len(real)`` fresh generator samples: the discriminator descends it, the generator
        ascends it."""
        fake = self.generator(ts, real.shape[0])
        return self.discriminator(fake, ts).mean() - self.discriminator(real, ts).mean()

    def training_step(
        self,
        real: torch.Tensor,
        ts: torch.Tensor,
        generator_optimizer: torch.optim.Optimizer,
        discriminator_optimizer: torch.optim.Optimizer,
    ) -> float:
        """One joint step on a batch ``real`` ``[batch, len(ts), data_size]``: one backward pass
        of :meth:`loss`, the generator's gradients negated (it ascends), both optimisers stepped,
        the discriminator's weights clipped. Returns the loss before the step."""
        loss = self.loss(real, ts)
        generator_optimizer.zero_grad()
        discriminator_optimizer.zero_grad()
        loss.backward()
        for p in self.generator.parameters():
            if p.grad is not None:
                p.grad.neg_()
        generator_optimizer.step()
        discriminator_optimizer.step()
        self.discriminator.clip_weights_()
        return float(loss.detach())

    @torch.no_grad()
    def sample(self, ts: torch.Tensor, batch: int) -> torch.Tensor:
        """``batch`` generated samples ``[batch, len(ts), data_size]`` without a graph."""
        return self.generator(ts, batch)
