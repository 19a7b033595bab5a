"""``deq-digits``: the stratified digits split, the layer's contraction bound, and the quick tier
end to end (needs scikit-learn)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from torchnde.experiments import get, run_experiment

needs_sklearn = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed"
)


def test_the_experiment_is_registered_with_its_paper():
    assert "1909.01377" in get("deq-digits").paper


@needs_sklearn
def test_the_split_is_stratified_disjoint_and_seeded():
    from torchnde.experiments.deq import load_digits_split

    data = load_digits_split(0)
    assert data.x_train.shape == (1297, 64) and data.x_test.shape == (500, 64)
    assert 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1.0
    share_train = torch.bincount(data.y_train, minlength=10) / len(data.y_train)
    share_test = torch.bincount(data.y_test, minlength=10) / len(data.y_test)
    assert (share_train - share_test).abs().max() < 0.01
    train_rows = {tuple(r.tolist()) for r in data.x_train}
    assert sum(tuple(r.tolist()) in train_rows for r in data.x_test) < 5  # digits repeat rarely
    again, other = load_digits_split(0), load_digits_split(1)
    assert torch.equal(again.y_test, data.y_test) and not torch.equal(other.x_test, data.x_test)


def test_the_layer_is_a_contraction_whatever_its_weights():
    from torchnde.experiments.deq import EquilibriumLayer

    torch.manual_seed(0)
    layer = EquilibriumLayer(5, 8, bound=0.9)
    with torch.no_grad():
        layer.V.mul_(50.0)  # far outside the bound
    x = torch.randn(64, 5)
    z1, z2 = torch.randn(64, 8), torch.randn(64, 8)
    with torch.no_grad():
        ratio = (layer(z1, x) - layer(z2, x)).norm(dim=1) / (z1 - z2).norm(dim=1)
    assert float(ratio.max()) <= 0.9 + 1e-6


@pytest.mark.slow
@needs_sklearn
def test_quick_tier_meets_every_criterion(tmp_path):
    doc = run_experiment("deq-digits", quick=True, out=tmp_path, progress=False)
    assert doc["passed"], [c for c in doc["checks"] if not c["passed"]]
    metrics = doc["metrics"]
    assert metrics["test_relative_residual_max"] <= 1e-4
    held = metrics["graph_bytes_held_after_forward"]
    assert len(set(held["deq"].values())) == 1 and held["unrolled"]["20"] > 3 * held["unrolled"]["5"]
    assert (tmp_path / "deq_digits.png").exists()
