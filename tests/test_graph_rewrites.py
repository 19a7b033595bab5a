"""The graph rewrites of ``solve(compile=True)``: float32 ``tanh`` as a rational function (its
accuracy, its derivatives), small linear layers as a product and a sum, each only where it
applies, and the traced graph's values unchanged to float32 rounding."""

from __future__ import annotations

import shutil

import pytest
import torch

import torchnde as nde
from torchnde._loop import fused, graph_rewrites
from torchnde._loop.graph_rewrites import rational_tanh, rewrite


def _ulps(value: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|value - exact| in float32 units in the last place of ``exact``."""
    rounded = exact.float()
    ulp = (torch.nextafter(rounded, torch.tensor(2.0)) - rounded).double()
    return (value.double() - exact).abs() / ulp


def test_rational_tanh_is_within_seven_float32_ulps_everywhere():
    x = torch.cat([torch.linspace(-12, 12, 400_001), torch.logspace(-30, 1.2, 20_001)])
    x = torch.cat([x, -x])
    exact = torch.tanh(x.double())
    assert _ulps(rational_tanh(x), exact).max() <= 6.5  # 5.96 measured (JAX's CPU tanh: 4.4)
    assert _ulps(torch.tanh(x), exact).max() <= 1.0


def test_rational_tanh_is_odd_bounded_and_saturates():
    x = torch.linspace(0, 50, 100_001)
    y = rational_tanh(x)
    assert torch.equal(rational_tanh(-x), -y)
    assert y.abs().max() <= 1.0
    assert torch.all(rational_tanh(torch.tensor([7.9054, 9.0, 20.0, float("inf")])) == 1.0)
    assert rational_tanh(torch.tensor(0.0)) == 0.0 and rational_tanh(torch.tensor(float("nan"))).isnan()


def _traced(fn, *args):
    """``fn``'s dynamo graph after :func:`rewrite`, run eagerly (no code generation), and the
    rewritten graph's call targets."""
    seen: list[set] = []

    def backend(gm, example_inputs):
        out = rewrite(gm)
        seen.append({str(n.target) for n in out.graph.nodes if n.op in ("call_function", "call_method")})
        return out.forward

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend=backend, dynamic=False)
    return compiled(*args), seen[0]


def test_float32_tanh_is_rewritten_and_float64_tanh_is_not():
    x32 = torch.linspace(-4, 4, 101)
    for fn in (torch.tanh, torch.nn.functional.tanh, torch.nn.Tanh(), lambda x: x.tanh()):
        with torch.no_grad():
            out, targets = _traced(fn, x32)
        assert not any("tanh" in t for t in targets), targets
        assert torch.allclose(out, torch.tanh(x32), rtol=0, atol=1e-6)
    out, targets = _traced(torch.tanh, x32.double())
    assert any("tanh" in t for t in targets) and torch.equal(out, torch.tanh(x32.double()))


def test_rewritten_tanh_keeps_tanhs_first_and_second_derivatives():
    x = torch.linspace(-5, 5, 41, requires_grad=True)

    def f(x):
        return torch.tanh(3 * x).sum()

    compiled, targets = _traced(f, x)
    assert not any(t.endswith("tanh") or "method tanh" in t for t in targets)
    (g,) = torch.autograd.grad(compiled, x, create_graph=True)
    (g2,) = torch.autograd.grad(g.sum(), x)
    y = torch.tanh(3 * x.detach())
    assert torch.allclose(g, 3 * (1 - y * y), atol=2e-6)
    assert torch.allclose(g2, -18 * y * (1 - y * y), atol=1e-5)


@pytest.mark.parametrize("widths", [(2, 64), (64, 2), (3, 5)])
def test_a_small_linear_layer_on_a_small_batch_becomes_a_product_and_a_sum(widths):
    torch.manual_seed(0)
    layer = torch.nn.Linear(*widths)
    x = torch.randn(16, widths[0], requires_grad=True)
    out, targets = _traced(layer, x)
    assert not any("linear" in t for t in targets)
    assert torch.allclose(out, layer(x), rtol=1e-6, atol=1e-6)
    out.sum().backward()
    expect = torch.autograd.grad(layer(x).sum(), [x, layer.weight])
    assert torch.allclose(x.grad, expect[0], atol=1e-5)


@pytest.mark.parametrize(("batch", "widths"), [(16, (64, 64)), (1024, (2, 64))])
def test_a_wide_or_large_linear_layer_keeps_the_library_product(batch, widths):
    layer, x = torch.nn.Linear(*widths), torch.randn(batch, widths[0])
    with torch.no_grad():
        out, targets = _traced(layer, x)
        assert any("linear" in t for t in targets) and torch.equal(out, layer(x))


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile's CPU backend needs a C++ compiler (apt-get install g++)",
)
def test_a_compiled_float32_mlp_solve_is_rewritten_and_matches_eager(monkeypatch):
    monkeypatch.setattr(fused, "BLOCK", 1)  # a shorter trace, the same rewrites
    rewritten = []
    original = graph_rewrites.rewrite

    def spy(gm):
        out = original(gm)
        rewritten.append(not any("tanh" in str(n.target) for n in out.graph.nodes))
        return out

    monkeypatch.setattr(graph_rewrites, "rewrite", spy)
    torch.manual_seed(0)
    field = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    y0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    ts = torch.linspace(0, 1, 5)
    kw = {"solver": "dopri5", "rtol": 1e-5, "atol": 1e-7}
    with torch.no_grad():
        eager = nde.solve(lambda t, y: field(y), y0, ts, **kw)
        compiled = nde.solve(lambda t, y: field(y), y0, ts, compile=True, **kw)
    assert rewritten and all(rewritten)
    assert compiled.stats.steps == eager.stats.steps
    assert torch.allclose(compiled.ys, eager.ys, rtol=1e-5, atol=1e-6)
