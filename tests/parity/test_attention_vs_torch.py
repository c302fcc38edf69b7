"""Every backend (and auto) against torch's own F.scaled_dot_product_attention: values and gradients.

torch's rules are the reference here: a mask and is_causal are not combined (torch refuses), and
causal is top-left, so bottom-right alignment is only drawn with Lq == Lk (where they agree).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from selfattn.attention import BACKENDS, scaled_dot_product_attention

TOL = {torch.float32: (2e-5, 5e-5), torch.bfloat16: (3e-2, 6e-2)}


def assert_near(got, ref, tol, what):
    assert got.shape == ref.shape and got.dtype == ref.dtype, what
    assert torch.isfinite(got).all(), f"{what}: non-finite"
    err = (got.double() - ref.double()).abs().max().item()
    bound = tol * max(1.0, ref.double().abs().max().item())
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


@st.composite
def torch_cases(draw):
    batch = draw(st.integers(1, 2))
    hkv, rep = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    lq = draw(st.integers(1, 24))
    causal = draw(st.booleans())
    lk = lq if causal and draw(st.booleans()) else draw(st.integers(1, 24))
    align = "bottom_right" if causal and lq == lk and draw(st.booleans()) else "top_left"
    d, dv = draw(st.sampled_from([2, 8, 16])), draw(st.sampled_from([2, 8]))
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    q = torch.randn(batch, hkv * rep, lq, d, generator=g).to(dtype)
    k = torch.randn(batch, hkv, lk, d, generator=g).to(dtype)
    v = torch.randn(batch, hkv, lk, dv, generator=g).to(dtype)
    mask = None
    if not causal:
        kind = draw(st.sampled_from(["none", "bool", "padding", "float"]))
        if kind == "bool":
            mask = torch.rand(lq, lk, generator=g) > 0.3
        elif kind == "padding":
            mask = torch.rand(batch, 1, 1, lk, generator=g) > 0.3
        elif kind == "float":  # torch wants a float mask in the query's dtype
            mask = torch.randn(batch, hkv * rep, lq, lk, generator=g).to(dtype)
    scale = draw(st.one_of(st.none(), st.floats(0.05, 1.0)))
    return dict(q=q, k=k, v=v, mask=mask, causal=causal, align=align, scale=scale, gqa=rep > 1)


def run(fn, c):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (c["q"], c["k"], c["v"]))
    out = fn(q, k, v)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out.float() * w).sum().backward()
    return out, q.grad, k.grad, v.grad


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@settings(max_examples=25, deadline=None)
@given(c=torch_cases())
def test_backend_matches_torch_sdpa(backend, c):
    ref = run(lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, attn_mask=c["mask"], is_causal=c["causal"], scale=c["scale"], enable_gqa=c["gqa"]), c)
    got = run(lambda q, k, v: scaled_dot_product_attention(
        q, k, v, attn_mask=c["mask"], is_causal=c["causal"], scale=c["scale"], enable_gqa=c["gqa"],
        backend=backend, causal_align=c["align"]), c)
    # torch's bf16 kernel rounds differently from our fp32-softmax paths: compare both to the
    # dtype's tolerance
    t_out, t_grad = TOL[c["q"].dtype]
    assert_near(got[0], ref[0], t_out, "output")
    for name, a, b in zip(("dq", "dk", "dv"), got[1:], ref[1:]):
        assert_near(a, b, t_grad, name)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_mask_combined_with_causal_equals_torch_with_the_combined_mask(backend):
    # torch refuses attn_mask with is_causal=True; we accept it and AND the two
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 8, generator=g) for _ in range(3))
    pad = torch.tensor([[True] * 6, [False, True, True, True, True, True]]).view(2, 1, 1, 6)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=pad & causal)
    out = scaled_dot_product_attention(q, k, v, attn_mask=pad, is_causal=True, backend=backend)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_decoded_token_with_grouped_heads(backend, dtype):
    """The decoding call: one new query (bottom-right causal, so it sees every cached key), 9
    query heads over 3 key/value heads (SmolLM2's layout). Same as torch without a mask."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 9, 1, 64, generator=g).to(dtype)
    k, v = (torch.randn(2, 3, 37, 64, generator=g).to(dtype) for _ in range(2))
    got = scaled_dot_product_attention(q, k, v, is_causal=True, causal_align="bottom_right", enable_gqa=True,
                                       backend=backend)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), enable_gqa=True).to(dtype)
    assert_near(got, ref, TOL[dtype][0], f"{backend} {dtype}")
