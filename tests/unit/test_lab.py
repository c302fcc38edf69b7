"""The claims lab's pieces: the invariant the order experiment rests on, parameter matching of
the baselines, and that every task's answer is determined by its input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selfattn.lab import EXPERIMENTS, Settings, get_experiment
from selfattn.lab.baselines import (DilatedCausalCNN, RNNTagger, build_family, cnn_layers_for, count_params,
                                    match_width)
from selfattn.lab.common import accuracy, token_loss
from selfattn.lab.heads import relation_mass, two_heads_split
from selfattn.lab.order import EncoderClassifier, equivariance_error
from selfattn.lab.scaling import unscale
from selfattn.lab.baselines import gpt_tagger
from selfattn.lab.tasks import (BLANK, GO, IGNORE, N_SPECIAL, AssociativeRecallTask, CopyTask, DelayedEchoTask,
                                OrderTask, SelectiveCopyTask, TwoRelationsTask, generator)
from selfattn.models.encoder import Encoder, EncoderConfig


# ---- order: an encoder without positions is permutation-equivariant ---------------------------
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), length=st.integers(2, 10))
def test_encoder_without_positions_is_permutation_equivariant(seed, length):
    torch.manual_seed(seed)
    enc = Encoder(EncoderConfig(vocab_size=11, max_position=16, type_vocab_size=0, n_layer=2, n_head=2, n_embd=8,
                                prenorm=True, position="none", attn_backend="math")).double().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 11, (3, length), generator=g)
    perm = torch.randperm(length, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(enc.encode(x[:, perm]), enc.encode(x)[:, perm], rtol=0, atol=1e-12)


def test_positions_break_equivariance_and_the_probe_tells_them_apart():
    assert equivariance_error("none", seed=0) < 1e-12
    assert equivariance_error("learned", seed=0) > 1e-3
    assert equivariance_error("sinusoidal", seed=0) > 1e-3


def test_a_position_free_encoder_cannot_beat_chance_on_who_bites_whom():
    """Swapping the two nouns gives the same logits, so one of each swapped pair is wrong."""
    task = OrderTask(length=6)
    torch.manual_seed(0)
    model = EncoderClassifier(task.vocab_size, task.n_classes, 16, 1, 2, "none", task.length).double().eval()
    x, y = task.sample(64, generator(0, "t"))
    swapped = x.clone()
    nouns = (x >= N_SPECIAL + 1) & (x < N_SPECIAL + 1 + task.n_nouns)
    idx = nouns.nonzero()[:, 1].view(-1, 2)  # (B, 2) positions of the two nouns
    rows = torch.arange(64)
    swapped[rows, idx[:, 0]], swapped[rows, idx[:, 1]] = x[rows, idx[:, 1]], x[rows, idx[:, 0]]
    with torch.no_grad():
        torch.testing.assert_close(model(swapped), model(x), rtol=0, atol=1e-12)


# ---- baselines: parameters matched within 10% -------------------------------------------------
@pytest.mark.parametrize("family", ["lstm", "gru", "cnn"])
@pytest.mark.parametrize("width,length", [(32, 40), (64, 200)])
def test_baselines_match_the_transformer_parameter_count(family, width, length):
    model, gpt = build_family(family, vocab_size=18, n_classes=18, width=width, n_layer=2, n_head=4, length=length)
    target = count_params(gpt)
    assert abs(count_params(model) - target) <= 0.10 * target
    assert model(torch.randint(0, 18, (2, 7))).shape == (2, 7, 18)


def test_match_width_refuses_an_unreachable_count():
    with pytest.raises(ValueError, match="within 10%"):
        match_width(lambda w: torch.nn.Linear(w, 1000), 10, hi=64)
    with pytest.raises(ValueError, match="target"):
        match_width(lambda w: torch.nn.Linear(w, w), 0)


def test_cnn_receptive_field_covers_the_length_and_is_causal():
    for T in (2, 3, 17, 64, 513):
        L = cnn_layers_for(T)
        assert DilatedCausalCNN(5, 5, 4, L).receptive_field >= T > DilatedCausalCNN(5, 5, 4, max(L - 1, 1)).receptive_field or L == 1
    torch.manual_seed(0)
    for model in (DilatedCausalCNN(9, 9, 8, 3), RNNTagger(9, 9, 8, 1, "gru")):
        x = torch.randint(0, 9, (1, 12))
        x2 = x.clone()
        x2[0, 8] = (x[0, 8] + 1) % 9
        a, b = model(x), model(x2)
        torch.testing.assert_close(a[:, :8], b[:, :8])  # the future never leaks backwards
        assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_unscale_removes_exactly_the_one_over_sqrt_d():
    torch.manual_seed(0)
    model = gpt_tagger(10, 10, 16, 1, 1, block_size=8)
    attn = model.blocks[0].attn
    x = torch.randn(2, 8, 16)
    q = attn.qkv_proj(x)[..., :16]
    unscale(model)
    torch.testing.assert_close(attn.qkv_proj(x)[..., :16], q * 4.0)  # √16


# ---- tasks: the answer is determined by the input ---------------------------------------------
def _draw(task, n=64, seed=3):
    a = task.sample(n, generator(seed, "t"))
    b = task.sample(n, generator(seed, "t"))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # seeded: the same draw again
    return a


@pytest.mark.parametrize("d", [1, 5, 20])
def test_copy(d):
    task = CopyTask(distance=d, k=3)
    x, y = _draw(task)
    assert x.shape == y.shape == (64, task.length) and int(x.max()) < task.vocab_size
    assert (x[:, 3 + d] == GO).all() and (x[:, 3:3 + d] == BLANK).all()
    assert torch.equal(y[:, -3:], x[:, :3]) and (y[:, :-3] == IGNORE).all()


@pytest.mark.parametrize("d", [4, 9, 30])
def test_selective_copy(d):
    task = SelectiveCopyTask(distance=d, k=4)
    x, y = _draw(task)
    for row_x, row_y in zip(x, y):
        span = row_x[:d]
        assert torch.equal(span[span != BLANK], row_y[d:])  # the symbols in order of appearance
        assert row_x[d] == GO and (row_y[:d] == IGNORE).all()


@pytest.mark.parametrize("d", [0, 3, 17])
def test_associative_recall(d):
    task = AssociativeRecallTask(distance=d, n_pairs=3)
    x, y = _draw(task)
    for row_x, row_y in zip(x, y):
        pairs = dict(zip(row_x[0:6:2].tolist(), row_x[1:6:2].tolist()))
        assert len(pairs) == 3  # distinct keys: the answer is unique
        assert row_y[-1] == pairs[int(row_x[-1])] and (row_y[:-1] == IGNORE).all()
        assert (row_x[6:6 + d] == BLANK).all()


def test_order_task_answer_is_the_first_noun():
    task = OrderTask(length=7)
    x, y = _draw(task)
    first_noun, last_noun = N_SPECIAL + 1, N_SPECIAL + task.n_nouns
    for row_x, row_y in zip(x, y):
        nouns = [(i, t) for i, t in enumerate(row_x.tolist()) if first_noun <= t <= last_noun]
        assert len(nouns) == 2 and nouns[1][0] == nouns[0][0] + 2 and row_x[nouns[0][0] + 1] == task.verb
        assert row_y[-1] == nouns[0][1] and nouns[0][1] != nouns[1][1]
    assert len(set(y[:, -1].tolist())) > 1


@pytest.mark.parametrize("length", [3, 8, 50])
def test_delayed_echo_is_defined_at_every_length(length):
    task = DelayedEchoTask(8).at_length(length)
    x, y = _draw(task)
    assert x.shape == (64, length)
    assert torch.equal(y[:, 2:], x[:, :-2]) and (y[:, :2] == IGNORE).all()


def test_two_relations():
    task = TwoRelationsTask(length=10, a=1, b=3, n_symbols=5)
    x, y = _draw(task)
    s = x - N_SPECIAL
    for t in range(3, 10):
        assert torch.equal(y[:, t], 5 * s[:, t - 1] + s[:, t - 3])
    assert (y[:, :3] == IGNORE).all() and int(y.max()) < task.n_classes


def test_tasks_refuse_bad_sizes():
    for make in (lambda: CopyTask(distance=0), lambda: SelectiveCopyTask(distance=2, k=4),
                 lambda: TwoRelationsTask(a=2, b=2), lambda: DelayedEchoTask(length=2, lag=2),
                 lambda: OrderTask(length=2)):
        with pytest.raises(ValueError):
            make()


# ---- the loop and the registry ----------------------------------------------------------------
def test_loss_and_accuracy_read_only_the_targeted_positions():
    task = CopyTask(distance=2, k=2)

    class Oracle(torch.nn.Module):  # predicts every target exactly, from the input alone
        def forward(self, x):
            logits = torch.full((*x.shape, task.vocab_size), -10.0)
            logits[:, -2:].scatter_(2, x[:, :2, None], 10.0)
            return logits

    assert accuracy(Oracle(), task, seed=0, n=32) == 1.0
    x, y = task.sample(4, generator(0, "t"))
    assert float(token_loss(Oracle()(x), y)) < 1e-6


def test_settings_and_registry_refuse_bad_input():
    with pytest.raises(ValueError, match="--seeds"):
        Settings(seeds=0)
    with pytest.raises(ValueError, match="size"):
        Settings(size="huge")
    with pytest.raises(ValueError, match="unknown experiment"):
        get_experiment("attention-is-all")
    assert len(EXPERIMENTS) == 7


# ---- heads: the measure of "two relations on two heads" --------------------------------------
def test_relation_mass_reads_each_heads_weight_on_the_two_offsets():
    T, a, b = 8, 1, 3
    w = torch.zeros(3, T, T)
    for t in range(T):
        w[0, t, max(t - a, 0)] = 1.0  # head 0: previous token
        w[1, t, max(t - b, 0)] = 1.0  # head 1: three back
        w[2, t, : t + 1] = 1.0 / (t + 1)  # head 2: uniform over the causal past
    m = relation_mass(w, a, b)  # (H, 2)
    assert torch.allclose(m[0], torch.tensor([1.0, 0.0])) and torch.allclose(m[1], torch.tensor([0.0, 1.0]))
    expect = torch.tensor([1.0 / (t + 1) for t in range(b, T)]).mean()
    assert torch.allclose(m[2], torch.stack([expect, expect]))
    assert two_heads_split(m.tolist())
    assert not two_heads_split(m[[0, 2]].tolist())  # nobody takes t-b
    assert not two_heads_split([[0.6, 0.4]])  # one head cannot be two heads
    assert not two_heads_split([[0.9, 0.0], [0.9, 0.0]])  # both on the same relation


def test_sinusoidal_taggers_scale_their_token_embeddings():
    """The original transformer multiplies embeddings by sqrt(d) before adding the table; without
    it embeddings at std 0.02 drown in a table of amplitude 1."""
    from selfattn.config import ConfigError
    from selfattn.models.gpt import GPTConfig

    model = gpt_tagger(12, 12, 16, 1, 2, position="sinusoidal", block_size=8)
    assert model.config.sinusoidal_scale_input and model.pos.input_scale == pytest.approx(4.0)
    assert not gpt_tagger(12, 12, 16, 1, 2, position="learned", block_size=8).config.sinusoidal_scale_input
    with pytest.raises(ConfigError, match="sinusoidal_scale_input"):
        GPTConfig(position="rope", sinusoidal_scale_input=True)
