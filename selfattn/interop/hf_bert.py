"""Hugging Face BERT (safetensors + config.json) -> ``selfattn.models.Encoder``.

    model, tokenizer = load_bert_folder("path/to/all-MiniLM-L6-v2")

Names are mapped one by one onto ours; the only reshaping is the fused attention input
projection, whose rows are q | k | v stacked. Every tensor is accounted for: a missing, extra
or misshapen one is a single ValueError listing them all, raised before any weight is copied.

Optional parts are loaded when present: the pooler (dense+tanh over [CLS]), the MLM head
(``cls.predictions.*``; its decoder must be tied to the word embeddings) and a
sequence-classification head (``classifier.*``). Two things are skipped on purpose: the
next-sentence head (``cls.seq_relationship.*``, which our encoder does not model) and the saved
index buffers ``embeddings.position_ids`` / ``embeddings.token_type_ids`` (not weights).
Names may carry the ``bert.`` prefix of BertFor* checkpoints; old ``LayerNorm.gamma/beta``
names are read as ``weight/bias``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from ..models.encoder import Encoder, EncoderConfig
from .tensors import tensor_problems

# Hugging Face's activation names -> ours (BERT's "gelu" is the exact erf form).
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
_SKIPPED_PREFIXES = ("cls.seq_relationship.",)


def bert_config(config_dict: dict) -> EncoderConfig:
    """EncoderConfig from a Hugging Face BERT config.json (without optional heads)."""
    c = config_dict
    model_type = c.get("model_type", "bert")
    if model_type != "bert":
        raise ValueError(f"config model_type={model_type!r} is not a BERT model; expected 'bert'")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size") if k not in c]
    if missing:
        raise ValueError(f"BERT config.json lacks {missing}")
    act = c.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise ValueError(f"hidden_act={act!r} is not supported; supported: {sorted(_ACTIVATIONS)}")
    pos = c.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise ValueError(f"position_embedding_type={pos!r} is not supported; only 'absolute'")
    if c.get("is_decoder") or c.get("add_cross_attention"):
        raise ValueError("decoder BERT configs (is_decoder/add_cross_attention) are not supported")
    return EncoderConfig(
        vocab_size=c["vocab_size"], max_position=c.get("max_position_embeddings", 512),
        type_vocab_size=c.get("type_vocab_size", 2), n_layer=c["num_hidden_layers"],
        n_head=c["num_attention_heads"], n_embd=c["hidden_size"], ffn_hidden=c["intermediate_size"],
        activation=_ACTIVATIONS[act], norm_eps=float(c.get("layer_norm_eps", 1e-12)), prenorm=False,
        position="learned", dropout=0.0, pooling="cls", pad_id=c.get("pad_token_id") or 0,
    )


def _canonical(name: str) -> str:
    if name.startswith("bert."):
        name = name[len("bert."):]
    if ".LayerNorm.gamma" in name or ".LayerNorm.beta" in name:
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    return name


def _expected(cfg: EncoderConfig, pooler: bool, mlm: bool, n_classes: int) -> dict[str, tuple[int, ...]]:
    """Every HF tensor name we read, with its shape."""
    D, F, V = cfg.n_embd, cfg.hidden, cfg.vocab_size
    e = {
        "embeddings.word_embeddings.weight": (V, D),
        "embeddings.position_embeddings.weight": (cfg.max_position, D),
        "embeddings.LayerNorm.weight": (D,), "embeddings.LayerNorm.bias": (D,),
    }
    if cfg.type_vocab_size:
        e["embeddings.token_type_embeddings.weight"] = (cfg.type_vocab_size, D)
    for i in range(cfg.n_layer):
        p = f"encoder.layer.{i}."
        for part in ("query", "key", "value"):
            e[f"{p}attention.self.{part}.weight"] = (D, D)
            e[f"{p}attention.self.{part}.bias"] = (D,)
        e.update({
            f"{p}attention.output.dense.weight": (D, D), f"{p}attention.output.dense.bias": (D,),
            f"{p}attention.output.LayerNorm.weight": (D,), f"{p}attention.output.LayerNorm.bias": (D,),
            f"{p}intermediate.dense.weight": (F, D), f"{p}intermediate.dense.bias": (F,),
            f"{p}output.dense.weight": (D, F), f"{p}output.dense.bias": (D,),
            f"{p}output.LayerNorm.weight": (D,), f"{p}output.LayerNorm.bias": (D,),
        })
    if pooler:
        e.update({"pooler.dense.weight": (D, D), "pooler.dense.bias": (D,)})
    if mlm:
        e.update({
            "cls.predictions.transform.dense.weight": (D, D), "cls.predictions.transform.dense.bias": (D,),
            "cls.predictions.transform.LayerNorm.weight": (D,), "cls.predictions.transform.LayerNorm.bias": (D,),
            "cls.predictions.bias": (V,),
        })
    if n_classes:
        e.update({"classifier.weight": (n_classes, D), "classifier.bias": (n_classes,)})
    return e


def _our_state(t: dict[str, torch.Tensor], cfg: EncoderConfig) -> dict[str, torch.Tensor]:
    """HF tensors (canonical names, already checked) -> our state_dict."""
    s = {
        "tok_emb.weight": t["embeddings.word_embeddings.weight"],
        "pos.weight": t["embeddings.position_embeddings.weight"],
        "emb_norm.weight": t["embeddings.LayerNorm.weight"],
        "emb_norm.bias": t["embeddings.LayerNorm.bias"],
    }
    if cfg.type_vocab_size:
        s["seg_emb.weight"] = t["embeddings.token_type_embeddings.weight"]
    for i in range(cfg.n_layer):
        p, q = f"encoder.layer.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            # Our fused projection computes q | k | v in one matmul: stack the rows in that order.
            s[f"{q}attn.qkv_proj.{kind}"] = torch.cat(
                [t[f"{p}attention.self.{part}.{kind}"] for part in ("query", "key", "value")], dim=0)
            s[f"{q}attn.out_proj.{kind}"] = t[f"{p}attention.output.dense.{kind}"]
            s[f"{q}norm1.{kind}"] = t[f"{p}attention.output.LayerNorm.{kind}"]
            s[f"{q}ffn.up_proj.{kind}"] = t[f"{p}intermediate.dense.{kind}"]
            s[f"{q}ffn.down_proj.{kind}"] = t[f"{p}output.dense.{kind}"]
            s[f"{q}norm2.{kind}"] = t[f"{p}output.LayerNorm.{kind}"]
    if cfg.pooler:
        s["pooler.weight"], s["pooler.bias"] = t["pooler.dense.weight"], t["pooler.dense.bias"]
    if cfg.mlm_head:
        s["mlm_head.dense.weight"] = t["cls.predictions.transform.dense.weight"]
        s["mlm_head.dense.bias"] = t["cls.predictions.transform.dense.bias"]
        s["mlm_head.norm.weight"] = t["cls.predictions.transform.LayerNorm.weight"]
        s["mlm_head.norm.bias"] = t["cls.predictions.transform.LayerNorm.bias"]
        s["mlm_head.bias"] = t["cls.predictions.bias"]
    if cfg.n_classes:
        s["classifier.weight"], s["classifier.bias"] = t["classifier.weight"], t["classifier.bias"]
    return s


def load_bert(config_dict: dict, tensors: dict[str, torch.Tensor], path: str | Path | None = None):
    """(Hugging Face config.json as a dict, its safetensors tensors, the folder) ->
    (Encoder in eval mode, ``tokenizers.Tokenizer`` or None when the folder has no tokenizer.json).

    The loader signature shared with the other Hugging Face loaders (GPT-2, Llama).
    """
    if not isinstance(config_dict, dict):
        raise TypeError(f"config_dict must be a dict (config.json); got {type(config_dict).__name__}")
    cfg = bert_config(config_dict)
    t: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        canon = _canonical(name)
        if canon in t:
            raise ValueError(f"tensor {canon!r} appears twice (with and without the 'bert.' prefix)")
        t[canon] = value

    # Optional heads are detected from the tensors themselves.
    n_classes = 0
    if "classifier.weight" in t and t["classifier.weight"].dim() == 2:
        n_classes = int(t["classifier.weight"].shape[0])
    cfg = replace(cfg, pooler=any(k.startswith("pooler.") for k in t), n_classes=n_classes,
                  mlm_head=any(k.startswith("cls.predictions.") for k in t))

    # The MLM decoder is tied to the word embeddings in BERT; an untied or aliased copy is
    # accepted only if it is that same matrix (and its bias the same as cls.predictions.bias).
    problems: list[str] = []
    if cfg.mlm_head:
        dec_w = t.pop("cls.predictions.decoder.weight", None)
        words = t.get("embeddings.word_embeddings.weight")
        if dec_w is not None and words is not None and (dec_w.shape != words.shape or not torch.equal(dec_w, words)):
            problems.append("cls.predictions.decoder.weight differs from the word embeddings "
                            "(an untied decoder is not supported)")
        dec_b = t.pop("cls.predictions.decoder.bias", None)
        if dec_b is not None:
            if "cls.predictions.bias" not in t:
                t["cls.predictions.bias"] = dec_b
            elif not torch.equal(dec_b, t["cls.predictions.bias"]):
                problems.append("cls.predictions.decoder.bias differs from cls.predictions.bias")
    for name in list(t):
        if name in _BUFFERS or name.startswith(_SKIPPED_PREFIXES):
            del t[name]

    expected = _expected(cfg, cfg.pooler, cfg.mlm_head, cfg.n_classes)
    problems += tensor_problems(t, expected)
    if problems:
        where = f" in {path}" if path is not None else ""
        raise ValueError(f"BERT tensors{where} do not match its config: " + "; ".join(problems))

    model = Encoder(cfg)
    with torch.no_grad():
        model.load_state_dict(_our_state(t, cfg), strict=True)
    model.eval()
    return model, load_bert_tokenizer(path, cfg) if path is not None else None


def load_bert_tokenizer(path: str | Path, cfg: EncoderConfig | None = None):
    """The folder's tokenizer.json (WordPiece, adds [CLS] ... [SEP]) or None if it has none.

    Padding is switched off (files such as MiniLM's pad every input to 128; batching pads
    itself). Truncation is kept so no input outruns the model's positions: at the folder's
    sentence-transformers ``max_seq_length`` when it has one (what that library does), else at
    ``max_position``.
    """
    from tokenizers import Tokenizer

    folder = Path(path)
    file = folder / "tokenizer.json"
    if not file.is_file():
        return None
    tok = Tokenizer.from_file(str(file))
    tok.no_padding()
    limit = cfg.max_position if cfg is not None else None
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        seq = json.loads(st_config.read_text()).get("max_seq_length")
        if isinstance(seq, int) and seq > 0:
            limit = min(seq, limit) if limit else seq
    if limit:
        tok.enable_truncation(max_length=limit)
    else:
        tok.no_truncation()
    return tok


def load_bert_folder(path: str | Path):
    """A Hugging Face BERT folder (config.json + model.safetensors [+ tokenizer.json]) ->
    (Encoder, tokenizer or None)."""
    from safetensors.torch import load_file

    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"path={str(path)!r} is not a folder")
    lacking = [n for n in ("config.json", "model.safetensors") if not (folder / n).is_file()]
    if lacking:
        raise ValueError(f"BERT folder {folder} lacks {lacking} (weights are read only from safetensors)")
    config_dict = json.loads((folder / "config.json").read_text())
    return load_bert(config_dict, load_file(str(folder / "model.safetensors")), folder)
