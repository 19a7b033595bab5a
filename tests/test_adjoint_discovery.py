"""With ``params=None`` and an ``f`` that is not an ``nn.Module``, ``Adjoint`` and ``Reversible``
differentiate the tensors ``f`` uses, found from one evaluation of ``f``: closed-over networks,
plain tensors and non-leaf tensors get the gradients of central finite differences (of an
accurate fixed-step solve) and of ``Backprop``."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as nde
from torchnde.compat.torchdiffeq import odeint_adjoint


@pytest.mark.parametrize("shape", [(), (3,)])
@pytest.mark.parametrize("api", ["solve", "per_sample", "odeint_adjoint"])
def test_adjoint_of_a_field_depending_on_neither_state_nor_parameters(shape, api):
    # y(t) = y0 + sin(t), so d/dy0 of sum(y(1)^2) = 2 (y0 + sin(1)) (issue 13, bug 2)
    if api == "per_sample":
        shape = (2, *shape)
    y0 = torch.full(shape, 0.5, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    if api == "odeint_adjoint":
        ys = odeint_adjoint(lambda t, y: torch.cos(t) * torch.ones_like(y), y0, t, adjoint_params=())
    else:
        sol = nde.solve(lambda t, y: torch.cos(t).expand_as(y), y0, t, "dopri5", gradient="adjoint",
                        per_sample=api == "per_sample")  # fmt: skip
        ys = sol.ys
    (got,) = torch.autograd.grad(ys[-1].square().sum(), y0)
    assert torch.allclose(got, torch.full(shape, 2 * (0.5 + math.sin(1.0)), dtype=torch.float64), rtol=1e-6)
