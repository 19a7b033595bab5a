"""torchdiffeq's ``examples/ode_demo.py``-style training (benchmarks/ode_demo.py) through
torchdiffeq 0.2.5 (the oracle) and through torchnde.compat.torchdiffeq: the same seeded model,
minibatches and RMSprop give the same losses at the first iterations, to 1e-5 relative, with
``odeint`` and with ``odeint_adjoint``, in float32 (the example's dtype) and float64."""

from __future__ import annotations

import pytest
import torch
import torchdiffeq
from benchmarks.ode_demo import Trainer, true_data

from torchnde.compat import torchdiffeq as compat

ITERS = 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("oracle", "ours", "adjoint"),
    [
        (torchdiffeq.odeint, compat.odeint, False),
        (torchdiffeq.odeint_adjoint, compat.odeint_adjoint, True),
    ],
    ids=["odeint", "odeint_adjoint"],
)
def test_first_losses_agree_with_torchdiffeq(oracle, ours, adjoint, dtype):
    data = true_data(dtype)
    want = Trainer(oracle, adjoint, data, dtype=dtype)
    got = Trainer(ours, adjoint, data, dtype=dtype)
    for _ in range(ITERS):
        w, g = want.step(), got.step()
        assert abs(g - w) / abs(w) < 1e-5
    for p, q in zip(got.func.parameters(), want.func.parameters()):  # the trained models too
        p, q = p.detach(), q.detach()
        assert float((p - q).abs().max() / q.abs().max()) < 1e-4
