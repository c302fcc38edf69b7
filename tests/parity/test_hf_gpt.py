"""Our GPT against Hugging Face ``transformers`` with tiny random models built here.

Each test saves a 2-layer, 32-wide GPT2LMHeadModel or LlamaForCausalLM with ``save_pretrained``,
loads the folder with ``selfattn.interop.load_hf`` and compares logits (fp32, 1e-5), greedy tokens
and left-padded batches; ``save_hf`` folders are loaded back by ``transformers``; damaged folders
are refused with one error naming every bad tensor.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from selfattn.interop import HF_LOADERS, load_hf, save_hf
from selfattn.models import GPT, GPTConfig

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 100


def tiny_gpt2(tie: bool = True, activation: str = "gelu_new"):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64,
                                  activation_function=activation, bos_token_id=0, eos_token_id=0,
                                  initializer_range=0.2, tie_word_embeddings=tie)
    return transformers.GPT2LMHeadModel(cfg).eval()


def tiny_llama(tie: bool):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=64,
                                   rope_theta=500.0, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0,
                                   initializer_range=0.2, tie_word_embeddings=tie)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms start at 1: make them count
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


HF_MODELS = {
    "gpt2": lambda: tiny_gpt2(),
    "gpt2-untied": lambda: tiny_gpt2(tie=False),
    "gpt2-gelu": lambda: tiny_gpt2(activation="gelu"),
    "llama-tied": lambda: tiny_llama(tie=True),
    "llama-untied": lambda: tiny_llama(tie=False),
}


@pytest.fixture(params=sorted(HF_MODELS))
def pair(request, tmp_path):
    hf = HF_MODELS[request.param]()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours, tokenizer = load_hf(tmp_path)
    return hf, ours


def hf_logits(hf, ids, attention_mask=None):
    position_ids = None
    if attention_mask is not None:
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return hf(ids, attention_mask=attention_mask, position_ids=position_ids).logits


def test_logits_match(pair):
    hf, ours = pair
    ids = torch.randint(0, VOCAB, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = ours(ids)
    want = hf_logits(hf, ids)
    assert want.std() > 0.1  # the comparison means something: logits are not all alike
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_loss_matches(pair):
    hf, ours = pair
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, loss = ours(ids[:, :-1], targets=ids[:, 1:])
        want = hf(ids, labels=ids).loss  # HF shifts the labels itself
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-5)


def greedy_ours(model, ids, n):
    cache = model.make_cache(ids.shape[0])
    out = ids
    with torch.no_grad():
        logits = model(ids, cache=cache)
        for _ in range(n):
            nxt = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            out = torch.cat([out, nxt], dim=1)
            logits = model(nxt, cache=cache)
    return out


def greedy_hf(hf, ids, n):
    out = ids
    for _ in range(n):  # full recomputation each step: the plainest reference
        nxt = hf_logits(hf, out)[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], dim=1)
    return out


def test_greedy_tokens_match(pair):
    hf, ours = pair
    ids = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(3))
    got, want = greedy_ours(ours, ids, 20), greedy_hf(hf, ids, 20)
    assert torch.equal(got, want), f"\nours {got.tolist()}\nhf   {want.tolist()}"
    assert len(set(got[0, 5:].tolist())) > 1  # not a degenerate repeat of one token


def test_left_padded_batch_matches(pair):
    hf, ours = pair
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, VOCAB, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, :4] = 0
    mask[1, :1] = 0
    with torch.no_grad():
        got = ours(ids, attention_mask=mask)
    want = hf_logits(hf, ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)


def test_save_hf_round_trip_through_transformers(pair, tmp_path):
    hf, ours = pair
    save_hf(ours, tmp_path / "out")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(back) is type(hf)
    ids = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(hf_logits(back, ids), hf_logits(hf, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides", [
    dict(),  # GPT-2 style
    dict(tie_embeddings=False, activation="gelu", ffn_hidden=48),
    dict(activation="swiglu", norm="rmsnorm", position="rope", bias=False, n_kv_head=2, tie_embeddings=False),
    dict(activation="swiglu", norm="rmsnorm", position="rope", bias=True, n_kv_head=1, rope_base=300.0),
], ids=["gpt2", "gpt2-untied", "llama-gqa", "llama-mqa-bias"])
def test_our_model_saved_loads_in_transformers(overrides, tmp_path):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=VOCAB, block_size=64, n_layer=2, n_head=4, n_embd=32, init_std=0.2, **overrides)
    ours = GPT(cfg).eval()
    with torch.no_grad():  # biases and norms start at 0 and 1: make them count
        for name, p in ours.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    save_hf(ours, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(hf_logits(hf, ids), ours(ids), atol=1e-5, rtol=1e-5)
    again, _ = load_hf(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(ids), ours(ids), atol=0, rtol=0)


@pytest.mark.parametrize("field,value", [("position", "alibi"), ("position", "sinusoidal"), ("position", "none"),
                                         ("norm", "rmsnorm"), ("n_kv_head", 2)])
def test_save_hf_refuses_what_hf_cannot_express(field, value, tmp_path):
    cfg = GPTConfig(vocab_size=VOCAB, block_size=64, n_layer=1, n_head=4, n_embd=32, **{field: value})
    with pytest.raises(ValueError, match=f"model.{field}"):
        save_hf(GPT(cfg), tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_sharded_folder_loads(tmp_path):
    hf = tiny_llama(tie=False)
    hf.save_pretrained(tmp_path / "one", safe_serialization=True)
    tensors = load_file(str(tmp_path / "one" / "model.safetensors"))
    names = sorted(tensors)
    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    (shard_dir / "config.json").write_text((tmp_path / "one" / "config.json").read_text())
    weight_map = {}
    for k, part in enumerate((names[::2], names[1::2])):
        fname = f"model-{k + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, str(shard_dir / fname))
        weight_map.update({n: fname for n in part})
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    ours, _ = load_hf(shard_dir)
    ids = torch.randint(0, VOCAB, (1, 8), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf_logits(hf, ids), atol=1e-5, rtol=1e-5)


def test_tokenizer_json_is_returned(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tiny_gpt2().save_pretrained(tmp_path, safe_serialization=True)
    tok = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    _, loaded = load_hf(tmp_path)  # wrapped as our HFTokenizer
    assert loaded.encode("hello world") == [0, 1] and loaded.decode([0, 1]) == "hello world"


# ---- damaged folders: one error that names every problem -----------------------------------

def damage(tmp_path, edit):
    tiny_gpt2().save_pretrained(tmp_path, safe_serialization=True)
    f = str(tmp_path / "model.safetensors")
    tensors = load_file(f)
    edit(tensors)
    save_file(tensors, f)
    return tmp_path


def test_missing_tensor_is_named(tmp_path):
    path = damage(tmp_path, lambda t: t.pop("transformer.h.1.mlp.c_fc.weight"))
    with pytest.raises(ValueError, match=r"missing tensors \(1\): transformer\.h\.1\.mlp\.c_fc\.weight"):
        load_hf(path)


def test_extra_tensor_is_named(tmp_path):
    path = damage(tmp_path, lambda t: t.update({"transformer.h.0.attn.rogue": torch.zeros(3)}))
    with pytest.raises(ValueError, match=r"unexpected tensors \(1\): transformer\.h\.0\.attn\.rogue"):
        load_hf(path)


def test_misshapen_tensor_is_named(tmp_path):
    path = damage(tmp_path, lambda t: t.update({"transformer.wpe.weight": torch.zeros(63, 32)}))
    with pytest.raises(ValueError, match=r"transformer\.wpe\.weight: expected \(64, 32\), got \(63, 32\)"):
        load_hf(path)


def test_all_problems_in_one_error(tmp_path):
    def edit(t):
        t.pop("transformer.ln_f.bias")
        t.pop("transformer.h.0.attn.c_proj.weight")
        t["lm_head.extra"] = torch.zeros(2)
        t["transformer.h.1.attn.c_attn.weight"] = torch.zeros(32, 95)

    with pytest.raises(ValueError) as err:
        load_hf(damage(tmp_path, edit))
    msg = str(err.value)
    for name in ("transformer.ln_f.bias", "transformer.h.0.attn.c_proj.weight", "lm_head.extra",
                 "transformer.h.1.attn.c_attn.weight"):
        assert name in msg, msg


def test_llama_missing_and_misshapen_named(tmp_path):
    tiny_llama(tie=False).save_pretrained(tmp_path, safe_serialization=True)
    f = str(tmp_path / "model.safetensors")
    t = load_file(f)
    t.pop("lm_head.weight")
    t["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(32, 32)  # GQA: should be (16, 32)
    save_file(t, f)
    with pytest.raises(ValueError, match=r"lm_head\.weight.*k_proj\.weight: expected \(16, 32\)"):
        load_hf(tmp_path)


def test_unknown_model_type_names_it_and_the_supported(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path, safe_serialization=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "mamba"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"model_type='mamba'.*'gpt2'.*'llama'"):
        load_hf(tmp_path)
    assert {"gpt2", "llama"} <= set(HF_LOADERS)


def test_pickle_only_folder_is_refused(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path, safe_serialization=True)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        load_hf(tmp_path)


def test_not_a_folder(tmp_path):
    with pytest.raises(ValueError, match="config.json is missing"):
        load_hf(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        load_hf(tmp_path / "nope")
