"""``ncde-missing``: the models' inputs built from a series with drops, the GRU's read-out at each
series' end, and the quick tier end to end (needs sktime, the experiments extra)."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from torchnde.datasets.uea import LabelledSeries
from torchnde.experiments import get, run_experiment
from torchnde.experiments.ncde import GRUClassifier, gru_inputs, ncde_inputs


def _series() -> LabelledSeries:
    """Two series on a 5-point grid: the first fully observed but for point 2, the second of
    length 3 with point 0 dropped."""
    x = torch.tensor([[1.0, 2.0, math.nan, 4.0, 5.0], [math.nan, 7.0, 8.0, math.nan, math.nan]]).unsqueeze(-1)
    return LabelledSeries(x, torch.arange(5.0), torch.tensor([0, 1]), torch.tensor([5, 3]))


def test_the_experiment_is_registered_with_its_paper():
    assert "2005.08926" in get("ncde-missing").paper


def test_the_ncde_sees_time_values_and_counts_and_stops_after_a_series_ends():
    inputs = ncde_inputs(_series())
    assert inputs.shape == (2, 5, 3)
    assert inputs[0, :, 0].tolist() == [0, 1, 2, 3, 4]
    assert inputs[0, :, 2].tolist() == [1, 2, 2, 3, 4]  # the count does not grow at the drop
    assert inputs[1, :3, 2].tolist() == [0, 1, 2]
    assert torch.isnan(inputs[1, 3:]).all()  # past the end: every channel held constant by the path
    assert torch.isnan(inputs[0, 2, 1]) and not torch.isnan(inputs[0, 2, 0])


def test_the_gru_sees_the_last_observation_its_mask_and_the_time_since():
    inputs = gru_inputs(_series())
    assert inputs[0, :, 0].tolist() == [1, 2, 2, 4, 5]
    assert inputs[0, :, 1].tolist() == [1, 1, 0, 1, 1]
    assert inputs[0, :, 2].tolist() == pytest.approx([0, 0, 0.1, 0, 0])  # time since, in tens of frames
    assert inputs[1, :, 0].tolist() == [0, 7, 8, 8, 8]  # zero before the first observation


def test_the_gru_reads_out_each_series_at_its_last_frame():
    torch.manual_seed(0)
    gru = GRUClassifier(3, 4, 2)
    inputs = gru_inputs(_series())
    out = gru(inputs, torch.tensor([5, 3]))
    assert torch.allclose(out[1], gru(inputs[1:, :3], torch.tensor([3]))[0], atol=1e-6)
    assert torch.allclose(out[0], gru(inputs[:1], torch.tensor([5]))[0], atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("sktime") is None, reason="sktime (the experiments extra) not installed"
)
def test_quick_tier_trains_both_ncdes_well_above_chance(tmp_path):
    doc = run_experiment("ncde-missing", quick=True, out=tmp_path, progress=False)
    assert doc["passed"], [c for c in doc["checks"] if not c["passed"]]
    accuracy = doc["metrics"]["test_accuracy_percent"]
    assert set(accuracy["ncde"]) == {"30%", "70%"} and set(accuracy["gru"]) == {"70%"}
    assert (tmp_path / "accuracy_vs_missing.png").exists()
