"""torch's fused kernels (``F.scaled_dot_product_attention``) behind our request.

The only translation needed: bottom-right causal alignment with Lq != Lk is not torch's
``is_causal``, so it is passed as an explicit boolean mask; float masks are cast to the query's
dtype, as torch requires.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .request import AttentionRequest


def torch_attention(req: AttentionRequest) -> torch.Tensor:
    mask = req.attn_mask
    is_causal = req.is_causal
    if is_causal and req.causal_align == "bottom_right" and req.q_len != req.k_len:
        causal = req.causal()
        if mask is None:
            mask = causal
        elif mask.dtype == torch.bool:
            mask = mask & causal
        else:
            mask = mask.float().masked_fill(~causal, float("-inf"))
        is_causal = False
    if mask is not None and mask.dtype != torch.bool and mask.dtype != req.query.dtype:
        mask = mask.to(req.query.dtype)
    return F.scaled_dot_product_attention(
        req.query, req.key, req.value, attn_mask=mask, dropout_p=req.dropout_p,
        is_causal=is_causal, scale=req.scale, enable_gqa=req.n_rep > 1,
    )
