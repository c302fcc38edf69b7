import os

import pytest
import torch
from hypothesis import settings

# CI draws the same hypothesis examples on every run (no example database there); locally the
# draws vary, which is how new failures are found.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# The tests' tensors live on the CPU, so backend="triton" runs its kernels under Triton's CPU
# interpreter (on a GPU machine too): the same kernels, checked by every test that goes through the
# backends. Triton reads this when the kernels are first imported, so it is set before any test does.
os.environ.setdefault("TRITON_INTERPRET", "1")

# Two cores: keep each test process on a fixed, small thread count so results are repeatable.
torch.set_num_threads(int(os.environ.get("SELFATTN_TEST_THREADS", "1")))


class CountingTask:
    """A tiny deterministic task for trainer tests: predict (x_t + 1) mod V, keyed by position."""

    def __init__(self, vocab: int = 16, block: int = 12, seed: int = 0):
        self.vocab, self.block, self.seed = vocab, block, seed

    def batch(self, split, index, size, rows=None):
        g = torch.Generator().manual_seed(hash((self.seed, split, index)) % (2**31))
        start = torch.randint(0, self.vocab, (size, 1), generator=g)
        x = (start + torch.arange(self.block)) % self.vocab
        y = (x + 1) % self.vocab
        if rows is not None:
            x, y = x[rows], y[rows]
        return x, y

    def loss(self, model, batch):
        x, y = batch
        return model(x, targets=y)[1]

    def tokens(self, batch):
        return batch[0].numel()


@pytest.fixture
def counting_task():
    return CountingTask()
