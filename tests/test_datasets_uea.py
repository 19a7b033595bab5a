"""The UEA classification set: the ``.ts`` reader, random drops of whole time points, and
JapaneseVowels' seeded, stratified, standardised split (on a small file written here, and on the
copy sktime ships when it is installed)."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from torchnde._optional import MissingDependency
from torchnde.datasets import drop_points, japanese_vowels, read_ts, uea


def _case(values: list[list[float]], label: str) -> str:
    return ":".join(",".join(str(v) for v in dim) for dim in values) + f":{label}"


def _write_vowels(folder, per_class: int = 5) -> None:
    """A two-channel stand-in for the archive's two files: class k's values are k + small steps."""
    for part in ("TRAIN", "TEST"):
        lines = ["# a comment", "@problemName JapaneseVowels", "@classLabel true 1 2 3", "@data"]
        for k in (1, 2, 3):
            for j in range(per_class):
                length = 3 + (j + k) % 4
                lines.append(_case([[k + i / 10 for i in range(length)], [-k] * length], str(k)))
        (folder / f"JapaneseVowels_{part}.ts").write_text("\n".join(lines) + "\n")


def test_read_ts_reads_each_case_as_time_by_channels_with_question_marks_as_nan(tmp_path):
    path = tmp_path / "toy.ts"
    path.write_text("#c\n@problemName toy\n@data\n1,2,3:4,5,?:a\n\n6,7:8,9:b\n")
    series, labels = read_ts(path)
    assert labels == ["a", "b"]
    assert series[0].shape == (3, 2) and series[1].shape == (2, 2)
    assert series[0][:, 0].tolist() == [1, 2, 3]
    assert series[0][:2, 1].tolist() == [4, 5] and math.isnan(series[0][2, 1])


def test_read_ts_rejects_a_file_without_data_and_a_ragged_case(tmp_path):
    path = tmp_path / "bad.ts"
    path.write_text("@problemName toy\n")
    with pytest.raises(ValueError, match="no '@data' line"):
        read_ts(path)
    path.write_text("@data\n1,2:3:a\n")
    with pytest.raises(ValueError, match="same length"):
        read_ts(path)


def test_drop_points_removes_whole_time_points_in_each_series_own_length():
    x = torch.ones(4, 10, 3)
    lengths = torch.tensor([10, 7, 4, 2])
    out = drop_points(x, 0.5, lengths=lengths, seed=3)
    missing = torch.isnan(out)
    assert (missing.all(-1) == missing.any(-1)).all()  # every channel of a dropped point
    assert missing[..., 0].sum(1).tolist() == [5, 4, 2, 1]  # round(0.5 L), one point kept at least
    inside = torch.arange(10) < lengths[:, None]
    assert not missing[~inside].any()


def test_drop_points_is_a_function_of_the_seed_and_nests_across_rates():
    x = torch.randn(6, 20, 2)
    assert torch.equal(torch.isnan(drop_points(x, 0.3, seed=1)), torch.isnan(drop_points(x, 0.3, seed=1)))
    assert not torch.equal(torch.isnan(drop_points(x, 0.3, seed=1)), torch.isnan(drop_points(x, 0.3, seed=2)))
    low, high = torch.isnan(drop_points(x, 0.3, seed=1)), torch.isnan(drop_points(x, 0.7, seed=1))
    assert (high | ~low).all()  # what 30% drops, 70% drops too


def test_drop_points_checks_its_arguments():
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        drop_points(torch.ones(1, 4, 1), 1.0)
    with pytest.raises(ValueError, match="lengths must be"):
        drop_points(torch.ones(2, 4, 1), 0.5, lengths=torch.tensor([5, 1]))


def test_the_split_is_stratified_seeded_and_standardised_by_the_training_series(tmp_path):
    _write_vowels(tmp_path)
    data = japanese_vowels(root=tmp_path, test_fraction=0.3, seed=0, dtype=torch.float64)
    assert data.classes == ("1", "2", "3")
    assert torch.bincount(data.test.y).tolist() == [3, 3, 3]  # 30% of each class's 10 series
    assert torch.bincount(data.train.y).tolist() == [7, 7, 7]
    observed = data.train.x[~torch.isnan(data.train.x).any(-1)]
    assert torch.allclose(observed.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(observed.std(0), torch.ones(2, dtype=torch.float64))
    inside = torch.arange(data.train.x.shape[1]) < data.train.lengths[:, None]
    assert not torch.isnan(data.train.x[inside]).any() and torch.isnan(data.train.x[~inside]).all()
    again = japanese_vowels(root=tmp_path, seed=0, dtype=torch.float64)
    other = japanese_vowels(root=tmp_path, seed=1, dtype=torch.float64)
    assert torch.equal(again.test.y, data.test.y)
    assert not torch.equal(other.test.lengths, data.test.lengths)


def test_missing_drops_that_share_of_each_series(tmp_path):
    _write_vowels(tmp_path)
    data = japanese_vowels(root=tmp_path, missing=0.5, seed=0)
    dropped = torch.isnan(data.train.x[..., 0]).sum(1) - (data.train.x.shape[1] - data.train.lengths)
    assert torch.equal(dropped, torch.round(0.5 * data.train.lengths.double()).long())


def test_a_folder_without_the_files_names_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"JapaneseVowels_TRAIN\.ts"):
        japanese_vowels(root=tmp_path)


def test_without_sktime_the_error_names_the_extra(monkeypatch):
    monkeypatch.setattr(uea.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependency, match=r"torchnde\[experiments\]"):
        japanese_vowels()


@pytest.mark.skipif(
    importlib.util.find_spec("sktime") is None, reason="sktime (the experiments extra) not installed"
)
def test_the_real_set_has_640_series_of_12_channels_and_9_speakers():
    data = japanese_vowels(seed=0)
    assert len(data.train.y) + len(data.test.y) == 640
    assert data.train.x.shape[1:] == (29, 12) and len(data.classes) == 9
    lengths = torch.cat([data.train.lengths, data.test.lengths])
    assert int(lengths.min()) == 7 and int(lengths.max()) == 29
