"""The encoder–decoder model and its decoding: masks, caches, beam search, and a learned task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfattn.config import ConfigError
from selfattn.models import Seq2Seq, Seq2SeqConfig
from selfattn.translate import beam_search, greedy_decode, tokens_to_lists

PAD, BOS, EOS = 0, 1, 2
VOCAB = 13  # 3 specials + 10 symbols


def tiny(**overrides) -> Seq2Seq:
    torch.manual_seed(0)
    cfg = dict(vocab_size=VOCAB, d_model=32, n_head=4, n_encoder_layers=2, n_decoder_layers=2,
               ffn_hidden=64, dropout=0.0, max_len=16, label_smoothing=0.0, attn_backend="math")
    cfg.update(overrides)
    return Seq2Seq(Seq2SeqConfig(**cfg)).eval()


def padded_sources(lengths, seed=0, width=None):
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    src = torch.full((len(lengths), width), PAD)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(3, VOCAB, (n,), generator=g)
    return src


def copy_batch(n, g, lo=3, hi=6):
    """Copy task: target = source; lengths lo..hi with right padding."""
    lengths = torch.randint(lo, hi + 1, (n,), generator=g)
    src = torch.full((n, hi), PAD)
    tgt_in = torch.full((n, hi + 1), PAD)
    labels = torch.full((n, hi + 1), PAD)
    for i, L in enumerate(lengths.tolist()):
        s = torch.randint(3, VOCAB, (L,), generator=g)
        src[i, :L] = s
        tgt_in[i, 0], tgt_in[i, 1:L + 1] = BOS, s
        labels[i, :L], labels[i, L] = s, EOS
    return src, tgt_in, labels


# ---- masks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["math", "torch"])
def test_source_padding_is_invisible(backend):
    model = tiny(attn_backend=backend)
    src = padded_sources([5, 3, 6], width=6)
    mask = src != PAD
    tgt = torch.randint(3, VOCAB, (3, 4))
    before = model(src, tgt, src_mask=mask)
    noisy = src.clone()
    noisy[~mask] = torch.randint(3, VOCAB, (int((~mask).sum()),))  # real-looking ids under the mask
    after = model(noisy, tgt, src_mask=mask)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    # ...and the mask is what hides them: without it the outputs change.
    assert not torch.allclose(model(noisy, tgt), before, atol=1e-3)


def test_extra_padding_columns_change_nothing():
    model = tiny()
    src = padded_sources([4, 2])
    tgt = torch.randint(3, VOCAB, (2, 5))
    wider = torch.cat([src, torch.full((2, 3), PAD)], dim=1)
    torch.testing.assert_close(model(wider, tgt), model(src, tgt), atol=1e-5, rtol=1e-5)


def test_decoder_is_causal():
    model = tiny()
    src = padded_sources([5, 5])
    tgt = torch.randint(3, VOCAB, (2, 6))
    changed = tgt.clone()
    changed[:, 4] = (changed[:, 4] - 3 + 1) % (VOCAB - 3) + 3
    a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


# ---- caches --------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [{}, {"position": "learned"}, {"prenorm": False},
                                       {"share_embeddings": True, "tie_output": False},
                                       {"attn_backend": "torch"}])
def test_cached_decoding_equals_full_recomputation(overrides):
    model = tiny(**overrides)
    src = padded_sources([6, 2, 4])
    mask = src != PAD
    tgt = torch.cat([torch.full((3, 1), BOS), torch.randint(3, VOCAB, (3, 6))], dim=1)
    full = model(src, tgt, src_mask=mask)  # (B, T, V) teacher forced
    memory = model.encode(src, mask)
    cache = model.make_cache(3, 8)
    steps = torch.stack([model.decode_step(tgt[:, t], memory, mask, cache) for t in range(tgt.shape[1])], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
    assert cache.length == tgt.shape[1]


def test_encoder_and_cross_projections_run_once_per_sequence(monkeypatch):
    model = tiny()
    calls = {"encode": 0, "cross_kv": 0}
    real_encode = model.encode

    def counting_encode(*args, **kwargs):
        calls["encode"] += 1
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(model, "encode", counting_encode)
    for block in model.decoder:
        block.cross_attn.kv_proj.register_forward_hook(lambda *_: calls.__setitem__("cross_kv", calls["cross_kv"] + 1))
    src = padded_sources([5, 3])
    for decode in (lambda: greedy_decode(model, src, max_len=7),
                   lambda: beam_search(model, src, beam_size=3, max_len=7)):
        calls.update(encode=0, cross_kv=0)
        decode()
        assert calls["encode"] == 1
        assert calls["cross_kv"] == len(model.decoder)  # once per layer, not once per step


# ---- loss ----------------------------------------------------------------------------------
def test_label_smoothed_loss_ignores_padding():
    model = tiny(label_smoothing=0.1)
    g = torch.Generator().manual_seed(3)
    src, tgt_in, labels = copy_batch(4, g)
    logits, loss = model(src, tgt_in, labels=labels)
    keep = labels != PAD
    expected = F.cross_entropy(logits[keep], labels[keep], label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_config_and_input_errors():
    with pytest.raises(ConfigError, match="share_embeddings"):
        Seq2SeqConfig(src_vocab_size=10, tgt_vocab_size=12, share_embeddings=True)
    with pytest.raises(ConfigError, match="position"):
        Seq2SeqConfig(position="rope")
    with pytest.raises(ConfigError, match="d_model"):
        Seq2SeqConfig(d_model=30, n_head=4)
    with pytest.raises(ConfigError, match="eos_id"):
        Seq2SeqConfig(vocab_size=10, eos_id=10)
    model = tiny()
    with pytest.raises(ValueError, match=r"src_ids: token id 99"):
        model(torch.tensor([[3, 99]]), torch.tensor([[BOS]]))
    with pytest.raises(TypeError, match="tgt_ids"):
        model.decode(torch.tensor([[1.0]]), torch.zeros(1, 2, 32))
    with pytest.raises(ValueError, match="src_mask"):
        model(torch.tensor([[3, 4]]), torch.tensor([[BOS]]), src_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, torch.tensor([[3, 4]]), beam_size=0)
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(model, torch.tensor([[3, 4]]), max_len=0)


def test_tied_and_shared_embeddings():
    m = tiny(share_embeddings=True, tie_output=True)
    assert m.src_emb is m.tgt_emb and m.lm_head.weight is m.tgt_emb.weight
    m = tiny(src_vocab_size=20, tgt_vocab_size=13, tie_output=False)
    assert m.src_emb.num_embeddings == 20 and m.lm_head.weight is not m.tgt_emb.weight


# ---- decoding ------------------------------------------------------------------------------
def test_beam_one_equals_greedy_untrained():
    model = tiny()
    src = padded_sources([6, 3, 5, 1], seed=4)
    torch.testing.assert_close(beam_search(model, src, beam_size=1, max_len=9, length_penalty=1.0),
                               greedy_decode(model, src, max_len=9))


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained to copy 3–6 symbols (padded batches); a few hundred AdamW steps."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = tiny(d_model=32, ffn_hidden=64, attn_backend="auto")
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        g = torch.Generator().manual_seed(0)
        for _ in range(350):
            src, tgt_in, labels = copy_batch(64, g)
            _, loss = model(src, tgt_in, labels=labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        yield model
    finally:
        torch.set_num_threads(threads)


def test_learns_to_copy_with_greedy_decoding(trained):
    src, _, labels = copy_batch(200, torch.Generator().manual_seed(123))
    out = tokens_to_lists(greedy_decode(trained, src, max_len=8), EOS, PAD)
    ref = tokens_to_lists(labels, EOS, PAD)
    accuracy = sum(a == b for a, b in zip(out, ref)) / len(ref)
    assert accuracy >= 0.95, accuracy
    beam = tokens_to_lists(beam_search(trained, src, beam_size=3, max_len=8), EOS, PAD)
    assert sum(a == b for a, b in zip(beam, ref)) / len(ref) >= 0.95


def test_beam_one_equals_greedy_trained(trained):
    src, _, _ = copy_batch(32, torch.Generator().manual_seed(5))
    torch.testing.assert_close(beam_search(trained, src, beam_size=1, max_len=8), greedy_decode(trained, src, max_len=8))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_batched_beam_equals_per_example(trained, length_penalty):
    src, _, _ = copy_batch(6, torch.Generator().manual_seed(9))
    src[0] = torch.tensor([3, 4, 5, PAD, PAD, PAD])
    tokens, scores = beam_search(trained, src, beam_size=4, max_len=8, length_penalty=length_penalty,
                                 return_scores=True)
    for i in range(src.shape[0]):
        one = src[i:i + 1, : int((src[i] != PAD).sum())]  # unpadded, alone
        t1, s1 = beam_search(trained, one, beam_size=4, max_len=8, length_penalty=length_penalty, return_scores=True)
        assert tokens_to_lists(tokens[i:i + 1], EOS, PAD) == tokens_to_lists(t1, EOS, PAD)
        torch.testing.assert_close(scores[i:i + 1], s1, atol=1e-4, rtol=1e-4)


def test_beam_scores_are_normalised_log_probabilities(trained):
    """The returned score is log p(hypothesis | source) / lp(len), recomputed by teacher forcing."""
    src, _, _ = copy_batch(4, torch.Generator().manual_seed(11))
    tokens, scores = beam_search(trained, src, beam_size=3, max_len=8, length_penalty=0.6, return_scores=True)
    for i, hyp in enumerate(tokens_to_lists(tokens, EOS, PAD)):
        seq = torch.tensor([hyp + [EOS]])
        tgt_in = torch.cat([torch.tensor([[BOS]]), seq[:, :-1]], dim=1)
        logp = F.log_softmax(trained(src[i:i + 1], tgt_in).float(), dim=-1)
        total = logp.gather(-1, seq[..., None]).sum()
        lp = ((5 + seq.shape[1]) / 6) ** 0.6
        torch.testing.assert_close(scores[i], total / lp, atol=1e-4, rtol=1e-4)
