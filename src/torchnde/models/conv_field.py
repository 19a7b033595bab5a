r"""A convolutional vector field on feature maps: the ODE-Net block of Chen et al. (2018).

R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, *Neural Ordinary Differential
Equations*, NeurIPS 2018, arXiv 1806.07366, Sec. 3 and Table 1: the six residual blocks of a
small ResNet on MNIST are replaced by one ODE block whose field is a residual block's function
with the depth :math:`t` given to each convolution as one more input channel,

.. math:: f_\theta(t, h) = \mathrm{GN}\Bigl(\mathrm{conv}_2\bigl(t,\ \mathrm{ReLU}(\mathrm{GN}(
          \mathrm{conv}_1(t,\ \mathrm{ReLU}(\mathrm{GN}(h)))))\bigr)\Bigr),

where :math:`\mathrm{conv}_i(t, h)` is a 3x3 convolution of the channels :math:`[t\mathbf 1, h]`
and GN is group normalisation (32 groups, or one group a channel below 32 channels). The same
field, stepped by a fixed-step Runge–Kutta method and differentiated by backprop, is the
paper's RK-Net.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConcatConv2d", "ConvODEField", "group_norm"]


def group_norm(channels: int) -> nn.GroupNorm:
    """Group normalisation with ``min(32, channels)`` groups (Wu & He, ECCV 2018), as the paper's
    MNIST networks use."""
    return nn.GroupNorm(min(32, channels), channels)


class ConcatConv2d(nn.Module):
    """A 2-D convolution of ``[t, x]``: the time ``t`` enters as a constant extra input channel.

    ``ConcatConv2d(c_in, c_out, kernel_size, stride, padding)`` has the parameters of
    ``nn.Conv2d(c_in + 1, c_out, ...)`` (with a bias).

    ```python
    import torch
    from torchnde.models import ConcatConv2d
    conv = ConcatConv2d(8, 16, 3, padding=1)
    conv(torch.tensor(0.5), torch.randn(2, 8, 6, 6)).shape   # torch.Size([2, 16, 6, 6])
    ```
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 0
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"ConcatConv2d: channel counts must be >= 1, got {in_channels} in and {out_channels} out"
            )
        self.conv = nn.Conv2d(in_channels + 1, out_channels, kernel_size, stride, padding)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The convolution of ``cat([t * ones, x], dim=1)``; ``x`` is ``[B, C, H, W]``."""
        if x.ndim != 4:
            raise ValueError(f"ConcatConv2d expects x of shape [B, C, H, W], got {tuple(x.shape)}")
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0], 1, *x.shape[2:])
        return self.conv(torch.cat([tt, x], dim=1))


class ConvODEField(nn.Module):
    r"""The ODE-Net block's field :math:`f_\theta(t, h)` on ``[B, C, H, W]`` feature maps
    (Chen et al., NeurIPS 2018, Sec. 3): GroupNorm, ReLU, a time-concatenated 3x3 convolution,
    GroupNorm, ReLU, a second one, GroupNorm. The output has the input's shape, so it is a
    vector field for :class:`~torchnde.models.NeuralODE`; ``self.nfe`` counts its evaluations
    (reset it to 0 yourself).

    With 64 channels it has 75,392 parameters: the paper's ODE-Net (0.22M) is this field plus the
    downsampling and classification layers.

    ```python
    import torch
    from torchnde.models import ConvODEField, NeuralODE
    block = NeuralODE(ConvODEField(16), solver="dopri5", rtol=1e-3, atol=1e-3, gradient="adjoint")
    h = block(torch.randn(4, 16, 6, 6))        # the feature maps at t = 1: [4, 16, 6, 6]
    h.square().mean().backward()               # adjoint: memory independent of the steps
    ```
    """

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"ConvODEField: channels must be >= 1, got {channels}")
        self.norm1 = group_norm(channels)
        self.conv1 = ConcatConv2d(channels, channels, 3, padding=1)
        self.norm2 = group_norm(channels)
        self.conv2 = ConcatConv2d(channels, channels, 3, padding=1)
        self.norm3 = group_norm(channels)
        self.relu = nn.ReLU()
        self.nfe = 0

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """:math:`f_\\theta(t, h)`, the same shape as ``h``."""
        self.nfe += 1
        out = self.conv1(t, self.relu(self.norm1(h)))
        out = self.conv2(t, self.relu(self.norm2(out)))
        return self.norm3(out)
