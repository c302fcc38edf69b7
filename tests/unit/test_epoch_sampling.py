"""The "epoch" sampler: each window once per epoch, a pure function of the batch index."""

import numpy as np
import pytest
import torch

from selfattn.data.text import TokenData, epoch_windows


@pytest.fixture
def data():
    ids = np.arange(203, dtype=np.int64) % 251  # distinct values: a row's first id is its offset
    return TokenData(ids, ids[:50].copy(), 256)


@pytest.mark.parametrize("batch", [3, 4, 7])
def test_every_window_once_per_epoch_and_epochs_differ(data, batch):
    block = 10
    n = epoch_windows(len(data.train), block)
    assert n == 20
    rows = []
    for i in range(3 * n // batch + 1):
        x, y = data.batch("train", i, batch, block, seed=5, sampling="epoch")
        assert torch.equal(x[:, 1:], y[:, :-1])
        rows += x[:, 0].tolist()
    epochs = [rows[e * n:(e + 1) * n] for e in range(3)]
    for e in epochs:
        assert sorted(e) == [k * block for k in range(n)]  # non-overlapping windows, each once
    assert epochs[0] != epochs[1] != epochs[2]


def test_pure_function_of_the_index_and_rows_agree(data):
    a = data.batch("train", 9, 6, 10, seed=1, sampling="epoch")
    b = data.batch("train", 9, 6, 10, seed=1, sampling="epoch")
    part = data.batch("train", 9, 6, 10, seed=1, sampling="epoch", rows=slice(3, 6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[0][3:], part[0])
    assert not torch.equal(a[0], data.batch("train", 9, 6, 10, seed=2, sampling="epoch")[0])


def test_unknown_sampler(data):
    with pytest.raises(ValueError, match=r"sampling='shuffle' is not allowed; choose one of \('random', 'epoch'\)"):
        data.batch("train", 0, 2, 10, seed=1, sampling="shuffle")
