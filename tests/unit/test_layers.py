"""The layers and the GPT built from them: invariants, formulas and refusals."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfattn.block import BlockSpec, TransformerBlock
from selfattn.layers import FeedForward, MultiHeadAttention, RMSNorm
from selfattn.models import GPT, GPTConfig
from selfattn.positional import POSITION_KINDS

VOCAB = 50


def tiny_gpt(position="learned", style="gpt2", n_kv_head=None, seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    if style == "llama":
        kw = dict(activation="swiglu", norm="rmsnorm", bias=False, tie_embeddings=False, **kw)
    cfg = GPTConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=32,
                    position=position, init_std=0.2, **kw)
    return GPT(cfg).eval()


MODEL_CASES = [(p, "gpt2", None) for p in POSITION_KINDS] + [(p, "llama", 2) for p in POSITION_KINDS] + [
    ("rope", "llama", 1), ("alibi", "gpt2", 2)]
MODEL_IDS = [f"{p}-{s}-kv{k}" for p, s, k in MODEL_CASES]


def ids_of(*shape, seed=1):
    return torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


# ---- invariants of the whole model -----------------------------------------------------------

@pytest.mark.parametrize("position,style,n_kv", MODEL_CASES, ids=MODEL_IDS)
def test_causal_future_token_never_changes_the_past(position, style, n_kv):
    model = tiny_gpt(position, style, n_kv)
    T = 12
    ids = ids_of(1, T)
    # row t of the batch changes token t+1 only: one forward checks every t
    changed = ids.repeat(T - 1, 1)
    rows = torch.arange(T - 1)
    changed[rows, rows + 1] = (changed[rows, rows + 1] + 1 + rows) % VOCAB
    with torch.no_grad():
        base, out = model(ids)[0], model(changed)
    for t in range(T - 1):
        torch.testing.assert_close(out[t, : t + 1], base[: t + 1], atol=1e-6, rtol=1e-6)
        assert not torch.allclose(out[t, t + 1], base[t + 1])  # the changed token itself matters


@pytest.mark.parametrize("position,style,n_kv", MODEL_CASES, ids=MODEL_IDS)
def test_kv_cache_decoding_equals_full_forward(position, style, n_kv):
    model = tiny_gpt(position, style, n_kv)
    ids = ids_of(2, 14)
    prefill = 5
    with torch.no_grad():
        full = model(ids)
        cache = model.make_cache(2)
        steps = [model(ids[:, :prefill], cache=cache)]
        for t in range(prefill, ids.shape[1]):
            steps.append(model(ids[:, t: t + 1], cache=cache))  # one token at a time
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == ids.shape[1]


@pytest.mark.parametrize("position,style,n_kv", MODEL_CASES, ids=MODEL_IDS)
def test_left_padded_batch_equals_each_sequence_alone(position, style, n_kv):
    model = tiny_gpt(position, style, n_kv)
    lengths = [7, 4, 1]
    T = max(lengths)
    seqs = [ids_of(1, n, seed=10 + n)[0] for n in lengths]
    batch = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for r, s in enumerate(seqs):
        batch[r, T - len(s):] = s
        mask[r, T - len(s):] = 1
    new = ids_of(len(seqs), 3, seed=99)  # tokens decoded after the prompt
    with torch.no_grad():
        padded = model(batch, attention_mask=mask)
        cache = model.make_cache(len(seqs))
        model(batch, attention_mask=mask, cache=cache)
        decoded = torch.cat([model(new[:, i: i + 1], cache=cache) for i in range(new.shape[1])], dim=1)
        for r, s in enumerate(seqs):
            alone = model(torch.cat([s, new[r]])[None])  # (1, n + 3, V)
            torch.testing.assert_close(padded[r, T - len(s):], alone[0, : len(s)], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(decoded[r], alone[0, len(s):], atol=1e-5, rtol=1e-5)


def test_rope_model_moves_between_dtypes():
    """Regression: RotaryPositions once defined ``_apply``, shadowing nn.Module's, so .to() failed."""
    model = tiny_gpt("rope", "llama", 2)
    ids = ids_of(1, 6)
    with torch.no_grad():
        want = model(ids).double()
        got = model.to(torch.float64)(ids)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


# ---- blocks ----------------------------------------------------------------------------------

def test_encoder_stack_without_positions_is_permutation_equivariant():
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(TransformerBlock(BlockSpec(dim=32, n_head=4, dropout=0.0)) for _ in range(2)).eval()
    x = torch.randn(2, 9, 32)
    perm = torch.randperm(9)

    def run(h):
        for b in blocks:
            h = b(h)  # no positions, not causal
        return h

    with torch.no_grad():
        torch.testing.assert_close(run(x[:, perm]), run(x)[:, perm], atol=1e-5, rtol=1e-5)
        # and causal attention is not: the order now matters
        causal = blocks[0](x[:, perm], is_causal=True)
        assert not torch.allclose(causal, blocks[0](x, is_causal=True)[:, perm], atol=1e-3)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_prenorm_and_postnorm_differ_and_postnorm_output_is_normalised(norm):
    torch.manual_seed(0)
    pre = TransformerBlock(BlockSpec(dim=32, n_head=4, norm=norm, prenorm=True)).eval()
    post = TransformerBlock(BlockSpec(dim=32, n_head=4, norm=norm, prenorm=False)).eval()
    post.load_state_dict(pre.state_dict())  # same weights: only the wiring differs
    x = 3 * torch.randn(2, 7, 32) + 1
    with torch.no_grad():
        y_pre, y_post = pre(x), post(x)
    assert not torch.allclose(y_pre, y_post, atol=1e-2)
    # post-norm ends with norm2 (unit gain, zero bias at init): every token is normalised
    if norm == "layernorm":
        torch.testing.assert_close(y_post.mean(-1), torch.zeros(2, 7), atol=1e-5, rtol=0)
        torch.testing.assert_close(y_post.var(-1, unbiased=False), torch.ones(2, 7), atol=1e-3, rtol=0)
    else:
        torch.testing.assert_close(y_post.pow(2).mean(-1), torch.ones(2, 7), atol=1e-3, rtol=0)
    # pre-norm keeps the residual stream: its output is x plus updates, not normalised
    assert y_pre.pow(2).mean() > 2


# ---- layers against their formulas -----------------------------------------------------------

def test_feedforward_swiglu_formula():
    torch.manual_seed(0)
    ff = FeedForward(16, 24, "swiglu", bias=True)
    x = torch.randn(3, 5, 16)
    want = ff.down_proj(F.silu(x @ ff.gate_proj.weight.T + ff.gate_proj.bias) * (x @ ff.up_proj.weight.T + ff.up_proj.bias))
    torch.testing.assert_close(ff(x), want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu"])
def test_feedforward_two_layer_formula(activation):
    torch.manual_seed(0)
    ff = FeedForward(16, 24, activation)
    x = torch.randn(3, 5, 16)
    h = x @ ff.up_proj.weight.T + ff.up_proj.bias
    if activation == "gelu":
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    elif activation == "gelu_tanh":
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    else:
        h = h.clamp(min=0)
    torch.testing.assert_close(ff(x), h @ ff.down_proj.weight.T + ff.down_proj.bias, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_gelu_tanh_compiled_form_is_torchs_gelu(dtype):
    # under torch.compile gelu_tanh is written as x·sigmoid(2z): the same function and gradient as
    # torch's tanh kernel (the oracle: that kernel in float64), finite far out in both tails.
    # backend="eager" runs the traced graph as is, so this checks the formula, not the compiler.
    from selfattn.layers import gelu_tanh

    torch.manual_seed(0)
    x64 = torch.cat([torch.linspace(-12, 12, 481), torch.tensor([-1e4, -88.0, 88.0, 1e4])]).double()
    x64 = x64.to(dtype).double().requires_grad_()  # the points dtype can hold
    x = x64.detach().to(dtype).requires_grad_()
    y = torch.compile(gelu_tanh, backend="eager", fullgraph=True)(x)
    want = F.gelu(x64, approximate="tanh")
    g = torch.randn_like(want)
    y.backward(g.to(dtype))
    want.backward(g)
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    tol = {torch.float64: dict(atol=1e-12, rtol=1e-12), torch.float32: dict(atol=1e-6, rtol=1e-5)}.get(
        dtype, dict(atol=2e-2, rtol=2e-2))
    torch.testing.assert_close(y.double(), want, **tol)
    torch.testing.assert_close(x.grad.double(), x64.grad, **tol)


def test_feedforward_refuses_unknown_activation():
    with pytest.raises(ValueError, match="activation='tanh'"):
        FeedForward(8, 16, "tanh")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_against_float64_formula(dtype):
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (5 * torch.randn(4, 3, 16)).to(dtype)
    x64, w64 = x.double(), norm.weight.double()
    want = x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-5) * w64
    got = norm(x)
    assert got.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_multihead_attention_against_the_formula(n_kv_head):
    torch.manual_seed(0)
    B, T, D, H = 2, 6, 32, 4
    hd = D // H
    mha = MultiHeadAttention(D, H, n_kv_head).eval()
    x = torch.randn(B, T, D)
    q, k, v = (x @ mha.qkv_proj.weight.T + mha.qkv_proj.bias).split([D, n_kv_head * hd, n_kv_head * hd], -1)
    q = q.view(B, T, H, hd).transpose(1, 2)
    k = k.view(B, T, n_kv_head, hd).transpose(1, 2).repeat_interleave(H // n_kv_head, dim=1)
    v = v.view(B, T, n_kv_head, hd).transpose(1, 2).repeat_interleave(H // n_kv_head, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
    want = y @ mha.out_proj.weight.T + mha.out_proj.bias
    torch.testing.assert_close(mha(x, is_causal=True), want, atol=1e-5, rtol=1e-5)


def test_multihead_attention_validation_errors():
    with pytest.raises(ValueError, match=r"dim=30 must be divisible by n_head=4"):
        MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match=r"n_kv_head=3 must divide n_head=4"):
        MultiHeadAttention(32, 4, 3)
    with pytest.raises(ValueError, match=r"n_kv_head=0"):
        MultiHeadAttention(32, 4, 0)
    cross = MultiHeadAttention(32, 4, cross=True)
    with pytest.raises(ValueError, match="context"):
        cross(torch.randn(1, 3, 32))


def test_gpt_config_refuses_bad_heads():
    with pytest.raises(ValueError, match="n_kv_head=3"):
        GPTConfig(vocab_size=10, n_layer=1, n_head=4, n_embd=32, n_kv_head=3)
    with pytest.raises(ValueError, match="n_embd=30"):
        GPTConfig(vocab_size=10, n_layer=1, n_head=4, n_embd=30)
