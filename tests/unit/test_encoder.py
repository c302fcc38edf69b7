"""The BERT-style encoder: padding, masking statistics, invariants, heads, validation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from selfattn.config import ConfigError
from selfattn.models import Encoder, EncoderConfig
from selfattn.models.encoder import mask_tokens
from selfattn.train import weight_decay_groups

V = 50


def tiny(**kw) -> Encoder:
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, max_position=32, n_layer=2, n_head=4, n_embd=32, ffn_hidden=48,
               attn_backend="math")
    cfg.update(kw)
    return Encoder(EncoderConfig(**cfg)).eval()


def _pad(seqs, side, pad=0):
    L = max(len(s) for s in seqs)
    ids, mask = [], []
    for s in seqs:
        fill = [pad] * (L - len(s))
        ids.append(s + fill if side == "right" else fill + s)
        m = [1] * len(s) + [0] * (L - len(s))
        mask.append(m if side == "right" else m[::-1])
    return torch.tensor(ids), torch.tensor(mask)


# ---- padding -------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kw", [dict(pooler=True), dict(prenorm=True), dict(position="sinusoidal", type_vocab_size=0),
                                dict(attn_backend="torch")])
def test_padded_batch_equals_each_sequence_alone(side, kw):
    model = tiny(**kw)
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(1, V, (n,), generator=g).tolist() for n in (7, 3, 5, 1)]
    ids, mask = _pad(seqs, side)
    with torch.no_grad():
        batch = model.encode(ids, mask)  # (B, T, D)
        emb = model.sentence_embedding(ids, mask)
        pooled = model.pool(batch, mask)  # first real token, through the pooler
        for b, s in enumerate(seqs):
            alone = model.encode(torch.tensor([s]))[0]  # (n, D)
            real = mask[b].bool()
            torch.testing.assert_close(batch[b][real], alone, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(emb[b], model.sentence_embedding(torch.tensor([s]))[0],
                                       atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(pooled[b], model.pool(alone[None], None)[0], atol=1e-5, rtol=1e-5)


def test_padding_changes_nothing_only_because_it_is_masked():
    """Without the mask, the pad tokens do leak into the real ones: the mask is what matters."""
    model = tiny()
    ids, mask = _pad([[5, 6, 7, 8], [9, 10]], "right")
    with torch.no_grad():
        masked = model.encode(ids, mask)[1, :2]
        unmasked = model.encode(ids)[1, :2]
        alone = model.encode(torch.tensor([[9, 10]]))[0]
    torch.testing.assert_close(masked, alone, atol=1e-5, rtol=1e-5)
    assert (unmasked - alone).abs().max() > 1e-3


# ---- MLM masking ---------------------------------------------------------------------------
def test_mask_tokens_statistics():
    pad, cls, sep, mask_id, vocab = 0, 1, 2, 3, 1000
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (64, 256), generator=g)
    ids[:, 0], ids[:, -1] = cls, sep
    ids[:8, 200:] = pad
    special = ids <= 3
    inputs, labels = mask_tokens(ids, mask_id, vocab, special_ids=[pad, cls, sep], prob=0.15,
                                 generator=torch.Generator().manual_seed(123))
    selected = labels != -100
    assert not (selected & special).any(), "a special token was selected"
    torch.testing.assert_close(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected]), "an unselected token was changed"
    rate = selected.sum().item() / (~special).sum().item()
    assert abs(rate - 0.15) < 0.01, rate
    n = selected.sum().item()
    masked = (inputs == mask_id) & selected
    kept = (inputs == ids) & selected
    randomised = selected & ~masked & ~kept
    assert abs(masked.sum().item() / n - 0.8) < 0.02
    assert abs(randomised.sum().item() / n - 0.1) < 0.02
    assert abs(kept.sum().item() / n - 0.1) < 0.02
    assert not (inputs[randomised] <= 3).any(), "a random replacement was a special token"


def test_mask_tokens_is_reproducible_and_validates():
    ids = torch.randint(4, 100, (4, 16))
    a = mask_tokens(ids, 3, 100, [0, 1, 2], generator=torch.Generator().manual_seed(5))
    b = mask_tokens(ids, 3, 100, [0, 1, 2], generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="prob"):
        mask_tokens(ids, 3, 100, [0], prob=0.0)
    with pytest.raises(ValueError, match="mask_id"):
        mask_tokens(ids, 100, 100, [0])
    with pytest.raises(ValueError, match="input_ids"):
        mask_tokens(ids + 100, 3, 100, [0])
    with pytest.raises(TypeError, match="input_ids"):
        mask_tokens(ids.float(), 3, 100, [0])


# ---- invariants ----------------------------------------------------------------------------
_NOPOS = tiny(position="none", type_vocab_size=0)
_LEARNED = tiny()


@settings(max_examples=8, deadline=None)
@given(st.permutations(list(range(9))), st.integers(0, 2**31 - 1))
def test_no_positions_is_permutation_equivariant(perm, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (2, 9), generator=g)
    p = torch.tensor(perm)
    with torch.no_grad():
        torch.testing.assert_close(_NOPOS.encode(x[:, p]), _NOPOS.encode(x)[:, p], atol=1e-5, rtol=1e-5)


def test_learned_positions_break_permutation_equivariance():
    x = torch.arange(1, 10).unsqueeze(0)
    p = torch.arange(8, -1, -1)
    with torch.no_grad():
        assert (_LEARNED.encode(x[:, p]) - _LEARNED.encode(x)[:, p]).abs().max() > 1e-3


# ---- heads ---------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling,pooler", [("cls", True), ("mean", False)])
def test_classifier_learns_a_toy_rule(pooling, pooler):
    """label = 1 iff token 7 occurs; a few Adam steps on one batch must cut the loss."""
    model = tiny(n_classes=2, pooling=pooling, pooler=pooler).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(8, V, (16, 8), generator=g)
    ids[:, 0] = 1  # [CLS]
    labels = torch.arange(16) % 2
    ids[labels == 1, 4] = 7
    opt = torch.optim.AdamW(weight_decay_groups(model, 0.01), lr=1e-2)
    out = model(ids, labels=labels)
    assert out.logits.shape == (16, 2) and out.hidden.shape == (16, 8, 32) and out.mlm_logits is None
    first = out.loss.item()
    for _ in range(12):
        loss = model(ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first, (first, loss.item())


def test_mlm_head_is_tied_and_its_loss_is_the_masked_mean():
    model = tiny(mlm_head=True)
    ids = torch.randint(4, V, (3, 8))
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[2, 5] = 11, 12
    out = model(ids, labels=labels)
    assert out.mlm_logits.shape == (3, 8, V) and out.logits is None
    want = torch.nn.functional.cross_entropy(out.mlm_logits[[0, 2], [2, 5]], torch.tensor([11, 12]))
    torch.testing.assert_close(out.loss, want)
    out.loss.backward()
    assert model.tok_emb.weight.grad[11].abs().sum() > 0  # the decoder is the embedding matrix
    assert not any(n.endswith("decoder.weight") for n, _ in model.named_parameters())
    empty = model(ids, labels=torch.full_like(ids, -100)).loss
    assert torch.isfinite(empty) and empty.item() == 0.0


def test_sentence_embedding_is_the_normalised_mean_over_real_tokens():
    model = tiny()
    ids, mask = _pad([[3, 4, 5], [6, 7]], "right")
    with torch.no_grad():
        h = model.encode(ids, mask)
        raw = model.sentence_embedding(ids, mask, normalize=False)
        unit = model.sentence_embedding(ids, mask)
    torch.testing.assert_close(raw[1], h[1, :2].mean(0))
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(unit, raw / raw.norm(dim=-1, keepdim=True))


# ---- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize("kw,field", [
    (dict(position="rope"), "model.position"),
    (dict(pooling="max"), "model.pooling"),
    (dict(n_classes=1), "model.n_classes"),
    (dict(n_embd=30), "model.n_embd"),
    (dict(dropout=1.0), "model.dropout"),
    (dict(attn_dropout=-0.1), "model.attn_dropout"),
    (dict(type_vocab_size=-1), "model.type_vocab_size"),
    (dict(pad_id=V), "model.pad_id"),
    (dict(activation="tanh"), "model.activation"),
    (dict(n_layer=0), "model.n_layer"),
])
def test_config_rejects_bad_values(kw, field):
    base = dict(vocab_size=V, max_position=32, n_layer=2, n_head=4, n_embd=32)
    base.update(kw)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        EncoderConfig(**base)


def test_bad_inputs_are_refused_before_any_work():
    model = tiny(type_vocab_size=0, n_classes=2)
    ids = torch.randint(0, V, (2, 5))
    with pytest.raises(TypeError, match="input_ids"):
        model.encode(ids.float())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.encode(ids + V)
    with pytest.raises(ValueError, match="max_position=32"):
        model.encode(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="type_vocab_size=0"):
        model.encode(ids, token_type_ids=torch.zeros_like(ids))
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        model.encode(ids, torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="attention_mask"):
        model.encode(ids, torch.ones(2, 4))
    with pytest.raises(ValueError, match="no MLM head"):
        model(ids, labels=ids)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        model(ids, labels=torch.tensor([0, 2]))


def test_attention_dropout_is_its_own_knob():
    """None follows ``dropout`` (BERT's recipe); 0 turns off only the dropout on attention
    weights: in training the attention is then deterministic while the residual dropout is not."""
    from selfattn.layers import MultiHeadAttention

    def rates(model):
        attn = [m.dropout for m in model.modules() if isinstance(m, MultiHeadAttention)]
        other = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        return set(attn), set(other)

    assert rates(tiny(dropout=0.1)) == ({0.1}, {0.1})
    assert rates(tiny(dropout=0.1, attn_dropout=0.0)) == ({0.0}, {0.1})
    assert rates(tiny(dropout=0.0, attn_dropout=0.2)) == ({0.2}, {0.0})
    model = tiny(dropout=0.0, attn_dropout=0.0).train()
    ids = torch.randint(0, V, (2, 7))
    assert torch.equal(model.encode(ids), model.encode(ids))  # no randomness left anywhere
