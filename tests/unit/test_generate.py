import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from selfattn.generate import filter_logits, generate, left_pad
from selfattn.models import GPT, GPTConfig


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request):
    torch.manual_seed(0)
    extra = {} if request.param == "gpt2" else dict(position="rope", norm="rmsnorm", activation="swiglu",
                                                     bias=False, n_kv_head=2)
    return GPT(GPTConfig.preset("tiny", **extra)).eval()


def _greedy_without_cache(model, ids, n):
    for _ in range(n):
        nxt = model(ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    return ids


def test_kv_cache_decoding_equals_full_recomputation(model):
    ids = torch.randint(0, 256, (2, 7))
    assert torch.equal(generate(model, ids, 20, temperature=0), _greedy_without_cache(model, ids, 20))


def test_batched_generation_equals_one_by_one(model):
    prompts = [[5, 6, 7, 8, 9, 10], [1, 2], [42, 43, 44]]
    ids, mask = left_pad(prompts)
    T = ids.shape[1]
    greedy = generate(model, ids, 15, temperature=0, attention_mask=mask)
    sampled = generate(model, ids, 15, temperature=0.9, top_k=40, top_p=0.9, seed=10, attention_mask=mask)
    for i, p in enumerate(prompts):
        alone = torch.tensor([p])
        assert greedy[i, T:].tolist() == generate(model, alone, 15, temperature=0)[0, len(p):].tolist()
        # row i of a batch samples with seed + i
        assert sampled[i, T:].tolist() == generate(model, alone, 15, temperature=0.9, top_k=40, top_p=0.9,
                                                   seed=10 + i)[0, len(p):].tolist()


def test_seeded_sampling_repeats_and_seeds_differ(model):
    ids = torch.tensor([[1, 2, 3]])
    a = generate(model, ids, 30, temperature=1.0, seed=7)
    assert torch.equal(a, generate(model, ids, 30, temperature=1.0, seed=7))
    assert not torch.equal(a, generate(model, ids, 30, temperature=1.0, seed=8))


def test_eos_stops_every_row(model):
    ids = torch.tensor([[1, 2, 3]])
    first = int(generate(model, ids, 1, temperature=0)[0, -1])
    out = generate(model, ids, 10, temperature=0, eos_id=first)
    assert out.shape[1] == 4


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20), st.floats(0.05, 1.0), st.floats(0.1, 3.0), st.integers(0, 1000))
def test_filter_keeps_top_k_and_nucleus(k, p, temp, seed):
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(seed))
    kept = torch.isfinite(filter_logits(logits, temp, k, None))
    assert (kept.sum(-1) >= 1).all() and (kept.sum(-1) <= k).all()
    top = logits.topk(k, -1).indices
    assert kept.gather(-1, top).all()
    nucleus = torch.isfinite(filter_logits(logits, temp, None, p))
    probs = torch.softmax(logits / temp, -1)
    kept_mass = (probs * nucleus).sum(-1)
    assert (kept_mass >= p - 1e-6).all()
    # minimal: dropping the least likely kept token would fall below p
    least = torch.where(nucleus, probs, torch.full_like(probs, math.inf)).min(-1).values
    assert ((kept_mass - least) < p + 1e-6).all()


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(max_new_tokens=0), "max_new_tokens must be an int >= 1; got 0"),
    (dict(max_new_tokens=-3), "max_new_tokens"),
    (dict(temperature=-1.0), "temperature must be a float >= 0"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_p=0.0), "top_p must be in (0, 1]"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=-1), "top_k must be an int >= 0"),
    (dict(max_new_tokens=80), "exceeds the model's context of 64 tokens"),
])
def test_bad_sampling_arguments(model, kwargs, fragment):
    args = dict(max_new_tokens=5)
    args.update(kwargs)
    with pytest.raises(ValueError) as e:
        generate(model, torch.tensor([[1, 2]]), **args)
    assert fragment in str(e.value)


@pytest.mark.parametrize("ids, err, fragment", [
    (torch.tensor([[1, 300]]), ValueError, "token id 300 is outside the vocabulary [0, 256)"),
    (torch.tensor([[-1, 3]]), ValueError, "token id -1"),
    (torch.tensor([[1.0, 2.0]]), TypeError, "int64/int32"),
    (torch.zeros(1, 0, dtype=torch.long), ValueError, "at least one token"),
    (torch.zeros(0, 3, dtype=torch.long), ValueError, "at least one token"),
])
def test_bad_token_ids(model, ids, err, fragment):
    with pytest.raises(err) as e:
        generate(model, ids, 3, temperature=0)
    assert fragment in str(e.value)


def test_bad_prompts():
    with pytest.raises(ValueError, match="empty"):
        left_pad([])
    with pytest.raises(ValueError, match="empty prompt"):
        left_pad([[1], []])


def test_several_stop_ids_end_each_row_at_its_first_stop(model):
    ids, mask = left_pad([[1, 2, 3], [9, 8]])
    T = ids.shape[1]
    free = generate(model, ids, 12, temperature=0, attention_mask=mask)
    # stop ids: the first token row 0 makes and the fourth token row 1 makes
    a, b = int(free[0, T]), int(free[1, T + 3])
    out = generate(model, ids, 12, temperature=0, attention_mask=mask, eos_id={a, b})
    for row, gen in zip(out, free):
        made = gen[T:].tolist()
        first = next((i for i, t in enumerate(made) if t in (a, b)), None)
        assert first is not None
        assert row[T:T + first + 1].tolist() == made[:first + 1]  # unchanged up to its stop
        assert set(row[T + first:].tolist()) == {made[first]}  # then it repeats its stop id
    assert out.shape[1] == T + max(next(i for i, t in enumerate(g[T:].tolist()) if t in (a, b)) for g in free) + 1
    # a single int and a one-element collection mean the same
    assert torch.equal(generate(model, ids, 12, temperature=0, attention_mask=mask, eos_id=a),
                       generate(model, ids, 12, temperature=0, attention_mask=mask, eos_id=[a]))


@pytest.mark.parametrize("eos", [[], -1, [3, -2], "2", [1.5], True])
def test_bad_stop_ids(model, eos):
    with pytest.raises(ValueError, match="eos_id"):
        generate(model, torch.tensor([[1, 2]]), 3, temperature=0, eos_id=eos)


def test_sliding_window_runs_past_the_context_and_equals_a_restart(model):
    """With sliding_window=True generation continues past block_size (64 here): each time the
    context is full it restarts from the last half, exactly as a fresh call on that half would."""
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    out = generate(model, ids, 100, temperature=0, sliding_window=True)
    assert out.shape == (1, 105)
    # the first 64 tokens are plain generation; token 64 is what a fresh prompt of tokens 32..63 gives
    plain = generate(model, ids, 59, temperature=0)
    assert torch.equal(out[:, :64], plain)
    restart = generate(model, out[:, 32:64], 1, temperature=0)
    assert int(out[0, 64]) == int(restart[0, -1])
    with pytest.raises(ValueError, match="sliding_window"):
        generate(model, ids, 100, temperature=0)
