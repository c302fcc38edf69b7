"""backend="triton": our fused kernels, run here by Triton's CPU interpreter (tests/conftest.py
sets TRITON_INTERPRET=1). The generic backend tests (parity with torch's
SDPA, hypothesis invariants, dropout) cover it too; these add the cases its tiling and strides
make risky, the precision of its bf16/fp16 tiles, and its memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfattn.attention import explain, make_request, scaled_dot_product_attention
from selfattn.attention.math import math_attention
from selfattn.attention.triton_flash import MAX_HEAD_DIM, triton_attention, triton_unsupported
from selfattn.models import GPT, GPTConfig


def _grads(out_fn, tensors, g):
    for t in tensors:
        t.grad = None
    out = out_fn()
    out.backward(g)
    return out.detach(), [t.grad.clone() for t in tensors]


def _check_against_math(q, k, v, **kw):
    leaves = [q, k, v]
    req = make_request(q, k, v, kw.get("attn_mask"), 0.0, kw.get("is_causal", False), None,
                       kw.get("enable_gqa", False), kw.get("causal_align", "top_left"))
    g = torch.randn(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    out, grads = _grads(lambda: triton_attention(req), leaves, g)
    ref, ref_grads = _grads(lambda: math_attention(req), leaves, g)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _leaf(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype).requires_grad_()


# Lengths around the interpreter's 16-wide tiles, head sizes that are not powers of two, value
# sizes that differ from the key's.
@pytest.mark.parametrize("lq,lk,d,dv", [(1, 1, 1, 1), (15, 16, 12, 20), (17, 33, 16, 8), (40, 7, 32, 32)])
@pytest.mark.parametrize("causal,align", [(False, "top_left"), (True, "top_left"), (True, "bottom_right")])
def test_tiles_edges_and_causal_alignments_match_math(lq, lk, d, dv, causal, align):
    torch.manual_seed(lq * 100 + lk)
    q, k, v = _leaf(2, 2, lq, d), _leaf(2, 2, lk, d), _leaf(2, 2, lk, dv)
    _check_against_math(q, k, v, is_causal=causal, causal_align=align)


def test_grouped_query_heads_with_a_broadcast_float_mask_and_causal():
    torch.manual_seed(1)
    q, k, v = _leaf(2, 6, 19, 16), _leaf(2, 2, 23, 16), _leaf(2, 2, 23, 16)
    mask = torch.randn(2, 1, 19, 23, dtype=torch.float64)  # one mask per batch row, shared by heads
    _check_against_math(q, k, v, attn_mask=mask, is_causal=True, causal_align="bottom_right", enable_gqa=True)


def test_per_head_boolean_mask_with_rows_that_see_nothing():
    torch.manual_seed(2)
    q, k, v = _leaf(1, 3, 18, 8), _leaf(1, 3, 18, 8), _leaf(1, 3, 18, 8)
    mask = torch.rand(3, 18, 18) > 0.5
    mask[1, 4] = False  # head 1, query 4 sees no key: output 0, gradients 0
    _check_against_math(q, k, v, attn_mask=mask)
    out = triton_attention(make_request(q, k, v, mask))
    assert torch.equal(out[0, 1, 4], torch.zeros(8, dtype=torch.float64))


def test_float_mask_near_fp32s_largest_value_does_not_overflow():
    # exp is taken only after the row maximum is subtracted, so +3e38 in a mask is a strong
    # preference, not inf - inf = NaN
    torch.manual_seed(5)
    q, k, v = _leaf(1, 2, 9, 16, dtype=torch.float32), _leaf(1, 2, 20, 16, dtype=torch.float32), \
        _leaf(1, 2, 20, 16, dtype=torch.float32)
    mask = torch.zeros(9, 20)
    mask[:, 3], mask[:, 17] = torch.finfo(torch.float32).max, torch.finfo(torch.float32).max * 0.99
    out = triton_attention(make_request(q, k, v, mask))
    torch.testing.assert_close(out, math_attention(make_request(q, k, v, mask)))
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_any_leading_dims_and_strided_inputs():
    torch.manual_seed(3)
    for shape in [(9, 16), (2, 3, 2, 9, 16)]:  # no head dim; two batch dims
        q, k, v = _leaf(*shape), _leaf(*shape), _leaf(*shape)
        _check_against_math(q, k, v, is_causal=True)
    # (B, L, H, D) storage seen as (B, H, L, D): nothing is copied, the strides go to the kernels
    base = [_leaf(2, 21, 3, 16) for _ in range(3)]
    q, k, v = (t.transpose(1, 2) for t in base)
    req = make_request(q, k, v, None, 0.0, True)
    g = torch.randn(2, 3, 21, 16, dtype=torch.float64)
    out, grads = _grads(lambda: triton_attention(req), base, g)
    ref, ref_grads = _grads(lambda: math_attention(req), base, g)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_is_of_torchs_size(dtype):
    # Weights are rounded to the input dtype before the second product, as in torch's flash kernel:
    # the error against float64 must be of the size torch's own kernel makes, not larger.
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 4, 70, 32).to(dtype) for _ in range(3))
    exact = math_attention(make_request(q.double(), k.double(), v.double(), None, 0.0, True))
    ours = (triton_attention(make_request(q, k, v, None, 0.0, True)).double() - exact).abs().max()
    torchs = (F.scaled_dot_product_attention(q, k, v, is_causal=True).double() - exact).abs().max()
    assert ours <= 2 * torchs + 1e-3, (ours.item(), torchs.item())


def test_backward_saves_no_score_sized_tensor():
    # Flash attention's point: O(L·D) memory. Everything saved for the backward is counted.
    L, D = 256, 16
    q, k, v = (torch.randn(1, 2, L, D, requires_grad=True) for _ in range(3))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        out = scaled_dot_product_attention(q, k, v, is_causal=True, backend="triton")
    qkvo = 4 * q.numel() * q.element_size()
    assert sum(saved) <= qkvo + 2 * L * 8  # q, k, v, the output and one float per query row (2 heads)
    assert sum(saved) < 2 * L * L * 4 / 3  # the (2, L, L) fp32 weights alone would be 3x that
    out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


def test_refusals_name_what_is_allowed(monkeypatch):
    q = torch.randn(1, 2, 4, MAX_HEAD_DIM + 1)
    with pytest.raises(ValueError, match=f"head sizes up to {MAX_HEAD_DIM}"):
        scaled_dot_product_attention(q, q, q, backend="triton")
    q = torch.randn(1, 2, 4, 8)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "runs on CUDA devices" in triton_unsupported(make_request(q, q, q))
    assert "TRITON_INTERPRET=1" in triton_unsupported(make_request(q, q, q))


def test_auto_never_picks_it_and_says_it_is_opt_in():
    q = torch.randn(1, 2, 8, 16)
    text = explain(q, q, q, is_causal=True)
    line = next(x for x in text.splitlines() if x.startswith("passed over: triton:"))
    assert "opt-in" in line


def test_compiles_as_one_graph_with_gradients():
    # The kernels sit behind custom ops with shape functions, so torch.compile neither breaks the
    # graph nor traces into Triton; aot_eager runs the fake shapes and the registered backward.
    torch.manual_seed(6)
    q, k, v = (torch.randn(2, 2, 21, 16, requires_grad=True) for _ in range(3))

    def f(q, k, v):
        return scaled_dot_product_attention(q, k, v, is_causal=True, backend="triton").square().sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    loss = compiled(q, k, v)
    grads = torch.autograd.grad(loss, (q, k, v))
    ref = f(q, k, v)
    ref_grads = torch.autograd.grad(ref, (q, k, v))
    torch.testing.assert_close(loss, ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_a_gpt_trains_the_same_on_it():
    # model-level: the backend is a config value; loss and every gradient match the oracle's
    def loss_and_grads(backend):
        torch.manual_seed(7)
        model = GPT(GPTConfig(vocab_size=32, block_size=24, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                              position="rope", attn_backend=backend)).double()
        x = torch.randint(0, 32, (3, 24), generator=torch.Generator().manual_seed(0))
        loss = model(x, targets=x)[1]
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    loss, grads = loss_and_grads("triton")
    ref_loss, ref_grads = loss_and_grads("math")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-9, atol=1e-10, msg=name)
