"""selfattn.nn.MultiheadAttention against torch.nn.MultiheadAttention (torch 2.13), weights copied.

Every case copies random weights one way or the other through ``state_dict`` and compares
outputs, returned weights and (for some cases) gradients at fp32 tolerance. torch's reference
runs on its usual ("slow") path: gradients are enabled and parameters require grad, which keeps
it off the NestedTensor inference fast path (compared separately below).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch
from torch import nn

import selfattn.nn as sa_nn
from selfattn.attention import BACKENDS
from selfattn.nn import MultiheadAttention

ATOL = 1e-6  # fp32 parity, absolute, as the issue asks
RTOL = 0.0
GRAD_ATOL = 1e-5  # gradients sum over more terms


@dataclass(frozen=True)
class Case:
    embed_dim: int = 8
    num_heads: int = 2
    bias: bool = True
    add_bias_kv: bool = False
    add_zero_attn: bool = False
    kdim: int | None = None
    vdim: int | None = None
    batch_first: bool = False
    batched: bool = True
    n: int = 3
    tgt_len: int = 5
    src_len: int | None = None  # None: self-attention (query is key is value) when dims allow
    key_padding_mask: str | None = None  # None, "bool", "float"
    attn_mask: str | None = None  # None, "2d-bool", "2d-float", "3d-bool", "3d-float", "causal-bool", "causal-float"
    is_causal: bool = False
    need_weights: bool = True
    average_attn_weights: bool = True

    def ctor(self) -> dict:
        return dict(
            embed_dim=self.embed_dim, num_heads=self.num_heads, bias=self.bias, add_bias_kv=self.add_bias_kv,
            add_zero_attn=self.add_zero_attn, kdim=self.kdim, vdim=self.vdim, batch_first=self.batch_first,
        )


BASE = Case()
CASES: dict[str, Case] = {
    "self-seq-first": BASE,
    "self-batch-first": replace(BASE, batch_first=True),
    "unbatched": replace(BASE, batched=False),
    "unbatched-batch-first-ignored": replace(BASE, batched=False, batch_first=True),
    "cross-lengths": replace(BASE, src_len=7),
    "cross-lengths-batch-first": replace(BASE, src_len=4, batch_first=True),
    "no-bias": replace(BASE, bias=False),
    "per-head-weights": replace(BASE, average_attn_weights=False),
    "per-head-weights-unbatched": replace(BASE, average_attn_weights=False, batched=False),
    "no-weights": replace(BASE, need_weights=False),
    "kpm-bool": replace(BASE, key_padding_mask="bool"),
    "kpm-float": replace(BASE, key_padding_mask="float"),
    "kpm-bool-unbatched": replace(BASE, key_padding_mask="bool", batched=False),
    "kpm-bool-no-weights": replace(BASE, key_padding_mask="bool", need_weights=False),
    "mask-2d-bool": replace(BASE, attn_mask="2d-bool"),
    "mask-2d-float": replace(BASE, attn_mask="2d-float"),
    "mask-3d-bool": replace(BASE, attn_mask="3d-bool"),
    "mask-3d-float": replace(BASE, attn_mask="3d-float", batch_first=True),
    "mask-3d-bool-unbatched": replace(BASE, attn_mask="3d-bool", batched=False),
    "mask-3d-float-no-weights": replace(BASE, attn_mask="3d-float", need_weights=False),
    "mask-2d-bool-cross": replace(BASE, attn_mask="2d-bool", src_len=6),
    "both-masks-bool": replace(BASE, attn_mask="3d-bool", key_padding_mask="bool"),
    "both-masks-float": replace(BASE, attn_mask="2d-float", key_padding_mask="float", need_weights=False),
    "both-masks-mixed": replace(BASE, attn_mask="2d-float", key_padding_mask="bool"),
    "causal-hint-no-weights": replace(BASE, attn_mask="causal-bool", is_causal=True, need_weights=False),
    "causal-hint-float-no-weights": replace(BASE, attn_mask="causal-float", is_causal=True, need_weights=False),
    "causal-hint-with-weights": replace(BASE, attn_mask="causal-bool", is_causal=True),
    "causal-hint-with-kpm": replace(BASE, attn_mask="causal-bool", is_causal=True, need_weights=False,
                                    key_padding_mask="bool"),
    "causal-hint-cross": replace(BASE, attn_mask="causal-bool", is_causal=True, need_weights=False, src_len=8),
    "causal-hint-unbatched": replace(BASE, attn_mask="causal-float", is_causal=True, need_weights=False, batched=False),
    "bias-kv": replace(BASE, add_bias_kv=True),
    "bias-kv-masks": replace(BASE, add_bias_kv=True, attn_mask="2d-bool", key_padding_mask="bool"),
    "bias-kv-no-weights": replace(BASE, add_bias_kv=True, key_padding_mask="float", need_weights=False),
    "zero-attn": replace(BASE, add_zero_attn=True),
    "zero-attn-masks": replace(BASE, add_zero_attn=True, attn_mask="3d-float", key_padding_mask="float"),
    "bias-kv-zero-attn": replace(BASE, add_bias_kv=True, add_zero_attn=True, attn_mask="2d-float",
                                 average_attn_weights=False),
    "bias-kv-zero-attn-causal": replace(BASE, add_bias_kv=True, add_zero_attn=True, attn_mask="causal-bool",
                                        is_causal=True, need_weights=False),
    "kdim-vdim": replace(BASE, kdim=5, vdim=3, src_len=6),
    "kdim-vdim-batch-first-masks": replace(BASE, kdim=5, vdim=3, src_len=6, batch_first=True,
                                           attn_mask="2d-bool", key_padding_mask="bool"),
    "kdim-only-unbatched": replace(BASE, kdim=6, batched=False, src_len=4, key_padding_mask="float"),
    "kdim-vdim-no-bias-bias-kv": replace(BASE, kdim=4, vdim=7, bias=False, add_bias_kv=True, need_weights=False),
    "one-head": replace(BASE, num_heads=1, attn_mask="2d-float"),
    "many-heads": replace(BASE, embed_dim=12, num_heads=4, key_padding_mask="bool", average_attn_weights=False),
}

GRAD_CASES = ["self-seq-first", "self-batch-first", "unbatched", "kpm-float", "both-masks-bool", "bias-kv-zero-attn",
              "kdim-vdim-batch-first-masks", "causal-hint-no-weights", "no-weights"]


def _randomise(module: nn.Module, seed: int) -> None:
    """Non-zero values everywhere (torch zero-initialises biases, which would hide bias bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            # ~ torch's init scale (scores of order 1, as in a trained layer), biases small but non-zero
            std = p.shape[-1] ** -0.5 if p.dim() == 2 else 0.2
            p.copy_(torch.randn(p.shape, generator=g) * std)


def make_pair(case: Case, direction: str, backend: str = "auto", seed: int = 0):
    ours = MultiheadAttention(**case.ctor(), backend=backend)
    theirs = nn.MultiheadAttention(**case.ctor())
    src, dst = (theirs, ours) if direction == "torch->ours" else (ours, theirs)
    _randomise(src, seed)
    dst.load_state_dict(src.state_dict())  # strict: same keys and shapes
    return ours.eval(), theirs.eval()


def make_inputs(case: Case, seed: int = 1) -> dict:
    """Inputs and masks in the layout ``case`` asks for, every query row left with a key to see."""
    g = torch.Generator().manual_seed(seed)
    e, h, n, lq = case.embed_dim, case.num_heads, case.n, case.tgt_len
    self_attn = case.src_len is None and case.kdim is None and case.vdim is None
    ls = lq if case.src_len is None else case.src_len
    kd, vd = case.kdim or e, case.vdim or e

    def seq(d: int, length: int) -> torch.Tensor:
        return torch.randn(n, length, d, generator=g)  # (N, T, D) before layout

    q = seq(e, lq)
    k, v = (q, q) if self_attn else (seq(kd, ls), seq(vd, ls))

    def layout(t: torch.Tensor) -> torch.Tensor:
        if not case.batched:
            return t[0]
        return t if case.batch_first else t.transpose(0, 1)

    query = layout(q).clone().requires_grad_()
    if self_attn:
        key = value = query
    else:
        key, value = layout(k).clone().requires_grad_(), layout(v).clone().requires_grad_()

    nb = n if case.batched else 1
    kpm = None
    if case.key_padding_mask is not None:
        pad = torch.rand(nb, ls, generator=g) < 0.4
        pad[:, 0] = False  # key 0 stays visible to every query
        if case.key_padding_mask == "float":
            kpm = torch.where(pad, float("-inf"), -torch.rand(nb, ls, generator=g))
        else:
            kpm = pad
        if not case.batched:
            kpm = kpm[0]
    attn_mask = None
    if case.attn_mask is not None:
        kind = case.attn_mask
        lead = () if kind.startswith("2d") or kind.startswith("causal") else (nb * h,)
        if kind.startswith("causal"):
            blocked = torch.ones(lq, ls, dtype=torch.bool).triu(1)  # top-left causal, torch's is_causal
        else:
            blocked = torch.rand(*lead, lq, ls, generator=g) < 0.4
            blocked[..., 0] = False
        if kind.endswith("float"):
            attn_mask = torch.where(blocked, float("-inf"), torch.randn(blocked.shape, generator=g))
        else:
            attn_mask = blocked
    return dict(query=query, key=key, value=value, key_padding_mask=kpm, attn_mask=attn_mask,
                need_weights=case.need_weights, average_attn_weights=case.average_attn_weights,
                is_causal=case.is_causal)


def _inputs(args: dict) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    for name in ("query", "key", "value"):
        if not any(args[name] is t for t in seen):
            seen.append(args[name])
    return seen


def _close(a, b, atol=ATOL, what=""):
    torch.testing.assert_close(a, b, atol=atol, rtol=RTOL, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("direction", ["torch->ours", "ours->torch"])
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")
def test_outputs_and_weights_match_torch(name, direction):
    case = CASES[name]
    ours, theirs = make_pair(case, direction)
    args = make_inputs(case)
    out_t, w_t = theirs(**args)
    out_o, w_o = ours(**args)
    assert torch.isfinite(out_t).all(), "test inputs must not produce torch's NaN rows"
    assert out_o.shape == out_t.shape
    _close(out_o, out_t, what="output")
    if case.need_weights:
        assert w_o.shape == w_t.shape and w_o.dtype == w_t.dtype
        _close(w_o, w_t, what="weights")
    else:
        assert w_o is None and w_t is None


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("name", ["self-batch-first", "cross-lengths", "both-masks-mixed", "bias-kv-zero-attn",
                                  "causal-hint-no-weights", "kdim-vdim-batch-first-masks", "mask-3d-float-no-weights"])
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")
def test_every_backend_matches_torch(name, backend):
    case = CASES[name]
    ours, theirs = make_pair(case, "torch->ours", backend=backend)
    args = make_inputs(case)
    out_t, w_t = theirs(**args)
    out_o, w_o = ours(**args)
    _close(out_o, out_t, what=f"output ({backend})")
    if case.need_weights:
        _close(w_o, w_t, what=f"weights ({backend})")


@pytest.mark.parametrize("name", GRAD_CASES)
def test_gradients_match_torch(name):
    case = CASES[name]
    ours, theirs = make_pair(case, "torch->ours")
    results = []
    for module in (theirs, ours):
        args = make_inputs(case)  # fresh leaves, same values
        out, w = module(**args)
        g = torch.Generator().manual_seed(7)
        loss = (out * torch.randn(out.shape, generator=g)).sum()
        if w is not None:
            loss = loss + (w * torch.randn(w.shape, generator=g)).sum()
        loss.backward()
        grads = {f"input{i}": t.grad for i, t in enumerate(_inputs(args))}
        grads.update({n: p.grad for n, p in module.named_parameters()})
        results.append(grads)
    theirs_g, ours_g = results
    assert theirs_g.keys() == ours_g.keys()
    for key in theirs_g:
        assert ours_g[key] is not None, key
        _close(ours_g[key], theirs_g[key], atol=GRAD_ATOL, what=f"grad {key}")


# ---- parameters, state_dict, initialisation ------------------------------------------------

CTOR_VARIANTS = [
    dict(embed_dim=8, num_heads=2),
    dict(embed_dim=8, num_heads=2, bias=False),
    dict(embed_dim=8, num_heads=4, add_bias_kv=True, add_zero_attn=True),
    dict(embed_dim=8, num_heads=2, kdim=5, vdim=3),
    dict(embed_dim=8, num_heads=2, kdim=5, bias=False, add_bias_kv=True, batch_first=True),
]


@pytest.mark.parametrize("kwargs", CTOR_VARIANTS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_same_parameters_and_initialisation_as_torch(kwargs):
    torch.manual_seed(123)
    theirs = nn.MultiheadAttention(**kwargs)
    torch.manual_seed(123)
    ours = MultiheadAttention(**kwargs)
    sd_t, sd_o = theirs.state_dict(), ours.state_dict()
    assert list(sd_o) == list(sd_t)
    for key in sd_t:
        # same RNG draws in the same order: identical, not merely close
        assert torch.equal(sd_o[key], sd_t[key]), key
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert type(ours.out_proj) is type(theirs.out_proj)
    for attr in ("embed_dim", "kdim", "vdim", "num_heads", "head_dim", "batch_first", "add_zero_attn",
                 "_qkv_same_embed_dim", "dropout"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    # both ways, strict
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())


def test_device_and_dtype_are_honoured():
    m = MultiheadAttention(8, 2, kdim=4, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m.parameters())
    x = torch.randn(3, 2, 8, dtype=torch.float64)
    out, w = m(x, torch.randn(5, 2, 4, dtype=torch.float64), torch.randn(5, 2, 8, dtype=torch.float64))
    assert out.dtype == torch.float64 and w.dtype == torch.float64


# ---- fully masked rows: torch NaN, ours zeros ---------------------------------------------


def _fully_masked_case():
    case = replace(BASE, batch_first=True, n=2, tgt_len=4)
    ours, theirs = make_pair(case, "torch->ours")
    args = make_inputs(case)
    kpm = torch.zeros(2, 4, dtype=torch.bool)
    kpm[1] = True  # every key of batch 1 is padding
    attn_mask = torch.zeros(4, 4, dtype=torch.bool)
    attn_mask[2] = True  # query 2 may see nothing, in every batch
    args.update(key_padding_mask=kpm, attn_mask=attn_mask)
    return ours, theirs, args


def test_fully_masked_rows_torch_nan_ours_zero():
    ours, theirs, args = _fully_masked_case()
    out_t, w_t = theirs(**args)
    # torch's documented-by-bug behaviour this twin fixes (pytorch #41508)
    assert torch.isnan(out_t[1]).all() and torch.isnan(out_t[0, 2]).all()
    assert torch.isnan(w_t[1]).all()
    out_o, w_o = ours(**args)
    assert torch.isfinite(out_o).all() and torch.isfinite(w_o).all()
    assert torch.count_nonzero(w_o[1]) == 0 and torch.count_nonzero(w_o[0, 2]) == 0
    # no attention at all: the output is what out_proj makes of a zero vector
    _close(out_o[1], ours.out_proj.bias.expand(4, -1), what="fully masked output")
    _close(out_o[0, 2], ours.out_proj.bias, what="fully masked row")
    # every other row still matches torch
    _close(out_o[0, [0, 1, 3]], out_t[0, [0, 1, 3]], what="unmasked rows")
    _close(w_o[0, [0, 1, 3]], w_t[0, [0, 1, 3]], what="unmasked weights")
    # and gradients stay finite
    (out_o.sum() + w_o.sum()).backward()
    grads = [args["query"].grad] + [p.grad for p in ours.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_fully_masked_rows_match_torch_sdpa_path_without_weights():
    # With need_weights=False torch routes through its SDPA, which already gives zeros there.
    ours, theirs, args = _fully_masked_case()
    args["need_weights"] = False
    out_t, _ = theirs(**args)
    out_o, _ = ours(**args)
    assert torch.isfinite(out_t).all()
    _close(out_o, out_t, what="output")


# ---- is_causal: torch's hint semantics -----------------------------------------------------


def test_is_causal_without_mask_is_refused_like_torch():
    case = replace(BASE, batch_first=True)
    ours, theirs = make_pair(case, "torch->ours")
    x = make_inputs(case)["query"]
    with pytest.raises(RuntimeError, match="Need attn_mask"):
        theirs(x, x, x, is_causal=True)  # torch's usual path
    with torch.no_grad():  # torch's inference fast path ignores the hint silently
        assert torch.equal(theirs(x, x, x, is_causal=True)[0], theirs(x, x, x)[0])
    with pytest.raises(ValueError, match="is_causal=True .* needs attn_mask"):
        ours(x, x, x, is_causal=True)


@pytest.mark.parametrize("need_weights", [False, True])
def test_a_wrong_causal_hint_behaves_as_in_torch(need_weights):
    # torch trusts the hint (drops the mask, applies causal) only on its SDPA path.
    case = replace(BASE, attn_mask="2d-bool", is_causal=True, need_weights=need_weights)
    ours, theirs = make_pair(case, "torch->ours")
    args = make_inputs(case)
    out_t, _ = theirs(**args)
    out_o, _ = ours(**args)
    _close(out_o, out_t, what="output")
    out_mask_only, _ = ours(**{**args, "is_causal": False})
    if need_weights:
        _close(out_o, out_mask_only, what="hint ignored with weights")
    else:
        assert not torch.allclose(out_o, out_mask_only), "the hint should have replaced the (non-causal) mask"


def test_matches_torch_fast_path():
    case = replace(BASE, batch_first=True, num_heads=2, key_padding_mask="bool")
    ours, theirs = make_pair(case, "torch->ours")
    args = make_inputs(case)
    with torch.no_grad():
        out_t, w_t = theirs(**args)
        out_o, w_o = ours(**args)
    _close(out_o, out_t, what="output vs fast path")
    _close(w_o, w_t, what="weights vs fast path")


# ---- dropout -------------------------------------------------------------------------------


def test_dropout_eval_is_deterministic_and_train_is_not():
    m = MultiheadAttention(8, 2, dropout=0.5, batch_first=True)
    x = torch.randn(2, 6, 8)
    m.eval()
    assert torch.equal(m(x, x, x)[0], m(x, x, x)[0])
    m.train()
    a, b = m(x, x, x, need_weights=False)[0], m(x, x, x, need_weights=False)[0]
    assert a.shape == (2, 6, 8) and not torch.equal(a, b)


def test_dropout_returned_weights_are_inverted_dropout_of_eval_weights():
    p = 0.3
    torch.manual_seed(0)
    m = MultiheadAttention(8, 2, dropout=p, batch_first=True)
    x = torch.randn(32, 16, 8)
    m.eval()
    w_eval = m(x, x, x, average_attn_weights=False)[1]  # (N, H, L, S)
    m.train()
    out, w_train = m(x, x, x, average_attn_weights=False)
    dropped = w_train == 0
    _close(w_train[~dropped], w_eval[~dropped] / (1 - p), what="kept weights scaled by 1/(1-p)")
    # 16384 Bernoulli(p) draws: std of the fraction ~0.0036, allow ~8 sigma
    assert abs(dropped.float().mean().item() - p) < 0.03
    # the output is made from exactly the returned (dropped) weights
    v = torch.nn.functional.linear(x, m.in_proj_weight[16:], m.in_proj_bias[16:]).view(32, 16, 2, 4).transpose(1, 2)
    expected = m.out_proj((w_train @ v).transpose(1, 2).reshape(32, 16, 8))
    _close(out, expected, what="output from returned weights")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_dropout_output_is_unbiased(backend):
    # Inverted dropout keeps the expectation: the mean over many draws approaches the eval output.
    torch.manual_seed(0)
    m = MultiheadAttention(8, 2, dropout=0.4, batch_first=True, backend=backend)
    # n independent draws in one call; Triton's CPU interpreter runs one program per row and head,
    # so it gets fewer (the bound below is in standard errors of the mean, valid for any n)
    n = 500 if backend == "triton" else 4000
    x = torch.randn(1, 6, 8).expand(n, -1, -1).contiguous()
    with torch.no_grad():
        ref = m.eval()(x[:1], x[:1], x[:1], need_weights=False)[0][0]
        draws = m.train()(x, x, x, need_weights=False)[0]  # (n, 6, 8)
    mean, sem = draws.mean(0), draws.std(0) / n ** 0.5
    assert (sem > 0).all()
    assert ((mean - ref).abs() <= 6 * sem + 1e-6).all()


# ---- bad input -----------------------------------------------------------------------------

BAD_CTOR = [
    (dict(embed_dim=10, num_heads=4), r"embed_dim \(10\) must be divisible by num_heads \(4\)"),
    (dict(embed_dim=0, num_heads=1), r"embed_dim must be a positive int; got 0"),
    (dict(embed_dim=8, num_heads=0), r"num_heads must be a positive int; got 0"),
    (dict(embed_dim=8, num_heads=2, dropout=1.0), r"dropout must be a float in \[0, 1\); got 1.0"),
    (dict(embed_dim=8, num_heads=2, kdim=0), r"kdim must be a positive int or None"),
    (dict(embed_dim=8, num_heads=2, backend="flash9"), r"backend='flash9' is not allowed"),
]


@pytest.mark.parametrize("kwargs,message", BAD_CTOR)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiheadAttention(**kwargs)


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


# (name, ctor kwargs, forward kwargs, message). Default module: E=8, H=2, seq-first; L=4, S=6, N=3.
BAD_FORWARD = [
    ("query-1d", {}, dict(query=_x(8), key=_x(8), value=_x(8)), r"query must be 2-D .* got a 1-D"),
    ("query-4d", {}, dict(query=_x(1, 4, 3, 8), key=_x(1, 6, 3, 8), value=_x(1, 6, 3, 8)), r"got a 4-D"),
    ("key-rank", {}, dict(key=_x(6, 8)), r"key must be 3-D like query \(batched\); got shape \(6, 8\)"),
    ("value-rank-unbatched", {}, dict(query=_x(4, 8), key=_x(6, 8), value=_x(6, 1, 8)),
     r"value must be 2-D like query \(unbatched\)"),
    ("query-width", {}, dict(query=_x(4, 3, 7)), r"query must have last dim embed_dim=8; got shape \(4, 3, 7\)"),
    ("key-width", dict(kdim=5), dict(key=_x(6, 3, 8)), r"key must have last dim kdim=5"),
    ("value-width", dict(vdim=3), dict(value=_x(6, 3, 8)), r"value must have last dim vdim=3"),
    ("batch-sizes", {}, dict(key=_x(6, 2, 8), value=_x(6, 2, 8)), r"same batch size .* got \(3, 2, 2\)"),
    ("batch-sizes-batch-first", dict(batch_first=True), dict(query=_x(3, 4, 8), key=_x(2, 6, 8), value=_x(2, 6, 8)),
     r"same batch size \(dim 0, batch_first=True\)"),
    ("kv-lengths", {}, dict(value=_x(5, 3, 8)), r"key and value must have the same sequence length"),
    ("int-query", {}, dict(query=torch.ones(4, 3, 8, dtype=torch.long)), r"query must be a floating-point"),
    ("dtype-mix", {}, dict(key=_x(6, 3, 8, dtype=torch.float64)), r"share one dtype"),
    ("param-dtype", {}, dict(query=_x(4, 3, 8, dtype=torch.float64), key=_x(6, 3, 8, dtype=torch.float64),
                             value=_x(6, 3, 8, dtype=torch.float64)), r"does not match the module's parameters"),
    ("kpm-shape", {}, dict(key_padding_mask=torch.zeros(3, 5, dtype=torch.bool)),
     r"key_padding_mask must have shape \(3, 6\) \(\(N, S\)\); got \(3, 5\)"),
    ("kpm-shape-unbatched", {}, dict(query=_x(4, 8), key=_x(6, 8), value=_x(6, 8),
                                     key_padding_mask=torch.zeros(1, 6, dtype=torch.bool)),
     r"key_padding_mask must have shape \(6,\)"),
    ("kpm-dtype", {}, dict(key_padding_mask=torch.zeros(3, 6, dtype=torch.long)),
     r"key_padding_mask must be bool .* or floating point .* got torch.int64"),
    ("mask-2d-shape", {}, dict(attn_mask=torch.zeros(4, 4, dtype=torch.bool)),
     r"attn_mask must have shape \(4, 6\) \(L, S\) or \(6, 4, 6\) \(N\*num_heads, L, S\); got \(4, 4\)"),
    ("mask-3d-shape", {}, dict(attn_mask=torch.zeros(3, 4, 6)), r"or \(6, 4, 6\) .* got \(3, 4, 6\)"),
    ("mask-4d", {}, dict(attn_mask=torch.zeros(3, 2, 4, 6)), r"attn_mask must have shape .* got \(3, 2, 4, 6\)"),
    ("mask-3d-unbatched", {}, dict(query=_x(4, 8), key=_x(6, 8), value=_x(6, 8), attn_mask=torch.zeros(3, 4, 6)),
     r"\(2, 4, 6\) \(num_heads, L, S\); got \(3, 4, 6\)"),
    ("mask-dtype", {}, dict(attn_mask=torch.zeros(4, 6, dtype=torch.int32)), r"attn_mask must be bool"),
    ("causal-no-mask", {}, dict(is_causal=True), r"is_causal=True .* needs attn_mask"),
]


@pytest.mark.parametrize("name,ctor,kwargs,message", BAD_FORWARD, ids=[b[0] for b in BAD_FORWARD])
def test_bad_forward_input_is_refused_before_any_work(name, ctor, kwargs, message, monkeypatch):
    m = MultiheadAttention(8, 2, **ctor)
    calls = []
    monkeypatch.setattr(m, "_project", lambda *a: calls.append(a))
    monkeypatch.setattr(sa_nn, "scaled_dot_product_attention", lambda *a, **k: calls.append(a))
    args = dict(query=_x(4, 3, 8), key=_x(6, 3, ctor.get("kdim", 8)), value=_x(6, 3, ctor.get("vdim", 8)))
    if ctor.get("batch_first"):
        args = {k: v.transpose(0, 1) for k, v in args.items()}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        m(**args)
    assert calls == [], "validation must happen before any computation"


def test_good_input_reaches_the_computation(monkeypatch):
    # the bad-input table's "no work done" check can fail: good input does reach _project
    m = MultiheadAttention(8, 2)
    calls = []
    real = m._project
    monkeypatch.setattr(m, "_project", lambda *a: calls.append(1) or real(*a))
    m(_x(4, 3, 8), _x(6, 3, 8), _x(6, 3, 8))
    assert calls == [1]
