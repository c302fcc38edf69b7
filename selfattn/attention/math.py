"""The seed's three steps, written out. This is the oracle every other backend is tested against.

    1. compatibility scores  S = Q Kᵀ · scale          (B, H, Lq, Lk)
    2. softmax over each row W = softmax(S + mask)      (B, H, Lq, Lk)
    3. weighted sum          O = W V                    (B, H, Lq, Dv)

Scores and softmax are computed in fp32 for fp32/bf16/fp16 inputs (fp64 for fp64, so gradcheck
can use it), so bf16/fp16 inputs neither overflow nor lose the small weights. A row whose keys are all masked gets weights of zero (and so
an output of zero and finite gradients) instead of the NaN a plain softmax gives.
"""

from __future__ import annotations

import torch

from .request import AttentionRequest


def safe_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim; rows that are all -inf give zeros, not NaN."""
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(scores - row_max)
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32, or fp64 for fp64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def scores_and_weights(req: AttentionRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1 and 2: raw scaled scores and attention weights, both in fp32 (fp64 for fp64 inputs)."""
    acc = accumulation_dtype(req.query.dtype)
    q = req.query.to(acc)
    k = req.key_for_queries().to(acc)
    scores = (q @ k.transpose(-2, -1)) * req.scale  # (B, H, Lq, Lk)
    keep = req.bool_mask()
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    if req.float_mask is not None:
        scores = scores + req.float_mask.to(acc)
    return scores, safe_softmax(scores)


def sees_every_key(req: AttentionRequest) -> bool:
    """No mask at all: no user mask and no causal rule that hides a key (one query aligned
    bottom-right, as in cached decoding, sees every key)."""
    if req.attn_mask is not None:
        return False
    if not req.is_causal:
        return True
    return req.causal_align == "bottom_right" and req.query.shape[-2] == 1


def grouped_attention(req: AttentionRequest) -> torch.Tensor:
    """The same three steps without a mask, with each key/value head met by its group of query
    heads at once instead of being repeated for every query head (grouped-query attention; a
    group of one otherwise): for one decoded token the repeat would cost more than the attention."""
    q = req.query  # (B, Hq, Lq, D)
    *lead, hq, lq, d = q.shape
    hkv = req.key.shape[-3]
    acc = accumulation_dtype(q.dtype)
    qg = q.reshape(*lead, hkv, (hq // hkv) * lq, d).to(acc)  # (B, Hkv, G*Lq, D): heads h*G..h*G+G-1
    scores = (qg @ req.key.to(acc).transpose(-2, -1)) * req.scale  # (B, Hkv, G*Lq, Lk)
    # no mask, so no row is all -inf: the plain softmax is safe (and 9 ops cheaper than safe_softmax)
    out = torch.softmax(scores, dim=-1) @ req.value.to(acc)  # (B, Hkv, G*Lq, Dv)
    return out.reshape(*lead, hq, lq, out.shape[-1]).to(q.dtype)  # (B, Hq, Lq, Dv)


def math_attention(req: AttentionRequest, *, return_weights: bool = False):
    if not return_weights and req.dropout_p == 0.0 and sees_every_key(req):
        return grouped_attention(req)
    _, weights = scores_and_weights(req)  # (B, H, Lq, Lk) fp32 (fp64 for fp64)
    if req.dropout_p > 0.0:
        weights = torch.nn.functional.dropout(weights, p=req.dropout_p, training=True)
    v = req.value_for_queries()
    out = (weights @ v.to(weights.dtype)).to(req.query.dtype)  # step 3: (B, H, Lq, Dv)
    return (out, weights) if return_weights else out
