"""Every backend against the math oracle (values and gradients), invariants, and fp64 gradcheck.

Hypothesis draws shapes (batch dims, GQA head groups, Lq != Lk), masks (bool/float, full and
broadcast, padding-style), causal flags with both alignments, scales, dtypes and block sizes small
enough that the chunked/blocked loops run over several blocks.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selfattn.attention import BACKENDS, make_request, scaled_dot_product_attention
from selfattn.attention.blocked import blocked_attention
from selfattn.attention.chunked import chunked_attention
from selfattn.attention.math import math_attention, scores_and_weights

SETTINGS = settings(max_examples=30, deadline=None)
# max |error| allowed, relative to max(1, max |reference|): outputs, gradients
# bf16: fast backends keep their matmuls in bf16 (8 bits of mantissa) while math computes in fp32,
# so gradients summed over many keys drift by several bf16 ulps (one ulp at 1.0 is 0.0078): a
# fresh CI draw reached 0.065, hence 0.1 (~13 ulps) for gradients.
TOL = {torch.float32: (2e-5, 5e-5), torch.bfloat16: (3e-2, 1e-1)}


def assert_near(got: torch.Tensor, ref: torch.Tensor, tol: float, what: str) -> None:
    assert got.shape == ref.shape, what
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    err = (got.double() - ref.double()).abs().max().item() if got.numel() else 0.0
    bound = tol * max(1.0, ref.double().abs().max().item() if ref.numel() else 0.0)
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


@st.composite
def cases(draw, dtypes=(torch.float32, torch.bfloat16)):
    batch = tuple(draw(st.lists(st.integers(1, 2), max_size=2)))
    hkv, rep = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    hq = hkv * rep
    lq, lk = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    d, dv = draw(st.sampled_from([1, 4, 8, 16])), draw(st.sampled_from([1, 3, 8]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    dtype = draw(st.sampled_from(dtypes))
    q = torch.randn(*batch, hq, lq, d, generator=g).to(dtype)
    k = torch.randn(*batch, hkv, lk, d, generator=g).to(dtype)
    v = torch.randn(*batch, hkv, lk, dv, generator=g).to(dtype)
    kind = draw(st.sampled_from(["none", "bool_full", "bool_padding", "bool_2d", "float_full", "float_heads"]))
    ones = (1,) * len(batch)
    if kind == "none":
        mask = None
    elif kind == "bool_full":
        mask = torch.rand(*batch, hq, lq, lk, generator=g) > 0.3
    elif kind == "bool_padding":  # (B, 1, 1, Lk): Hugging Face style key padding
        mask = torch.rand(*batch, 1, 1, lk, generator=g) > 0.3
    elif kind == "bool_2d":
        mask = torch.rand(lq, lk, generator=g) > 0.3
    elif kind == "float_full":
        mask = torch.randn(*batch, 1, lq, lk, generator=g)
    else:
        mask = torch.randn(*ones, hq, 1, lk, generator=g)
        mask[..., 0] = float("-inf")
    causal = draw(st.booleans())
    align = draw(st.sampled_from(["top_left", "bottom_right"]))
    scale = draw(st.one_of(st.none(), st.floats(0.05, 1.0)))
    gqa = rep > 1 or draw(st.booleans())
    blocks = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    return dict(q=q, k=k, v=v, mask=mask, causal=causal, align=align, scale=scale, gqa=gqa, blocks=blocks)


def run_backend(name: str, c: dict, q, k, v) -> torch.Tensor:
    req = make_request(q, k, v, c["mask"], 0.0, c["causal"], c["scale"], c["gqa"], c["align"])
    if name == "chunked":
        return chunked_attention(req, block_q=c["blocks"][0], block_k=c["blocks"][1])
    if name == "blocked":
        return blocked_attention(req, block_q=c["blocks"][0])
    return BACKENDS[name].run(req)


def values_and_grads(name: str, c: dict):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (c["q"], c["k"], c["v"]))
    out = run_backend(name, c, q, k, v)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    (out.float() * w).sum().backward()
    return out, q.grad, k.grad, v.grad


@pytest.mark.parametrize("backend", [n for n in BACKENDS if n != "math"])
@SETTINGS
@given(c=cases())
def test_backend_matches_math_values_and_gradients(backend, c):
    ref = values_and_grads("math", c)
    got = values_and_grads(backend, c)
    t_out, t_grad = TOL[c["q"].dtype]
    assert_near(got[0], ref[0], t_out, "output")
    for name, a, b in zip(("dq", "dk", "dv"), got[1:], ref[1:]):
        assert_near(a, b, t_grad, name)


# ----------------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("backend", list(BACKENDS))
@settings(max_examples=15, deadline=None)
@given(length=st.integers(2, 20), seed=st.integers(0, 2**16), perm_seed=st.integers(0, 2**16))
def test_self_attention_without_positions_is_permutation_equivariant(backend, length, seed, perm_seed):
    x = torch.randn(2, 3, length, 8, generator=torch.Generator().manual_seed(seed))
    perm = torch.randperm(length, generator=torch.Generator().manual_seed(perm_seed))
    out = scaled_dot_product_attention(x, x, x, backend=backend)
    out_perm = scaled_dot_product_attention(x[:, :, perm], x[:, :, perm], x[:, :, perm], backend=backend)
    torch.testing.assert_close(out_perm, out[:, :, perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", list(BACKENDS))
@settings(max_examples=15, deadline=None)
@given(length=st.integers(2, 24), seed=st.integers(0, 2**16), data=st.data())
def test_causal_output_never_depends_on_later_tokens(backend, length, seed, data):
    t = data.draw(st.integers(0, length - 2))
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 2, length, 8, generator=g) for _ in range(3))
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t + 1:] = torch.randn(x[:, :, t + 1:].shape, generator=g) * 10
    a = scaled_dot_product_attention(q, k, v, is_causal=True, backend=backend)
    b = scaled_dot_product_attention(q2, k2, v2, is_causal=True, backend=backend)
    torch.testing.assert_close(a[:, :, : t + 1], b[:, :, : t + 1], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(a[:, :, t + 1:], b[:, :, t + 1:])  # the change did reach later outputs


def test_scaling_by_inverse_sqrt_d_gives_unit_variance_scores():
    # unit-variance q and k of width d: q.k has variance d; times 1/sqrt(d) it has variance 1
    g = torch.Generator().manual_seed(0)
    for d in (16, 64, 256):
        q = torch.randn(4, 1, 200, d, generator=g)
        k = torch.randn(4, 1, 200, d, generator=g)
        raw, _ = scores_and_weights(make_request(q, k, k, scale=1.0))
        scaled, _ = scores_and_weights(make_request(q, k, k))  # default scale 1/sqrt(d)
        # 160k scores: the variance estimate is within a few percent; allow 10%
        assert abs(raw.var().item() / d - 1) < 0.1, (d, raw.var().item())
        assert abs(scaled.var().item() - 1) < 0.1, (d, scaled.var().item())
        assert scaled.var().item() == pytest.approx(raw.var().item() / d, rel=1e-5)


# ------------------------------------------------------------------------------------- gradcheck
GRADCHECK_CASES = {
    "plain": dict(),
    "causal_top_left_lq_gt_lk": dict(lq=6, lk=4, is_causal=True),
    "causal_bottom_right": dict(lq=3, lk=6, is_causal=True, causal_align="bottom_right"),
    "bool_mask_with_dead_row": dict(mask="bool"),
    "float_mask_and_causal": dict(mask="float", is_causal=True),
    "gqa_and_scale": dict(hq=4, hkv=2, enable_gqa=True, scale=0.3),
}


@pytest.mark.parametrize("backend", ["math", "chunked", "blocked"])
@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck_float64(backend, case):
    spec = dict(GRADCHECK_CASES[case])
    lq, lk = spec.pop("lq", 5), spec.pop("lk", 5)
    hq, hkv = spec.pop("hq", 2), spec.pop("hkv", 2)
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, hq, lq, 3, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, hkv, lk, 3, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, hkv, lk, 2, generator=g, dtype=torch.float64, requires_grad=True)
    kind = spec.pop("mask", None)
    if kind == "bool":
        spec["attn_mask"] = torch.rand(lq, lk, generator=g) > 0.3
        spec["attn_mask"][1] = False
    elif kind == "float":
        spec["attn_mask"] = torch.randn(1, 1, lq, lk, generator=g, dtype=torch.float64)

    def f(q, k, v):
        req = make_request(q, k, v, spec.get("attn_mask"), 0.0, spec.get("is_causal", False), spec.get("scale"),
                           spec.get("enable_gqa", False), spec.get("causal_align", "top_left"))
        if backend == "chunked":
            return chunked_attention(req, block_q=2, block_k=2)
        if backend == "blocked":
            return blocked_attention(req, block_q=2)
        return math_attention(req)

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_default_blocks_cover_long_sequences_with_several_key_blocks():
    # lengths beyond the default key block so the online rescaling runs in the registry version
    from selfattn.attention import chunked as chunked_module
    lq = chunked_module.DEFAULT_BLOCK_K + 77
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, lq, 8, generator=g) * 3 for _ in range(3))
    ref = scaled_dot_product_attention(q, k, v, is_causal=True, backend="math")
    out = scaled_dot_product_attention(q, k, v, is_causal=True, backend="chunked")
    assert_near(out, ref, 2e-5, "output")
    assert math.isfinite(out.sum().item())
