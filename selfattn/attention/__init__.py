"""Scaled dot-product attention with torch's signature and a choice of backends.

    from selfattn.attention import scaled_dot_product_attention
    out = scaled_dot_product_attention(q, k, v, is_causal=True, backend="auto")

Backends all take one validated :class:`AttentionRequest` and return the output; they live in
``BACKENDS`` and the choice among them is made in one place, :func:`choose_backend`, which
:func:`explain` reports on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .masks import causal_mask, combine, padding_mask, sliding_window_mask, to_additive
from .math import math_attention, scores_and_weights
from .fused import torch_attention
from .chunked import chunked_attention, chunked_unsupported
from .blocked import blocked_attention, blocked_unsupported
from .request import AttentionRequest, make_request

__all__ = [
    "scaled_dot_product_attention", "attention_weights", "explain", "choose_backend", "BACKENDS",
    "Backend", "AttentionRequest", "make_request", "causal_mask", "sliding_window_mask",
    "padding_mask", "combine", "to_additive",
]


@dataclass(frozen=True)
class Backend:
    name: str
    run: Callable[[AttentionRequest], torch.Tensor]
    # None when the backend can serve the request, else the reason it cannot.
    unsupported: Callable[[AttentionRequest], str | None]
    summary: str


def _always(_req: AttentionRequest) -> None:
    return None


BACKENDS: dict[str, Backend] = {
    "math": Backend("math", math_attention, _always,
                    "the seed's three steps, fp32 softmax; the oracle; O(Lq*Lk) memory"),
    "chunked": Backend("chunked", chunked_attention, chunked_unsupported,
                       "online softmax over key blocks, backward by recomputation; O(N) memory"),
    "blocked": Backend("blocked", blocked_attention, blocked_unsupported,
                       "query blocks against all keys with torch's fused softmax, matmuls in bf16 "
                       "for bf16; backward by recomputation; O(block_q*Lk) scratch"),
    "torch": Backend("torch", torch_attention, _always,
                     "torch.nn.functional.scaled_dot_product_attention (fused flash/efficient kernels)"),
}

BACKEND_NAMES = ("auto", *BACKENDS)


def _auto_reasons(req: AttentionRequest) -> tuple[str, dict[str, str]]:
    """The auto policy: returns the chosen backend and why each other one was passed over."""
    passed: dict[str, str] = {}
    for name, b in BACKENDS.items():
        why = b.unsupported(req)
        if why is not None:
            passed[name] = f"cannot serve this call: {why}"
    # torch's fused kernels are the fastest we measured for these shapes (benchmarks/attention.py).
    choice = "torch"
    for name in BACKENDS:
        if name != choice and name not in passed:
            passed[name] = "supported, but slower than torch's fused kernel here"
    return choice, passed


def choose_backend(req: AttentionRequest, backend: str = "auto") -> str:
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend={backend!r} is not allowed; choose one of {BACKEND_NAMES}")
    if backend == "auto":
        return _auto_reasons(req)[0]
    why = BACKENDS[backend].unsupported(req)
    if why is not None:
        raise ValueError(f"backend={backend!r} cannot serve this call: {why}")
    return backend


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    backend: str = "auto",
    causal_align: str = "top_left",
) -> torch.Tensor:
    """Same semantics as ``torch.nn.functional.scaled_dot_product_attention`` (torch 2.13).

    query (..., Hq, Lq, D), key (..., Hkv, Lk, D), value (..., Hkv, Lk, Dv) -> (..., Hq, Lq, Dv).
    ``attn_mask``: bool (True takes part) or float (added to the scores), broadcastable to
    (..., Hq, Lq, Lk); it may be combined with ``is_causal``. ``scale`` defaults to 1/sqrt(D).
    ``enable_gqa``: Hq may be a multiple of Hkv (query head h reads kv head h // (Hq/Hkv)).

    Beyond torch: ``backend`` picks the implementation ("auto", "math", "chunked", "torch");
    ``causal_align`` is "top_left" (torch's rule, the default) or "bottom_right" (query i sees
    keys up to i + Lk - Lq: what decoding with a KV cache needs). A query row whose keys are all
    masked returns zeros with finite gradients on every backend.
    """
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend={backend!r} is not allowed; choose one of {BACKEND_NAMES}")
    req = make_request(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, causal_align)
    return BACKENDS[choose_backend(req, backend)].run(req)


def attention_weights(
    query: torch.Tensor,
    key: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    causal_align: str = "top_left",
) -> torch.Tensor:
    """The (..., Hq, Lq, Lk) attention weights (fp32; fp64 for fp64 inputs) for a call, whatever
    backend computes the output: rows sum to 1, or to 0 where every key is masked."""
    req = make_request(query, key, key, attn_mask, 0.0, is_causal, scale, enable_gqa, causal_align)
    return scores_and_weights(req)[1]


def explain(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
            enable_gqa=False, *, backend="auto", causal_align="top_left") -> str:
    """Which backend would run this call and why each other one was passed over."""
    req = make_request(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, causal_align)
    if backend == "auto":
        choice, passed = _auto_reasons(req)
    else:
        choice = choose_backend(req, backend)
        passed = {n: "not requested (backend chosen explicitly)" for n in BACKENDS if n != choice}
    lines = [
        f"call: query {tuple(query.shape)} key {tuple(key.shape)} {query.dtype} on {query.device}, "
        f"mask={'none' if attn_mask is None else tuple(attn_mask.shape)}, causal={is_causal}"
        f"{' (' + causal_align + ')' if is_causal else ''}, dropout={dropout_p}, gqa x{req.n_rep}",
        f"runs: {choice}: {BACKENDS[choice].summary}",
    ]
    lines += [f"passed over: {n}: {why}" for n, why in passed.items()]
    return "\n".join(lines)
