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
from .math import math_attention, scores_and_weights, sees_every_key
from .fused import torch_attention
from .chunked import chunked_attention, chunked_unsupported
from .blocked import blocked_attention, blocked_unsupported
from .triton_flash import triton_attention, triton_unsupported
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
    "triton": Backend("triton", triton_attention, triton_unsupported,
                      "our own fused Triton kernels (online softmax forward, recomputing backward); "
                      "O(L*D) memory; CUDA, or CPU under Triton's interpreter; opt-in"),
}

BACKEND_NAMES = ("auto", *BACKENDS)


def _needs_grad(req: AttentionRequest) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in (req.query, req.key, req.value))


# The auto rule, read off benchmarks/attention.py runs on the 2-core AMD EPYC (Zen 4) machine,
# torch 2.13, 2 threads, medians of alternating runs on a shared machine (noisy):
# - inference, bf16, B=1, H=8, d=64, non-causal, unmasked: the query-blocked path beat torch's
#   SDPA by 1.24x at 256 tokens, 1.21x at 512, 1.36x at 1024 (SDPA's CPU kernel runs bf16 no
#   faster than fp32 while bf16 matmuls are ~2.5x faster); causal it was within noise;
# - training (forward+backward), bf16, B=32, H=4, d=48, 1 thread: SDPA's bf16 backward is slow
#   (50.7 ms at 128 tokens, vs 27.5 ms in fp32), blocked beat it 1.3-2.7x at 32-128 tokens,
#   causal or not, and lost at 256 (0.8x) and 1k-4k (0.68-0.81x);
# - fp32: SDPA won everywhere (blocked 0.4-0.8x); chunked lost everywhere (it exists for memory).
# Everything else goes to torch.
BLOCKED_WINS_FROM, BLOCKED_WINS_UP_TO = 256, 1024
BLOCKED_TRAINING_UP_TO = 128


def _blocked_is_faster(req: AttentionRequest) -> str | None:
    """None when the measured rule says blocked beats torch's kernel here, else why it does not apply."""
    if req.query.device.type != "cpu":
        return "measured only on CPU"
    if req.query.dtype != torch.bfloat16:
        return f"slower than torch's fused kernel in {req.query.dtype} (it wins only in bf16)"
    if req.dropout_p > 0.0:
        return "measured faster only without dropout"
    if _needs_grad(req):
        if req.q_len <= BLOCKED_TRAINING_UP_TO and req.k_len <= BLOCKED_TRAINING_UP_TO:
            return None
        return f"with gradients, measured faster only up to {BLOCKED_TRAINING_UP_TO} tokens"
    if req.has_mask:
        return "without gradients, measured faster only without masks or causal"
    if not (BLOCKED_WINS_FROM <= req.q_len and req.k_len <= BLOCKED_WINS_UP_TO and req.k_len >= BLOCKED_WINS_FROM):
        return f"without gradients, measured faster only for {BLOCKED_WINS_FROM}..{BLOCKED_WINS_UP_TO} tokens"
    return None


def _one_unmasked_query(req: AttentionRequest) -> bool:
    """Cached decoding: a single query, no mask (or causal aligned bottom-right), no dropout, no
    gradients. "math" then runs the grouped three steps (see math.grouped_attention): 40-150 us
    against 50-570 us for torch's fused kernel at 64-1024 keys (SmolLM2's shape, bf16, 2 threads)."""
    return (req.query.shape[-2] == 1 and req.dropout_p == 0.0 and sees_every_key(req)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in (req.query, req.key, req.value))))


def _auto_reasons(req: AttentionRequest) -> tuple[str, dict[str, str]]:
    """The auto policy: returns the chosen backend and why each other one was passed over.

    Rule: "math" for one decoded query that sees every key (its grouped three steps beat any
    kernel's set-up); "blocked" for bf16 on CPU without dropout, either training at <= 128 tokens
    or inference without masks/causal at 256..1024 tokens (where it measured faster than torch's
    SDPA); otherwise "torch" (the fastest we measured everywhere else); a backend that cannot
    serve the call is never chosen, and "math" is the last resort.
    """
    passed: dict[str, str] = {}
    for name, b in BACKENDS.items():
        why = b.unsupported(req)
        if why is not None:
            passed[name] = f"cannot serve this call: {why}"
    order = ["torch", "math"]
    blocked_why = _blocked_is_faster(req)
    if blocked_why is None:
        order.insert(0, "blocked")
    one_query = _one_unmasked_query(req)
    if one_query:
        order.insert(0, "math")
    choice = next(n for n in order if n not in passed)
    for name in BACKENDS:
        if name == choice or name in passed:
            continue
        if one_query and name != "math":
            passed[name] = ("supported, but for one query that sees every key (cached decoding) the "
                            "plain three steps measured faster than any kernel's set-up")
        elif name == "blocked" and blocked_why is not None:
            passed[name] = f"supported, but {blocked_why}"
        elif name == "chunked":
            passed[name] = "supported, but slower than torch's fused kernel at every size measured (it is for O(N) memory)"
        elif name == "math":
            passed[name] = "supported, but the slowest and O(Lq*Lk) memory (it is the readable oracle)"
        elif name == "triton":
            passed[name] = ("supported, but opt-in (backend='triton'): not yet measured faster than "
                            "torch's kernels on a GPU here")
        else:
            passed[name] = f"supported, but {choice} measured faster for this call"
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

    Beyond torch: ``backend`` picks the implementation ("auto" or one of ``BACKENDS``);
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
