"""The MNIST IDX reader: tiny IDX files written here (plain and gzipped) read back exactly, bad
magic numbers and truncated files rejected with the file named, the two folder layouts (a full
MNIST directory, a single pair split 4/5 : 1/5), and where the data is looked for."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from torchnde.datasets import data_roots, mnist, mnist_idx, read_idx


def _idx(magic: int, shape: tuple[int, ...], values: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in shape)
    return header + values.astype(values.dtype.newbyteorder(">")).tobytes()


def _write_pair(folder, stem: str, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> None:
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else (lambda b: b)
    (folder / f"{stem}-images-idx3-ubyte{suffix}").write_bytes(pack(_idx(0x0803, images.shape, images)))
    (folder / f"{stem}-labels-idx1-ubyte{suffix}").write_bytes(pack(_idx(0x0801, labels.shape, labels)))


def _digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


@pytest.mark.parametrize("gz", [False, True])
def test_an_idx_file_round_trips_its_shape_and_values(tmp_path, gz):
    values = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    path = tmp_path / ("x-idx3-ubyte" + (".gz" if gz else ""))
    raw = _idx(0x0803, values.shape, values)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    out = read_idx(path, expect_magic=0x0803)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 4)
    assert torch.equal(out, torch.from_numpy(values))


def test_big_endian_types_other_than_bytes_are_read_in_native_order(tmp_path):
    values = np.array([[1.5, -2.25], [1e30, 0.0]], dtype=np.float64)
    path = tmp_path / "doubles-idx2"
    path.write_bytes(_idx(0x0E02, values.shape, values))
    out = read_idx(path)
    assert out.dtype == torch.float64
    assert torch.equal(out, torch.from_numpy(values))


def test_a_wrong_magic_number_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(_idx(0x0801, (3,), np.array([1, 2, 3], dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"labels-idx1-ubyte: magic number 0x00000801, expected 0x00000803"):
        read_idx(path, expect_magic=0x0803)
    path.write_bytes(
        b"\x1f\x8b\x08\x01" + bytes(8)
    )  # not an IDX header at all (type code 0x08, but 1st byte set)
    with pytest.raises(ValueError, match="is not an IDX header"):
        read_idx(path)


def test_a_truncated_file_is_rejected_with_the_sizes(tmp_path):
    images, _ = _digits(3, 0)
    raw = _idx(0x0803, images.shape, images)
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(raw[:-5])
    with pytest.raises(ValueError, match=rf"truncated: {len(raw) - 5} bytes, .* needs {len(raw)}"):
        read_idx(path)
    path.write_bytes(raw[:10])
    with pytest.raises(ValueError, match="truncated header"):
        read_idx(path)
    gz = tmp_path / "images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(raw)[:-20])  # a cut gzip stream
    with pytest.raises(ValueError, match="cannot be read as gzip"):
        read_idx(gz)


def test_a_single_pair_is_split_into_its_first_four_fifths_and_last_fifth(tmp_path):
    images, labels = _digits(10, 1)
    _write_pair(tmp_path, "sample", images, labels)
    train, test, both = (mnist_idx(tmp_path, split=s) for s in ("train", "test", "all"))
    assert train.images.shape == (8, 1, 28, 28) and test.images.shape == (2, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert torch.equal(both.images, torch.cat([train.images, test.images]))
    assert torch.equal(both.labels, torch.from_numpy(labels.astype(np.int64)))
    assert torch.allclose(both.images[:, 0], torch.from_numpy(images).float() / 255.0)
    assert float(both.images.min()) >= 0.0 and float(both.images.max()) <= 1.0


def test_a_full_mnist_directory_gives_its_train_and_t10k_files(tmp_path):
    (train_images, train_labels), (test_images, test_labels) = _digits(6, 2), _digits(4, 3)
    _write_pair(tmp_path, "train", train_images, train_labels, gz=False)
    _write_pair(tmp_path, "t10k", test_images, test_labels, gz=True)
    train, test = mnist_idx(tmp_path, split="train"), mnist_idx(tmp_path, split="test")
    assert torch.equal(train.labels, torch.from_numpy(train_labels.astype(np.int64)))
    assert torch.equal(test.labels, torch.from_numpy(test_labels.astype(np.int64)))
    assert mnist_idx(tmp_path, split="all").labels.shape == (10,)


def test_mismatched_counts_and_labels_beyond_nine_are_rejected(tmp_path):
    images, labels = _digits(5, 4)
    _write_pair(tmp_path, "a", images, labels[:4])
    with pytest.raises(ValueError, match=r"5 images but .* 4 labels"):
        mnist_idx(tmp_path)
    labels[0] = 12
    _write_pair(tmp_path, "a", images, labels)
    with pytest.raises(ValueError, match="label 12 outside the digits"):
        mnist_idx(tmp_path)


def test_an_unknown_split_is_an_error_listing_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="'train', 'test', 'all'"):
        mnist_idx(tmp_path, split="validation")


def test_the_environment_variable_names_the_data_root(tmp_path, monkeypatch):
    images, labels = _digits(5, 5)
    (tmp_path / "mnist-10k").mkdir()
    _write_pair(tmp_path / "mnist-10k", "mnist10k", images, labels)
    monkeypatch.setenv("TORCHNDE_DATA", str(tmp_path))
    assert data_roots()[0] == tmp_path
    assert torch.equal(mnist_idx(split="all").labels, torch.from_numpy(labels.astype(np.int64)))


def test_absent_data_says_where_it_looked_and_how_to_point_at_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHNDE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(mnist, "data_roots", lambda: [tmp_path / "nowhere", tmp_path / "shared"])
    with pytest.raises(FileNotFoundError) as err:
        mnist_idx()
    message = str(err.value)
    assert (
        str(tmp_path / "nowhere" / "mnist-10k") in message
        and str(tmp_path / "shared" / "mnist-10k") in message
    )
    assert "path=" in message and "TORCHNDE_DATA" in message and "never downloads" in message
