"""Hugging Face folders (config.json + safetensors) to and from our GPT.

A Hugging Face model folder holds ``config.json`` (the architecture, keyed by ``model_type``) and
``model.safetensors`` (or shards listed in ``model.safetensors.index.json``). Loading reads the
config into a ``GPTConfig``, renames every tensor into our parameter names (transposing GPT-2's
Conv1D weights, fusing Llama's separate q/k/v projections into our one ``qkv_proj``) and checks the
whole set before copying anything: a missing, unexpected or misshapen tensor is one ValueError that
lists them all.

Only safetensors are read: a ``pytorch_model.bin`` is a pickle and is refused.

Adding a model type is one entry in ``HF_LOADERS``: a function
``(config_dict, tensors_dict, path) -> (model, tokenizer | None)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..models.gpt import GPT, GPTConfig
from .hf_bert import load_bert
from .tensors import tensor_problems

# ---- reading a folder ------------------------------------------------------------------------


def read_config(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"{path} is not a Hugging Face model folder: config.json is missing")
    try:
        return json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file} is not valid JSON: {e}") from e


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of the folder, from one safetensors file or the shards of an index."""
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no 'weight_map' object")
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            shard_file = path / shard
            if not shard_file.is_file():
                raise ValueError(f"{index} names shard {shard!r}, which is not in {path}")
            tensors.update(load_file(str(shard_file)))
        return tensors
    if (path / "pytorch_model.bin").is_file():
        raise ValueError(f"{path} holds only pytorch_model.bin (a pickle, which can run code when "
                         "loaded); convert it to model.safetensors first")
    raise ValueError(f"{path} has neither model.safetensors nor model.safetensors.index.json")


def read_tokenizer(path: Path):
    """The folder's tokenizer.json wrapped as our ``HFTokenizer``, or None when there is none.
    The end-of-text id comes from config.json's ``eos_token_id`` where it is set."""
    tok_file = path / "tokenizer.json"
    if not tok_file.is_file():
        return None
    from tokenizers import Tokenizer

    from ..tokenizers import HFTokenizer

    eos = None
    cfg_file = path / "config.json"
    if cfg_file.is_file():
        eos = json.loads(cfg_file.read_text()).get("eos_token_id")
    return HFTokenizer(Tokenizer.from_file(str(tok_file)), eos_id=eos if isinstance(eos, int) else None)


# ---- checking and renaming -------------------------------------------------------------------


def take_tensors(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], *,
                 optional: dict[str, tuple[int, ...]] | None = None, ignored: Callable[[str], bool] = lambda n: False,
                 what: str) -> dict[str, torch.Tensor]:
    """Check the file's tensors against the architecture's list before using any of them.

    expected: name -> shape every tensor must have; optional: may be present (e.g. a tied lm_head
    some writers keep); ignored: names of buffers that older writers saved (causal masks)."""
    optional = optional or {}
    kept = {n: t for n, t in tensors.items() if n in expected or n in optional or not ignored(n)}
    parts = tensor_problems(kept, expected, optional)
    if parts:
        raise ValueError(f"the weights do not match the {what} architecture in config.json: " + " | ".join(parts))
    shapes = {**expected, **optional}
    return {n: tensors[n] for n in shapes if n in tensors}


def strip_prefix(tensors: dict[str, torch.Tensor], prefix: str, marker: str) -> dict[str, torch.Tensor]:
    """Some writers save the base model without its ``prefix`` (the original gpt2 files): add it
    back when no name has it but the marker tensor is there bare."""
    if any(n.startswith(prefix) for n in tensors) or marker not in tensors:
        return tensors
    return {(n if n == "lm_head.weight" else prefix + n): t for n, t in tensors.items()}


def load_state(model: GPT, state: dict[str, torch.Tensor]) -> GPT:
    with torch.no_grad():
        params = dict(model.named_parameters(remove_duplicate=False))
        for name, tensor in state.items():
            params[name].copy_(tensor)  # casts to the model's dtype
    return model


def _get(cfg: dict, key: str, default=None):
    value = cfg.get(key, default)
    return default if value is None else value


# ---- GPT-2 -----------------------------------------------------------------------------------

GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def gpt2_config(cfg: dict) -> GPTConfig:
    act = _get(cfg, "activation_function", "gelu_new")
    if act not in GPT2_ACTIVATIONS:
        raise ValueError(f"config.json activation_function={act!r} is not supported; "
                         f"supported: {sorted(GPT2_ACTIVATIONS)}")
    for key in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        if cfg.get(key):
            raise ValueError(f"config.json {key}=true is not supported by our GPT")
    if cfg.get("scale_attn_weights") is False:
        raise ValueError("config.json scale_attn_weights=false is not supported (we always scale by 1/sqrt(d))")
    n_embd = cfg["n_embd"]
    return GPTConfig(
        vocab_size=cfg["vocab_size"], block_size=_get(cfg, "n_positions", 1024), n_layer=cfg["n_layer"],
        n_head=cfg["n_head"], n_embd=n_embd, ffn_hidden=_get(cfg, "n_inner", 4 * n_embd),
        activation=GPT2_ACTIVATIONS[act], norm="layernorm", norm_eps=_get(cfg, "layer_norm_epsilon", 1e-5),
        position="learned", bias=True, tie_embeddings=_get(cfg, "tie_word_embeddings", True), dropout=0.0,
    )


def gpt2_names(c: GPTConfig) -> dict[str, tuple[str, tuple[int, ...], bool]]:
    """HF name -> (our name, HF shape, transpose?). Conv1D stores (in, out): transpose to Linear's (out, in)."""
    D, H4, V = c.n_embd, c.hidden, c.vocab_size
    names = {"transformer.wte.weight": ("tok_emb.weight", (V, D), False),
             "transformer.wpe.weight": ("pos.weight", (c.block_size, D), False),
             "transformer.ln_f.weight": ("norm_f.weight", (D,), False),
             "transformer.ln_f.bias": ("norm_f.bias", (D,), False)}
    for i in range(c.n_layer):
        h, b = f"transformer.h.{i}.", f"blocks.{i}."
        for hf, ours, shape, t in [
            ("ln_1", "norm1", (D,), False), ("ln_2", "norm2", (D,), False),
            ("attn.c_attn", "attn.qkv_proj", (D, 3 * D), True), ("attn.c_proj", "attn.out_proj", (D, D), True),
            ("mlp.c_fc", "ffn.up_proj", (D, H4), True), ("mlp.c_proj", "ffn.down_proj", (H4, D), True),
        ]:
            names[h + hf + ".weight"] = (b + ours + ".weight", shape, t)
            names[h + hf + ".bias"] = (b + ours + ".bias", (shape[-1],), False)
    if not c.tie_embeddings:
        names["lm_head.weight"] = ("lm_head.weight", (V, D), False)
    return names


def _gpt2_ignored(name: str) -> bool:
    # The causal-mask buffers that older GPT-2 files carry; they are not weights.
    return name.endswith((".attn.bias", ".attn.masked_bias"))


def load_gpt2(cfg: dict, tensors: dict[str, torch.Tensor], path: Path):
    c = gpt2_config(cfg)
    names = gpt2_names(c)
    tensors = strip_prefix(tensors, "transformer.", "wte.weight")
    optional = {"lm_head.weight": (c.vocab_size, c.n_embd)} if c.tie_embeddings else {}
    found = take_tensors(tensors, {n: s for n, (_, s, _) in names.items()}, optional=optional,
                         ignored=_gpt2_ignored, what="gpt2")
    state = {ours: (found[hf].t() if t else found[hf]) for hf, (ours, _, t) in names.items()}
    return load_state(GPT(c), state), read_tokenizer(path)


# ---- Llama -----------------------------------------------------------------------------------


def llama_rope_theta(cfg: dict) -> float:
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"config.json rope_type={rope_type!r} (RoPE scaling) is not supported; only 'default'")
    return float(params.get("rope_theta", _get(cfg, "rope_theta", 10000.0)))


def llama_config(cfg: dict) -> GPTConfig:
    act = _get(cfg, "hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"config.json hidden_act={act!r} is not supported; Llama needs 'silu' (SwiGLU)")
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    if _get(cfg, "head_dim", D // H) != D // H:
        raise ValueError(f"config.json head_dim={cfg['head_dim']} is not hidden_size/num_attention_heads={D // H}; "
                         "our GPT needs head_dim = hidden_size / num_attention_heads")
    attn_bias, mlp_bias = bool(cfg.get("attention_bias")), bool(cfg.get("mlp_bias"))
    if attn_bias != mlp_bias:
        raise ValueError(f"config.json attention_bias={attn_bias} with mlp_bias={mlp_bias} is not supported; "
                         "our GPT has one bias flag for both")
    if cfg.get("pretraining_tp", 1) not in (1, None):
        raise ValueError(f"config.json pretraining_tp={cfg['pretraining_tp']} is not supported; only 1")
    return GPTConfig(
        vocab_size=cfg["vocab_size"], block_size=_get(cfg, "max_position_embeddings", 2048),
        n_layer=cfg["num_hidden_layers"], n_head=H, n_kv_head=_get(cfg, "num_key_value_heads", H), n_embd=D,
        ffn_hidden=cfg["intermediate_size"], activation="swiglu", norm="rmsnorm",
        norm_eps=_get(cfg, "rms_norm_eps", 1e-6), position="rope", rope_base=llama_rope_theta(cfg),
        bias=attn_bias, tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), dropout=0.0,
    )


def llama_shapes(c: GPTConfig) -> dict[str, tuple[int, ...]]:
    D, F, V, kv = c.n_embd, c.hidden, c.vocab_size, (c.n_kv_head or c.n_head) * c.head_dim
    shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
    for i in range(c.n_layer):
        p = f"model.layers.{i}."
        layer = {"input_layernorm.weight": (D,), "post_attention_layernorm.weight": (D,),
                 "self_attn.q_proj.weight": (D, D), "self_attn.k_proj.weight": (kv, D),
                 "self_attn.v_proj.weight": (kv, D), "self_attn.o_proj.weight": (D, D),
                 "mlp.gate_proj.weight": (F, D), "mlp.up_proj.weight": (F, D), "mlp.down_proj.weight": (D, F)}
        if c.bias:
            layer.update({k.replace(".weight", ".bias"): (s[0],) for k, s in layer.items() if "proj" in k})
        shapes.update({p + k: s for k, s in layer.items()})
    if not c.tie_embeddings:
        shapes["lm_head.weight"] = (V, D)
    return shapes


def load_llama(cfg: dict, tensors: dict[str, torch.Tensor], path: Path):
    c = llama_config(cfg)
    tensors = strip_prefix(tensors, "model.", "embed_tokens.weight")
    optional = {"lm_head.weight": (c.vocab_size, c.n_embd)} if c.tie_embeddings else {}
    found = take_tensors(tensors, llama_shapes(c), optional=optional,
                         ignored=lambda n: n.endswith("rotary_emb.inv_freq"), what="llama")
    state = {"tok_emb.weight": found["model.embed_tokens.weight"], "norm_f.weight": found["model.norm.weight"]}
    if not c.tie_embeddings:
        state["lm_head.weight"] = found["lm_head.weight"]
    kinds = ["weight", "bias"] if c.bias else ["weight"]
    for i in range(c.n_layer):
        p, b = f"model.layers.{i}.", f"blocks.{i}."
        state[b + "norm1.weight"] = found[p + "input_layernorm.weight"]
        state[b + "norm2.weight"] = found[p + "post_attention_layernorm.weight"]
        for kind in kinds:
            # our fused projection: rows q | k | v, the same order as its split
            state[f"{b}attn.qkv_proj.{kind}"] = torch.cat(
                [found[f"{p}self_attn.{x}_proj.{kind}"] for x in "qkv"], dim=0)
            state[f"{b}attn.out_proj.{kind}"] = found[f"{p}self_attn.o_proj.{kind}"]
            for x in ("gate", "up", "down"):
                state[f"{b}ffn.{x}_proj.{kind}"] = found[f"{p}mlp.{x}_proj.{kind}"]
    return load_state(GPT(c), state), read_tokenizer(path)


# ---- the public entry points -----------------------------------------------------------------

HF_LOADERS: dict[str, Callable] = {"gpt2": load_gpt2, "llama": load_llama, "bert": load_bert}


def load_hf(path: str | Path):
    """A Hugging Face folder -> (our model in eval mode, fp32; the folder's tokenizer or None).

    The tokenizer is the raw ``tokenizers.Tokenizer`` read from tokenizer.json."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"path={str(path)!r} is not a folder")
    cfg = read_config(path)
    model_type = cfg.get("model_type")
    if model_type not in HF_LOADERS:
        raise ValueError(f"config.json model_type={model_type!r} is not supported; "
                         f"supported model types: {sorted(HF_LOADERS)}")
    model, tokenizer = HF_LOADERS[model_type](cfg, read_tensors(path), path)
    return model.eval(), tokenizer


def hf_family(c: GPTConfig) -> str:
    """Which Hugging Face architecture expresses this config; ValueError naming every field that
    neither can."""
    if c.position not in ("learned", "rope"):
        raise ValueError(f"model.position={c.position!r} has no Hugging Face equivalent; save_hf supports "
                         "'learned' (GPT2LMHeadModel) and 'rope' (LlamaForCausalLM)")
    if c.position == "learned":
        wanted = {"norm": ("layernorm",), "activation": tuple(v for v in ("gelu_tanh", "gelu", "relu")),
                  "bias": (True,), "n_kv_head": (None, c.n_head)}
        family = "gpt2"
    else:
        wanted = {"norm": ("rmsnorm",), "activation": ("swiglu",)}
        family = "llama"
    bad = [f"model.{k}={getattr(c, k)!r} (allowed: {', '.join(map(repr, v))})"
           for k, v in wanted.items() if getattr(c, k) not in v]
    if bad:
        arch = "GPT2LMHeadModel" if family == "gpt2" else "LlamaForCausalLM"
        raise ValueError(f"model.position={c.position!r} maps to {arch}, which cannot express: " + "; ".join(bad))
    return family


_GPT2_ACT_NAMES = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


def _dtype_name(model: GPT) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def gpt2_export(model: GPT) -> tuple[dict, dict[str, torch.Tensor]]:
    c = model.config
    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
           "n_positions": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head,
           "n_inner": c.hidden, "activation_function": _GPT2_ACT_NAMES[c.activation],
           "layer_norm_epsilon": c.norm_eps, "resid_pdrop": c.dropout, "embd_pdrop": c.dropout,
           "attn_pdrop": c.dropout, "tie_word_embeddings": c.tie_embeddings}
    params = dict(model.named_parameters(remove_duplicate=False))
    tensors = {hf: (params[ours].t() if t else params[ours]) for hf, (ours, _, t) in gpt2_names(c).items()}
    return cfg, tensors


def llama_export(model: GPT) -> tuple[dict, dict[str, torch.Tensor]]:
    c = model.config
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": c.vocab_size,
           "hidden_size": c.n_embd, "intermediate_size": c.hidden, "num_hidden_layers": c.n_layer,
           "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head or c.n_head,
           "head_dim": c.head_dim, "hidden_act": "silu", "max_position_embeddings": c.block_size,
           "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_base,
           "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_base},
           "attention_bias": c.bias, "mlp_bias": c.bias, "attention_dropout": c.dropout,
           "tie_word_embeddings": c.tie_embeddings}
    params = dict(model.named_parameters(remove_duplicate=False))
    D, kv = c.n_embd, (c.n_kv_head or c.n_head) * c.head_dim
    tensors = {"model.embed_tokens.weight": params["tok_emb.weight"], "model.norm.weight": params["norm_f.weight"]}
    if not c.tie_embeddings:
        tensors["lm_head.weight"] = params["lm_head.weight"]
    for i in range(c.n_layer):
        p, b = f"model.layers.{i}.", f"blocks.{i}."
        tensors[p + "input_layernorm.weight"] = params[b + "norm1.weight"]
        tensors[p + "post_attention_layernorm.weight"] = params[b + "norm2.weight"]
        for kind in (["weight", "bias"] if c.bias else ["weight"]):
            q, k, v = params[f"{b}attn.qkv_proj.{kind}"].split([D, kv, kv], dim=0)
            tensors.update({f"{p}self_attn.q_proj.{kind}": q, f"{p}self_attn.k_proj.{kind}": k,
                            f"{p}self_attn.v_proj.{kind}": v,
                            f"{p}self_attn.o_proj.{kind}": params[f"{b}attn.out_proj.{kind}"]})
            for x in ("gate", "up", "down"):
                tensors[f"{p}mlp.{x}_proj.{kind}"] = params[f"{b}ffn.{x}_proj.{kind}"]
    return cfg, tensors


def save_hf(model: GPT, path: str | Path, tokenizer=None) -> Path:
    """Write ``model`` as a Hugging Face folder (config.json + model.safetensors) that
    ``transformers`` loads: GPT2LMHeadModel for learned positions, LlamaForCausalLM for RoPE.
    ``tokenizer``: anything with ``save(path)`` writing tokenizer.json (a ``tokenizers.Tokenizer``)."""
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a selfattn GPT; got {type(model).__name__}")
    family = hf_family(model.config)
    cfg, tensors = (gpt2_export if family == "gpt2" else llama_export)(model)
    dtype = _dtype_name(model)
    cfg.update({"dtype": dtype, "torch_dtype": dtype})
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # safetensors refuses views that share memory: give each tensor its own contiguous storage.
    save_file({n: t.detach().contiguous().clone() for n, t in tensors.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(str(path / "tokenizer.json"))
    return path
