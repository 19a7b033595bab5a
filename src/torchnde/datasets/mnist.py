r"""MNIST digits read from IDX files on disk (gzipped or not); nothing is downloaded.

- :func:`mnist_idx` — the images and labels of a folder of MNIST IDX files: a full MNIST
  directory (``train-images-idx3-ubyte[.gz]``, ``t10k-...``; Y. LeCun, C. Cortes, C. Burges,
  *The MNIST database of handwritten digits*) or a single images/labels pair such as the
  10,000-digit sample ``mnist-10k`` (whose first 8,000 are the training and last 2,000 the test
  digits).
- :func:`read_idx` — one IDX file as a tensor.

The IDX format: two zero bytes, a type code (``0x08`` unsigned byte, ``0x09`` signed byte,
``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions
:math:`k`, then :math:`k` big-endian uint32 sizes and the values in C order, big-endian. MNIST
images have the magic number ``0x00000803`` (ubyte, 3-D: ``N x 28 x 28``) and labels
``0x00000801`` (ubyte, 1-D: ``N``).

Where the data is looked for: ``path=`` if given; else the folder ``mnist-10k`` under the
directory named by the ``TORCHNDE_DATA`` environment variable; else ``../shared/data/mnist-10k``
relative to the repository root (a source checkout). With the data in place,
``mnist_idx(split="train")`` gives the 8,000 training digits of ``mnist-10k``
(``images`` ``[8000, 1, 28, 28]`` in [0, 1], ``labels`` ``[8000]`` int64).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["ENV_VAR", "LabelledImages", "data_roots", "mnist_idx", "read_idx"]

ENV_VAR = "TORCHNDE_DATA"
_SAMPLE = "mnist-10k"
_SPLITS = ("train", "test", "all")
_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 0x0803, 0x0801


class LabelledImages(NamedTuple):
    """Images and their classes: ``images`` ``[N, 1, H, W]`` float32 in [0, 1] (pixel / 255),
    ``labels`` ``[N]`` int64."""

    images: torch.Tensor
    labels: torch.Tensor


def read_idx(path: str | Path, *, expect_magic: int | None = None) -> torch.Tensor:
    """The array stored in the IDX file ``path`` (gzipped if its name ends in ``.gz``).

    Checks the magic number (against ``expect_magic`` if given, e.g. ``0x0803`` for MNIST
    images) and that the file holds exactly the values its header announces; a ``ValueError``
    names the file and what is wrong. Unsigned bytes come back as ``torch.uint8``, the other
    types as the matching torch dtype.

    ```python
    import pathlib, tempfile
    from torchnde.datasets import read_idx
    path = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    read_idx(path, expect_magic=0x0801)   # tensor([7, 2, 1], dtype=torch.uint8)
    ```
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:  # a truncated or corrupt gzip stream
        raise ValueError(
            f"{path}: cannot be read as {'gzip' if opener is gzip.open else 'a file'} ({err})"
        ) from err
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for an IDX header (4 bytes of magic number)")
    magic = int.from_bytes(raw[:4], "big")
    code, ndim = raw[2], raw[3]
    if raw[0] or raw[1] or code not in _TYPES or ndim == 0:
        raise ValueError(
            f"{path}: magic number 0x{magic:08X} is not an IDX header (0x0000TTDD: type code TT in "
            f"{', '.join(f'0x{c:02X}' for c in _TYPES)}, DD >= 1 dimensions): is it an IDX file?"
        )
    if expect_magic is not None and magic != expect_magic:
        raise ValueError(f"{path}: magic number 0x{magic:08X}, expected 0x{expect_magic:08X}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: truncated header ({len(raw)} bytes, {header} needed for {ndim} dimensions)"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _TYPES[code]
    needed = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != needed:
        what = "truncated" if len(raw) < needed else "longer than its header says"
        raise ValueError(
            f"{path}: {what}: {len(raw)} bytes, the header (shape {shape}, {dtype.itemsize}-byte values) "
            f"needs {needed}"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))


def data_roots() -> list[Path]:
    """The folders searched for ``mnist-10k`` when no ``path`` is given: ``$TORCHNDE_DATA`` (if
    set), then ``../shared/data`` relative to the repository root."""
    roots = []
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]))
    roots.append(Path(__file__).resolve().parents[3].parent / "shared" / "data")
    return roots


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """``{"train": (images, labels), "test": ...}`` for a full MNIST directory, or
    ``{"all": ...}`` for a folder with one images/labels pair; ``{}`` if neither."""
    full = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = (
            _find(folder, f"{prefix}-images-idx3-ubyte"),
            _find(folder, f"{prefix}-labels-idx1-ubyte"),
        )
        if images and labels:
            full[split] = (images, labels)
    if len(full) == 2:
        return full
    images = sorted(folder.glob("*-images-idx3-ubyte*"))
    labels = sorted(folder.glob("*-labels-idx1-ubyte*"))
    if len(images) == 1 and len(labels) == 1:
        return {"all": (images[0], labels[0])}
    return {}


def _locate(path: str | Path | None) -> dict[str, tuple[Path, Path]]:
    candidates = [Path(path)] if path is not None else [root / _SAMPLE for root in data_roots()]
    for folder in candidates:
        found = _pairs(folder) if folder.is_dir() else {}
        if found:
            return found
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no MNIST IDX files found (looked in: {looked}); a folder needs train-/t10k-images-idx3-ubyte[.gz] "
        f"and -labels-idx1-ubyte[.gz] (full MNIST) or one *-images-idx3-ubyte[.gz] / *-labels-idx1-ubyte[.gz] "
        f"pair. Pass mnist_idx(path='/dir/with/the/files'), or set {ENV_VAR}=/dir so that /dir/{_SAMPLE} "
        "holds them. torchnde never downloads data."
    )


def _read_pair(images_path: Path, labels_path: Path) -> LabelledImages:
    images = read_idx(images_path, expect_magic=_IMAGES_MAGIC)
    labels = read_idx(labels_path, expect_magic=_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} {labels.shape[0]} labels"
        )
    if labels.numel() and int(labels.max()) > 9:
        raise ValueError(f"{labels_path}: label {int(labels.max())} outside the digits 0-9")
    return LabelledImages((images.to(torch.float32) / 255.0).unsqueeze(1), labels.to(torch.int64))


def mnist_idx(path: str | Path | None = None, split: str = "train") -> LabelledImages:
    """MNIST images and labels read from IDX files (gzipped or not); never downloads.

    **Arguments:**

    - ``path``: the folder holding the files. A full MNIST directory (``train-images-idx3-ubyte``,
      ``train-labels-idx1-ubyte``, ``t10k-...``, each optionally ``.gz``) gives its training and
      test sets; a folder with a single ``*-images-idx3-ubyte[.gz]`` / ``*-labels-idx1-ubyte[.gz]``
      pair (the ``mnist-10k`` sample) is split in file order: the last fifth (2,000 of 10,000)
      are the test digits, the rest the training digits. Default: ``$TORCHNDE_DATA/mnist-10k``,
      else ``../shared/data/mnist-10k`` beside the repository; a ``FileNotFoundError`` says where
      it looked and how to point at the data.
    - ``split``: ``"train"``, ``"test"`` or ``"all"`` (training then test digits).

    **Returns:** :class:`LabelledImages`: ``images`` ``[N, 1, 28, 28]`` float32 in [0, 1],
    ``labels`` ``[N]`` int64. Magic numbers (``0x0803`` images, ``0x0801`` labels), sizes and
    counts are checked; a wrong or truncated file is a ``ValueError`` naming it.

    ```python
    import gzip, pathlib, tempfile
    from torchnde.datasets import mnist_idx
    folder = pathlib.Path(tempfile.mkdtemp())   # stands for a folder of real MNIST files
    header = lambda magic, *shape: b"".join(n.to_bytes(4, "big") for n in (magic, *shape))
    (folder / "toy-images-idx3-ubyte.gz").write_bytes(gzip.compress(header(0x803, 5, 28, 28) + bytes(5 * 784)))
    (folder / "toy-labels-idx1-ubyte").write_bytes(header(0x801, 5) + bytes([3, 1, 4, 1, 5]))
    train = mnist_idx(folder, split="train")    # the first 4 digits; the last fifth is the test split
    train.images.shape, train.labels            # torch.Size([4, 1, 28, 28]), tensor([3, 1, 4, 1])
    ```
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, _SPLITS))}, got {split!r}")
    pairs = _locate(path)
    if "all" in pairs:
        data = _read_pair(*pairs["all"])
        n_train = len(data.labels) - len(data.labels) // 5
        part = {"train": slice(0, n_train), "test": slice(n_train, None), "all": slice(None)}[split]
        return LabelledImages(data.images[part], data.labels[part])
    if split != "all":
        return _read_pair(*pairs[split])
    train, test = _read_pair(*pairs["train"]), _read_pair(*pairs["test"])
    return LabelledImages(torch.cat([train.images, test.images]), torch.cat([train.labels, test.labels]))
