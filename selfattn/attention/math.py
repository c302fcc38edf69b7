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


def math_attention(req: AttentionRequest, *, return_weights: bool = False):
    _, weights = scores_and_weights(req)  # (B, H, Lq, Lk) fp32 (fp64 for fp64)
    if req.dropout_p > 0.0:
        weights = torch.nn.functional.dropout(weights, p=req.dropout_p, training=True)
    v = req.value_for_queries()
    out = (weights @ v.to(weights.dtype)).to(req.query.dtype)  # step 3: (B, H, Lq, Dv)
    return (out, weights) if return_weights else out
