"""The step function runs under torch.compile and gives the eager result."""

from __future__ import annotations

import shutil

import pytest
import torch

import torchnde as nde


def _field():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3, generator=gen, dtype=torch.float64)

    def f(t, y):
        return torch.tanh(y @ w) * torch.cos(t) - 0.1 * y

    return f


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile's CPU backend needs a C++ compiler (apt-get install g++)",
)
@pytest.mark.parametrize("per_sample", [False, True])
def test_compiled_step_matches_eager(per_sample):
    f = _field()
    y0 = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ts = torch.linspace(0, 2, 5, dtype=torch.float64)
    kw = {"solver": "dopri5", "rtol": 1e-8, "atol": 1e-10, "per_sample": per_sample}
    eager = nde.solve(f, y0, ts, **kw)
    compiled = nde.solve(f, y0, ts, compile=True, **kw)
    again = nde.solve(f, y0 * 0.5, ts, compile=True, **kw)  # reuses the compiled step
    assert torch.allclose(compiled.ys, eager.ys, rtol=1e-12, atol=1e-13)
    for key, value in eager.stats.as_dict().items():
        got = compiled.stats.as_dict()[key]
        assert torch.equal(torch.as_tensor(got), torch.as_tensor(value)), key
    assert torch.allclose(again.ys, nde.solve(f, y0 * 0.5, ts, **kw).ys, rtol=1e-12, atol=1e-13)
