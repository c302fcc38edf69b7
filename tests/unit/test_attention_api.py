"""The attention API: bad input, explain/auto, attention_weights, fully masked rows, dropout, masks in low precision."""

from __future__ import annotations

import math

import pytest
import torch

from selfattn.attention import (
    BACKENDS, attention_weights, causal_mask, explain, make_request, scaled_dot_product_attention,
)
from selfattn.attention.blocked import blocked_attention
from selfattn.attention.chunked import chunked_attention
from selfattn.attention.math import math_attention
from selfattn.attention.triton_flash import triton_attention

ALL = tuple(BACKENDS)
FAST = ("chunked", "blocked", "triton")


def qkv(b=2, h=2, lq=5, lk=6, d=8, dv=8, hkv=None, dtype=torch.float32, grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    hkv = h if hkv is None else hkv
    q = torch.randn(b, h, lq, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, lk, d, generator=g).to(dtype)
    v = torch.randn(b, hkv, lk, dv, generator=g).to(dtype)
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


# ------------------------------------------------------------------------------------- bad input
q4, k4, v4 = qkv()
BAD = [
    # (kwargs overriding a good call, exception types, a word the message must contain)
    (dict(query=torch.randn(8)), ValueError, "query"),
    (dict(key=torch.randn(2, 6, 8)), ValueError, "dims"),
    (dict(key=torch.randn(2, 3, 6, 8), value=torch.randn(2, 3, 6, 8)), ValueError, "heads"),
    (dict(query=torch.randn(2, 3, 5, 8), enable_gqa=True), ValueError, "multiple"),
    (dict(attn_mask=torch.ones(3, 6, dtype=torch.bool)), ValueError, "attn_mask"),
    (dict(attn_mask=torch.ones(5, 7)), ValueError, "attn_mask"),
    (dict(attn_mask=torch.ones(5, 6, dtype=torch.int64)), ValueError, "attn_mask"),
    (dict(attn_mask=[[True]]), TypeError, "attn_mask"),
    (dict(backend="flash"), ValueError, "backend"),
    (dict(key=k4.double()), ValueError, "dtype"),
    (dict(query=q4.to(torch.int32)), ValueError, "query"),
    (dict(value=torch.ones(2, 2, 6, 8, dtype=torch.int64)), ValueError, "value"),
    (dict(query=[1.0]), TypeError, "query"),
    (dict(dropout_p=1.0), ValueError, "dropout_p"),
    (dict(dropout_p=-0.1), ValueError, "dropout_p"),
    (dict(dropout_p="0.1"), ValueError, "dropout_p"),
    (dict(scale=float("nan")), ValueError, "scale"),
    (dict(scale="x"), ValueError, "scale"),
    (dict(causal_align="left"), ValueError, "causal_align"),
    (dict(key=torch.randn(2, 2, 6, 4), value=torch.randn(2, 2, 6, 4)), ValueError, "last dim"),
    (dict(value=torch.randn(2, 2, 7, 8)), ValueError, "key and value"),
    (dict(query=torch.randn(3, 2, 5, 8)), ValueError, "batch"),
]


@pytest.mark.parametrize("override, exc, word", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_is_refused_with_a_message_naming_the_argument(override, exc, word):
    call = dict(query=q4, key=k4, value=v4)
    call.update(override)
    with pytest.raises(exc, match=word):
        scaled_dot_product_attention(**call)


@pytest.mark.parametrize("fn", [lambda r: chunked_attention(r, block_q=0), lambda r: chunked_attention(r, block_k=1.5),
                                lambda r: blocked_attention(r, block_q=-1)])
def test_bad_block_sizes(fn):
    with pytest.raises(ValueError, match="block_"):
        fn(make_request(q4, k4, v4))


def test_explicit_backend_that_cannot_serve_is_refused():
    mask = torch.zeros(5, 6, requires_grad=True)
    for name in FAST:
        with pytest.raises(ValueError, match="requires grad"):
            scaled_dot_product_attention(q4, k4, v4, attn_mask=mask, backend=name)


# ------------------------------------------------------------------------------- explain and auto
@pytest.mark.parametrize("backend", ("auto", *ALL))
def test_explain_names_the_choice_and_every_other_backend(backend):
    text = explain(q4, k4, v4, is_causal=True, backend=backend)
    runs = [line for line in text.splitlines() if line.startswith("runs: ")]
    assert len(runs) == 1
    chosen = runs[0].split()[1].rstrip(":")
    assert chosen in BACKENDS and (backend == "auto" or chosen == backend)
    passed = {line.split()[2].rstrip(":") for line in text.splitlines() if line.startswith("passed over: ")}
    assert passed == set(BACKENDS) - {chosen}


def test_auto_passes_over_backends_that_cannot_serve_and_says_why():
    mask = torch.zeros(5, 6, requires_grad=True)
    text = explain(q4, k4, v4, attn_mask=mask)
    for name in FAST:
        line = next(x for x in text.splitlines() if x.startswith(f"passed over: {name}:"))
        assert "cannot serve" in line and "requires grad" in line
    out = scaled_dot_product_attention(q4, k4, v4, attn_mask=mask)  # auto still works
    ref = math_attention(make_request(q4, k4, v4, mask))
    torch.testing.assert_close(out, ref)


def test_auto_picks_only_supported_backends_over_a_grid():
    from selfattn.attention import _auto_reasons
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        for lq in (1, 64, 300, 1500, 3000):
            for causal in (False, True):
                for grad in (False, True):
                    q = torch.empty(1, 2, lq, 8, dtype=dtype, requires_grad=grad)
                    req = make_request(q, q, q, is_causal=causal)
                    choice, passed = _auto_reasons(req)
                    assert BACKENDS[choice].unsupported(req) is None
                    assert set(passed) == set(BACKENDS) - {choice}


# ------------------------------------------------------------------------------ attention_weights
@pytest.mark.parametrize("causal, align", [(False, "top_left"), (True, "top_left"), (True, "bottom_right")])
def test_attention_weights_rows_sum_to_one_or_zero_and_equal_maths(causal, align):
    q, k, v = qkv(lq=7, lk=5, h=4, hkv=2)
    keep = torch.rand(2, 1, 7, 5, generator=torch.Generator().manual_seed(1)) > 0.4
    keep[0, 0, 3] = False  # one fully masked row
    w = attention_weights(q, k, attn_mask=keep, is_causal=causal, enable_gqa=True, causal_align=align)
    assert w.shape == (2, 4, 7, 5) and w.dtype == torch.float32
    req = make_request(q, k, v, keep, 0.0, causal, None, True, align)
    _, w_math = math_attention(req, return_weights=True)
    torch.testing.assert_close(w, w_math, rtol=0, atol=0)
    visible = keep.expand(2, 4, 7, 5)
    if causal:
        visible = visible & causal_mask(7, 5, align=align)
    sums = w.sum(-1)
    expected = visible.any(-1).float()
    torch.testing.assert_close(sums, expected, rtol=0, atol=1e-6)
    assert (w[~visible] == 0).all()


# ------------------------------------------------------------------------------- fully masked rows
@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
@pytest.mark.parametrize("kind", ("bool", "float", "causal_bottom_right", "padding_and_causal"))
def test_fully_masked_rows_give_zeros_and_finite_grads(backend, dtype, kind):
    lq, lk = (6, 4) if kind == "causal_bottom_right" else (5, 6)
    q, k, v = qkv(lq=lq, lk=lk, dtype=dtype, grad=True)
    kw: dict = {}
    if kind == "bool":
        mask = torch.ones(lq, lk, dtype=torch.bool)
        mask[2] = False
        kw = dict(attn_mask=mask)
        dead = torch.tensor([False, False, True, False, False])
    elif kind == "float":
        mask = torch.zeros(lq, lk)
        mask[2] = float("-inf")
        kw = dict(attn_mask=mask)
        dead = torch.tensor([False, False, True, False, False])
    elif kind == "causal_bottom_right":  # 6 queries, 4 keys: the first two queries see nothing
        kw = dict(is_causal=True, causal_align="bottom_right")
        dead = torch.tensor([True, True, False, False, False, False])
    else:  # keys 0 and 1 are padding; causal query 0 and 1 then see nothing
        pad = torch.tensor([False, False, True, True, True, True]).view(1, 1, 1, lk)
        kw = dict(attn_mask=pad, is_causal=True)
        dead = torch.tensor([True, True, False, False, False])
    out = scaled_dot_product_attention(q, k, v, backend=backend, **kw)
    assert torch.isfinite(out).all()
    assert (out[:, :, dead] == 0).all()
    assert out[:, :, ~dead].abs().sum() > 0
    out.float().pow(2).sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[:, :, dead] == 0).all()


# ---------------------------------------------------------------------------- masks in low precision
@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
def test_huge_float_masks_do_not_overflow_in_low_precision(backend, dtype):
    q, k, v = qkv(dtype=dtype, grad=True)
    mask = torch.zeros(5, 6)
    mask[:, ::2] = torch.finfo(torch.float32).min  # the usual "masked" value of fp32 code
    mask[1] = -1e30
    out = scaled_dot_product_attention(q, k, v, attn_mask=mask, backend=backend)
    assert torch.isfinite(out).all()
    ref = math_attention(make_request(q.float(), k.float(), v.float(), mask))
    torch.testing.assert_close(out.float()[:, :, [0, 2, 3, 4]], ref[:, :, [0, 2, 3, 4]], atol=2e-2, rtol=2e-2)
    out.float().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("backend", ("math", *FAST))
def test_float_mask_is_added_in_fp32_for_bf16_inputs(backend):
    # a bias of about -200 differing by 0.25 between keys: rounding it to bf16 (spacing 1.0 there)
    # would flatten the differences; in fp32 they survive
    q, k, v = qkv(lq=3, lk=8, dtype=torch.bfloat16)
    q = torch.zeros_like(q)  # all scores 0: the weights come from the bias alone
    bias = -200.0 - 0.25 * torch.arange(8.0)
    out = scaled_dot_product_attention(q, k, v, attn_mask=bias.expand(3, 8), backend=backend)
    w = torch.softmax(-0.25 * torch.arange(8.0), 0)
    ref = (w @ v.float()).unsqueeze(2).expand_as(out)  # (B, H, 1, Dv) -> every query
    torch.testing.assert_close(out.float(), ref, atol=1.5e-2, rtol=1e-2)


# ---------------------------------------------------------------------------------- bottom-right
@pytest.mark.parametrize("backend", ALL)
def test_bottom_right_causal_equals_its_explicit_mask(backend):
    q, k, v = qkv(lq=3, lk=7)
    out = scaled_dot_product_attention(q, k, v, is_causal=True, causal_align="bottom_right", backend=backend)
    explicit = causal_mask(3, 7, align="bottom_right")
    assert explicit[-1].all() and explicit[0].sum() == 5  # the last query sees every key
    ref = math_attention(make_request(q, k, v, explicit))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ dropout
@pytest.mark.parametrize("backend", FAST)
def test_dropout_is_reproducible_and_exact_in_backward(backend):
    q, k, v = qkv(b=1, h=2, lq=6, lk=7, d=4, dv=3, dtype=torch.float64, grad=True)
    mask = torch.rand(6, 7, generator=torch.Generator().manual_seed(3)) > 0.3
    run = {"chunked": lambda r: chunked_attention(r, block_q=4, block_k=3),
           "blocked": lambda r: blocked_attention(r, block_q=4),
           "triton": triton_attention}[backend]

    def f(q, k, v):
        torch.manual_seed(123)  # the same dropout pattern on every call
        return run(make_request(q, k, v, mask, 0.3, True))

    torch.testing.assert_close(f(q, k, v), f(q, k, v), rtol=0, atol=0)
    assert not torch.equal(f(q, k, v), run(make_request(q, k, v, mask, 0.0, True)))
    assert torch.autograd.gradcheck(f, (q, k, v))


@pytest.mark.parametrize("backend", FAST)
def test_dropout_is_unbiased(backend):
    torch.manual_seed(0)
    q, k, v = qkv(b=1, h=1, lq=4, lk=64, d=8, dv=4)
    ref = scaled_dot_product_attention(q, k, v, backend="math")
    q_many, k_many, v_many = (t.expand(400, *t.shape[1:]).contiguous() for t in (q, k, v))
    outs = scaled_dot_product_attention(q_many, k_many, v_many, dropout_p=0.5, backend=backend)
    assert not torch.allclose(outs[0], outs[1])
    # each output is a sum of 64 weighted values kept with prob 1/2 and doubled: its std is well
    # under 0.5, so the mean of 400 draws is within 0.1 of the expectation with margin to spare
    torch.testing.assert_close(outs.mean(0, keepdim=True), ref, atol=0.1, rtol=0)


def test_fp16_and_fp64_inputs_are_served():
    for dtype in (torch.float16, torch.float64):
        q, k, v = qkv(dtype=dtype)
        ref = math_attention(make_request(q, k, v, None, 0.0, True))
        for name in FAST:
            out = scaled_dot_product_attention(q, k, v, is_causal=True, backend=name)
            assert out.dtype == dtype
            tol = 1e-3 if dtype == torch.float16 else 1e-12
            torch.testing.assert_close(out, ref, atol=tol, rtol=tol)


def test_scale_default_is_inverse_sqrt_head_size():
    q, k, v = qkv(d=16)
    for name in ALL:
        a = scaled_dot_product_attention(q, k, v, backend=name)
        b = scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(16), backend=name)
        torch.testing.assert_close(a, b)


def test_auto_rule_follows_the_measured_table():
    """The auto rule is the benchmark's table written down: bf16 training at <= 128 tokens and bf16
    unmasked inference at 256..1024 go to blocked; fp32, long training and dropout go to torch."""
    from selfattn.attention import _auto_reasons

    def choice(T, dtype, grad, causal=False, dropout=0.0):
        q, k, v = (torch.randn(2, 2, T, 8, dtype=dtype, requires_grad=grad) for _ in range(3))
        return _auto_reasons(make_request(q, k, v, None, dropout, causal))[0]

    assert choice(128, torch.bfloat16, grad=True, causal=True) == "blocked"
    assert choice(256, torch.bfloat16, grad=True) == "torch"
    assert choice(128, torch.float32, grad=True) == "torch"
    assert choice(128, torch.bfloat16, grad=True, dropout=0.1) == "torch"
    assert choice(512, torch.bfloat16, grad=False) == "blocked"
    assert choice(512, torch.bfloat16, grad=False, causal=True) == "torch"
    assert choice(64, torch.bfloat16, grad=False) == "torch"
