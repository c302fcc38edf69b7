"""Token ids for causal language modelling: encoded once, cached on disk, sampled by position.

    data = TokenData.build(train_text, val_text, tokenizer, cache_dir)  # 2nd run: a memmap open
    x, y = data.batch("train", step, batch_size=64, block_size=256, seed=1337)  # (B, T) each

A batch is a pure function of (seed, split, index): resuming at step k, or splitting a batch
over processes with ``rows=``, gives exactly the rows a single uninterrupted run would see.

Two samplers (``sampling=``): "random" (default) draws each row's start anywhere in the split;
"epoch" cuts the split into n = (len - 1) // block_size windows starting every block_size tokens
(inputs never overlap) and visits them in a fresh seeded permutation per epoch, so every window
is seen exactly once per epoch. Row r of the whole run (r = index * batch_size + i) is window
perm_e[r mod n] of epoch e = r // n: still a pure function of the index, and a batch may straddle
two epochs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..tokenizers import Tokenizer

SPLITS = ("train", "val")
SAMPLERS = ("random", "epoch")
_CACHE_VERSION = 1


def text_file_splits(path: str | os.PathLike, val_fraction: float = 0.1) -> tuple[str, str]:
    """(train, val) from one UTF-8 text file: validation is the contiguous tail of the text."""
    if not isinstance(val_fraction, (int, float)) or isinstance(val_fraction, bool) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r} must be a number in (0, 1)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file {str(path)!r} does not exist (or is not a file)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: byte {e.start} ({raw[e.start:e.start + 1]!r}) cannot be decoded") from None
    if not text.strip():
        raise ValueError(f"{path} is empty (no text to train on)")
    cut = int(round(len(text) * (1 - val_fraction)))
    if cut <= 0 or cut >= len(text):
        raise ValueError(
            f"{path} has {len(text)} characters: too few to split with val_fraction={val_fraction} "
            "(both splits need at least one character)"
        )
    return text[:cut], text[cut:]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def cache_key(train_text: str, val_text: str, tokenizer: Tokenizer) -> str:
    """Hash of everything that decides the token ids: both texts and the tokenizer's behaviour."""
    parts = [f"v{_CACHE_VERSION}", tokenizer.fingerprint(), _sha256(train_text), _sha256(val_text)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _batch_seed(seed: int, split: str, index: int) -> int:
    digest = hashlib.sha256(f"selfattn-batch\0{seed}\0{split}\0{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed: int, split: str, epoch: int, n_windows: int) -> torch.Tensor:
    """The order in which epoch ``epoch`` visits the ``n_windows`` windows: (n_windows,) int64."""
    digest = hashlib.sha256(f"selfattn-epoch\0{seed}\0{split}\0{epoch}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return torch.randperm(n_windows, generator=gen)


def epoch_windows(n_tokens: int, block_size: int) -> int:
    """How many non-overlapping windows (block_size inputs + 1 target) the "epoch" sampler uses."""
    return (n_tokens - 1) // block_size


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare .train/.val yourself
class TokenData:
    """The two splits as 1-D arrays of token ids (read-only memmaps when built with a cache)."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    cache_dir: Path | None = None
    from_cache: bool = False  # True when build() found the ids on disk and encoded nothing
    encode_seconds: float = 0.0

    @classmethod
    def build(
        cls, train_text: str, val_text: str, tokenizer: Tokenizer, cache_dir: str | os.PathLike | None
    ) -> TokenData:
        """Encode both splits, or open them from ``cache_dir/<hash>/`` if an earlier run did."""
        for label, text in (("train_text", train_text), ("val_text", val_text)):
            if not isinstance(text, str):
                raise TypeError(f"TokenData.build: {label} must be a str, got {type(text).__name__}")
            if not text:
                raise ValueError(f"TokenData.build: {label} is empty")
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"TokenData.build: tokenizer must be a selfattn Tokenizer, got {type(tokenizer).__name__}")
        vocab = tokenizer.vocab_size
        if cache_dir is None:
            t0 = time.perf_counter()
            ids = {s: _encode(tokenizer, t, s) for s, t in zip(SPLITS, (train_text, val_text))}
            return cls(ids["train"], ids["val"], vocab, encode_seconds=time.perf_counter() - t0)

        folder = Path(cache_dir) / cache_key(train_text, val_text, tokenizer)
        if (folder / "meta.json").is_file():
            return cls._open(folder)
        t0 = time.perf_counter()
        ids = {s: _encode(tokenizer, t, s) for s, t in zip(SPLITS, (train_text, val_text))}
        seconds = time.perf_counter() - t0
        _write_atomically(folder, ids, vocab, tokenizer.name)
        opened = cls._open(folder)
        return cls(opened.train, opened.val, vocab, folder, from_cache=False, encode_seconds=seconds)

    @classmethod
    def _open(cls, folder: Path) -> TokenData:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        arrays = {
            s: np.memmap(folder / f"{s}.bin", dtype=dtype, mode="r", shape=(meta["lengths"][s],)) for s in SPLITS
        }
        return cls(arrays["train"], arrays["val"], meta["vocab_size"], folder, from_cache=True)

    def split(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not allowed; choose one of {SPLITS}")
        return self.train if split == "train" else self.val

    def __len__(self) -> int:
        return len(self.train) + len(self.val)

    def batch(
        self,
        split: str,
        index: int,
        batch_size: int,
        block_size: int,
        *,
        seed: int,
        rows: slice | None = None,
        sampling: str = "random",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``index`` of ``split``: (x, y) LongTensors (B, T), y = x shifted left by one.

        Row offsets come from a generator seeded by (seed, split, index) alone, so any process can
        rebuild any batch; ``rows=slice(a, b)`` returns rows a..b-1 of that same batch.
        """
        data = self.split(split)
        for label, value, lo in (("index", index, 0), ("batch_size", batch_size, 1), ("block_size", block_size, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise ValueError(f"{label}={value!r} must be an int >= {lo}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed={seed!r} must be an int")
        if sampling not in SAMPLERS:
            raise ValueError(f"sampling={sampling!r} is not allowed; choose one of {SAMPLERS}")
        if block_size >= len(data):
            raise ValueError(
                f"block_size={block_size} must be smaller than the {split} split ({len(data)} tokens): "
                "each row needs block_size + 1 consecutive tokens"
            )
        picked = range(batch_size)
        if rows is not None:
            if not isinstance(rows, slice):
                raise TypeError(f"rows must be a slice (e.g. slice(0, {batch_size // 2 or 1})), got {type(rows).__name__}")
            picked = picked[rows]
            if len(picked) == 0:
                raise ValueError(f"rows={rows!r} selects no row of a batch of {batch_size}")

        if sampling == "epoch":
            offsets = self._epoch_offsets(split, index, batch_size, block_size, seed)  # (B,)
        else:
            gen = torch.Generator().manual_seed(_batch_seed(seed, split, index))
            # Always draw the whole batch's offsets, then pick rows: a slice sees the same offsets.
            offsets = torch.randint(0, len(data) - block_size, (batch_size,), generator=gen)  # (B,)
        chunk = np.stack([data[o : o + block_size + 1] for o in offsets[list(picked)].tolist()])  # (b, T+1)
        chunk = torch.from_numpy(chunk.astype(np.int64))
        return chunk[:, :-1], chunk[:, 1:]  # (b, T), (b, T)


    def _epoch_offsets(self, split: str, index: int, batch_size: int, block_size: int, seed: int) -> torch.Tensor:
        n = epoch_windows(len(self.split(split)), block_size)
        first = index * batch_size  # row number in the whole run
        offsets = []
        for r in range(first, first + batch_size):
            epoch, within = divmod(r, n)
            offsets.append(int(_epoch_permutation(seed, split, epoch, n)[within]) * block_size)
        return torch.tensor(offsets, dtype=torch.long)

    def epoch_of(self, split: str, index: int, batch_size: int, block_size: int) -> float:
        """Epochs completed before batch ``index`` under the "epoch" sampler (fractional)."""
        return index * batch_size / epoch_windows(len(self.split(split)), block_size)


def _encode(tokenizer: Tokenizer, text: str, split: str) -> np.ndarray:
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    if ids.size == 0:
        raise ValueError(f"the {split} text encodes to no tokens")
    if ids.min() < 0 or ids.max() >= tokenizer.vocab_size:
        raise ValueError(
            f"{tokenizer!r} produced ids outside [0, {tokenizer.vocab_size}) for the {split} split"
        )
    return ids.astype(id_dtype(tokenizer.vocab_size))


def _write_atomically(folder: Path, ids: dict[str, np.ndarray], vocab_size: int, tokenizer_name: str) -> None:
    # Write into a temporary sibling and rename it into place: a crash or a second process
    # building at the same time never leaves a half-written cache that looks complete.
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for split, arr in ids.items():
            arr.tofile(tmp / f"{split}.bin")
        meta = {
            "version": _CACHE_VERSION,
            "dtype": arr.dtype.name,
            "vocab_size": vocab_size,
            "tokenizer": tokenizer_name,
            "lengths": {s: int(a.size) for s, a in ids.items()},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "meta.json").is_file():  # not a lost race: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
