r"""A real multivariate time-series classification set, with points dropped at random.

- :func:`japanese_vowels` — the UEA/UCI *JapaneseVowels* set (M. Kudo, J. Toyama, M. Shimbo,
  *Multidimensional curve classification using passing-through regions*, Pattern Recognition
  Letters 20, 1999): nine male speakers saying the vowels /ae/; each utterance is a series of 7
  to 29 frames of 12 LPC cepstrum coefficients, and the class is the speaker. 640 series.
- :func:`drop_points` — remove a fraction of each series' time points at random (every channel
  of a dropped point becomes NaN), as the missing-data experiments of Kidger et al. 2020 (*Neural
  controlled differential equations for irregular time series*, NeurIPS 2020, Sec. 4.1).
- :func:`read_ts` — the reader of the ``.ts`` text format the UEA archive uses.

The data is read from the copy that the ``sktime`` wheel ships (an optional dependency, in the
``experiments`` extra; nothing is downloaded): ``pip install "torchnde[experiments]"``. A folder
holding ``JapaneseVowels_TRAIN.ts`` and ``JapaneseVowels_TEST.ts`` works as well (``root=``).

```python
from torchnde.datasets import japanese_vowels
data = japanese_vowels(missing=0.5, seed=0)   # needs sktime (the experiments extra)
data.train.x.shape, data.train.y.shape        # [448, 29, 12] (NaN where dropped or past the end), [448]
```
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .._optional import MissingDependency, install_hint
from ._checks import check_dtype

__all__ = ["LabelledSeries", "SeriesSplit", "drop_points", "japanese_vowels", "read_ts"]


class LabelledSeries(NamedTuple):
    """Series of different lengths on one grid, with their classes.

    - ``x``: ``[N, T, C]`` values, NaN where a point is missing and past a series' end.
    - ``t``: the shared grid ``[T]`` (``0, 1, ..., T - 1``: the frame index).
    - ``y``: ``[N]`` class indices (``int64``).
    - ``lengths``: ``[N]`` the number of frames of each series (``int64``); series ``i`` lives on
      ``t[:lengths[i]]``.
    """

    x: torch.Tensor
    t: torch.Tensor
    y: torch.Tensor
    lengths: torch.Tensor


class SeriesSplit(NamedTuple):
    """A seeded train/test split: ``train`` and ``test`` (:class:`LabelledSeries`) and the
    class names ``classes`` (``y`` indexes them)."""

    train: LabelledSeries
    test: LabelledSeries
    classes: tuple[str, ...]


def read_ts(path: str | Path) -> tuple[list[np.ndarray], list[str]]:
    """The series and labels of a UEA ``.ts`` file: ``([T_i, C] float64 arrays], [label])``.

    The format: ``#`` comment lines, ``@`` header lines up to ``@data``, then one case a line,
    its dimensions separated by ``:`` (comma-separated values, ``?`` for a missing one, read as
    NaN) and its class label last.

    ```python
    import pathlib, tempfile
    from torchnde.datasets.uea import read_ts
    path = pathlib.Path(tempfile.mkdtemp()) / "toy.ts"
    path.write_text("@problemName toy\\n@classLabel true a b\\n@data\\n1,2,3:4,5,?:a\\n")
    series, labels = read_ts(path)   # series[0] is [[1, 4], [2, 5], [3, nan]], labels == ["a"]
    ```
    """
    series: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *dims, label = line.split(":")
        if not dims:
            raise ValueError(f"{path}:{number}: a case needs its values and a label, 'v,v,...:label'")
        columns = [[math.nan if v.strip() == "?" else float(v) for v in d.split(",")] for d in dims]
        if len({len(c) for c in columns}) != 1:
            raise ValueError(f"{path}:{number}: the dimensions of a case must have the same length")
        series.append(np.asarray(columns, dtype=np.float64).T)
        labels.append(label.strip())
    if not in_data:
        raise ValueError(f"{path} has no '@data' line: is it a UEA .ts file?")
    return series, labels


def drop_points(
    x: torch.Tensor, rate: float, *, lengths: torch.Tensor | None = None, seed: int = 0
) -> torch.Tensor:
    r"""``x`` with ``round(rate * L)`` time points of each series set to NaN (all channels), chosen
    uniformly at random per series among its ``L`` points; at least one point is kept.

    **Arguments:**

    - ``x``: ``[N, T, C]``.
    - ``rate``: the fraction dropped, in ``[0, 1)``.
    - ``lengths``: ``[N]`` series lengths (points past them are left alone); default ``T``.
    - ``seed``: the drops are a function of it (a private generator; the global one is untouched).

    ```python
    import torch
    from torchnde.datasets import drop_points
    x = drop_points(torch.ones(2, 10, 3), 0.3, seed=0)
    torch.isnan(x[..., 0]).sum(1)   # tensor([3, 3])
    ```
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor [N, T, C], got {getattr(x, 'shape', type(x))}")
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"rate is the fraction of points dropped, in [0, 1); got {rate!r}")
    n, length = x.shape[:2]
    if lengths is None:
        lengths = torch.full((n,), length, dtype=torch.int64)
    lengths = torch.as_tensor(lengths, dtype=torch.int64).to(x.device)
    if lengths.shape != (n,) or bool((lengths < 1).any() | (lengths > length).any()):
        raise ValueError(f"lengths must be [N] = [{n}] integers in [1, {length}]")
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(n, length, generator=gen, dtype=torch.float64).to(x.device)
    inside = torch.arange(length, device=x.device) < lengths[:, None]
    scores = torch.where(inside, scores, math.inf)  # points past the end are ranked last
    rank = scores.argsort(dim=1).argsort(dim=1)
    count = torch.minimum(torch.round(rate * lengths.double()).long(), lengths - 1)
    dropped = rank < count[:, None]
    return torch.where(dropped.unsqueeze(-1), math.nan, x)


def _sktime_folder() -> Path:
    """sktime's copy of the data, found without importing sktime (which imports scikit-learn)."""
    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(
            "japanese_vowels reads the JapaneseVowels files that the 'sktime' wheel ships; sktime is an "
            f"optional dependency that is not installed: {install_hint(['sktime'], 'experiments')}, or "
            "pass root= a folder holding JapaneseVowels_TRAIN.ts and JapaneseVowels_TEST.ts"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "JapaneseVowels"


def _stack(series: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in series], dtype=torch.int64)
    out = torch.full((len(series), int(lengths.max()), series[0].shape[1]), math.nan, dtype=torch.float64)
    for i, s in enumerate(series):
        out[i, : len(s)] = torch.from_numpy(s)
    return out, lengths


def _stratified(y: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test indices: each class split in the same proportion (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(y).tolist():
        members = torch.nonzero(y == c).squeeze(1)
        members = members[torch.randperm(len(members), generator=gen)]
        cut = round(test_fraction * len(members))
        test.append(members[:cut])
        train.append(members[cut:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def japanese_vowels(
    *,
    missing: float = 0.0,
    test_fraction: float = 0.3,
    seed: int = 0,
    standardise: bool = True,
    dtype: torch.dtype = torch.float32,
    root: str | Path | None = None,
) -> SeriesSplit:
    r"""JapaneseVowels (Kudo et al. 1999; UEA archive): 640 series of 7–29 frames × 12 channels, 9
    speakers, pooled from the archive's two files and split again, per class, at random.

    **Arguments:**

    - ``missing``: the fraction of each series' points dropped at random (:func:`drop_points`),
      in ``[0, 1)``; the drops differ between series and follow ``seed``.
    - ``test_fraction``: the share of each class held out for testing (``0.3``: 448 / 192).
    - ``seed``: the split and the drops.
    - ``standardise``: centre and scale each channel by the training series' mean and standard
      deviation (over the observed values, before the drops).
    - ``dtype``: of ``x`` and ``t``.
    - ``root``: a folder with ``JapaneseVowels_TRAIN.ts`` / ``_TEST.ts`` (default: sktime's copy).

    Returns a :class:`SeriesSplit`; ``x`` is NaN at the dropped points and past each series' end.

    ```python
    from torchnde.datasets import japanese_vowels
    data = japanese_vowels(missing=0.7, seed=1)
    data.classes, int(data.train.lengths.max())   # ('1', ..., '9'), 29
    ```
    """
    check_dtype(dtype)
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    folder = Path(root) if root is not None else _sktime_folder()
    files = [folder / f"JapaneseVowels_{part}.ts" for part in ("TRAIN", "TEST")]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise FileNotFoundError(
            f"JapaneseVowels files not found: {', '.join(absent)}; pass root= the folder holding them, or "
            f"reinstall sktime: {install_hint(['sktime'], 'experiments')}"
        )
    series, labels = [], []
    for f in files:
        s, lab = read_ts(f)
        series += s
        labels += lab
    classes = tuple(sorted(set(labels), key=lambda c: (len(c), c)))
    y = torch.tensor([classes.index(lab) for lab in labels], dtype=torch.int64)
    x, lengths = _stack(series)
    train, test = _stratified(y, float(test_fraction), seed)
    if standardise:
        observed = x[train][~torch.isnan(x[train]).any(-1)]  # [points, C]
        x = (x - observed.mean(0)) / observed.std(0)
    if missing:
        x = drop_points(x, missing, lengths=lengths, seed=seed + 1)
    t = torch.arange(x.shape[1], dtype=dtype)
    x = x.to(dtype)
    return SeriesSplit(
        LabelledSeries(x[train], t, y[train], lengths[train]),
        LabelledSeries(x[test], t, y[test], lengths[test]),
        classes,
    )
