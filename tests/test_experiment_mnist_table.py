"""``mnist-table``: the four models of Chen et al.'s Table 1 (parameter counts within 10% of the
paper's, the shapes through the downsampling), and the quick tier end to end on ``mnist-10k``
(skipped, saying how to provide it, when the data is absent)."""

from __future__ import annotations

import pytest
import torch

from torchnde.datasets import mnist_idx
from torchnde.experiments import get, run_experiment
from torchnde.experiments.mnist_table import MODELS, PAPER, build, downsampling, parameters


def _have_mnist() -> bool:
    try:
        mnist_idx(split="test")
    except FileNotFoundError:
        return False
    return True


needs_mnist = pytest.mark.skipif(
    not _have_mnist(),
    reason="mnist-10k not found: set TORCHNDE_DATA to the folder holding mnist-10k (or put it in "
    "../shared/data beside the repository); see torchnde.datasets.mnist_idx",
)


def test_the_experiment_is_registered_with_its_paper():
    assert "1806.07366" in get("mnist-table").paper


def test_parameter_counts_are_within_ten_percent_of_the_papers():
    counts = {name: parameters(build(name)) for name in MODELS}
    assert counts == {"mlp": 238_510, "resnet": 576_778, "rknet": 208_266, "odenet": 208_266}
    for name, count in counts.items():
        assert abs(count / (PAPER[name][1] * 1e6) - 1.0) <= 0.10, name


def test_downsampling_maps_digits_to_six_by_six_feature_maps_and_each_model_to_ten_logits():
    x = torch.rand(2, 1, 28, 28)
    assert downsampling()(x).shape == (2, 64, 6, 6)
    torch.manual_seed(0)
    for name in ("mlp", "resnet", "rknet"):
        assert build(name)(x).shape == (2, 10)


def test_depth_doubles_the_resnet_blocks_and_the_odes_time_span():
    assert len(build("resnet", depth=2)[1]) == 12
    assert build("odenet", depth=2)[1].t_span == (0.0, 2.0)
    assert parameters(build("rknet", depth=2)) == parameters(build("rknet"))
    with pytest.raises(ValueError, match="valid: mlp, resnet, rknet, odenet"):
        build("densenet")


@pytest.mark.slow
@needs_mnist
def test_quick_tier_trains_counts_and_measures_memory_flat_and_growing(tmp_path):
    doc = run_experiment("mnist-table", quick=True, out=tmp_path, progress=False)
    assert doc["passed"], [c for c in doc["checks"] if not c["passed"]]
    models = doc["metrics"]["models"]
    for name in MODELS:
        assert models[name]["probe_loss_after"] < models[name]["probe_loss_before"]
    ode, resnet = models["odenet"]["memory"], models["resnet"]["memory"]
    assert (
        ode["1"]["held_bytes"] == ode["2"]["held_bytes"] and ode["2"]["forward_nfe"] > ode["1"]["forward_nfe"]
    )
    assert resnet["2"]["held_bytes"] > 1.2 * resnet["1"]["held_bytes"]
    report = (tmp_path / "report.md").read_text()
    assert "| ODE-Net | 0.42% |" in report and (tmp_path / "mnist_table.png").exists()
