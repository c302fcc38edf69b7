"""torch's fused kernels (``F.scaled_dot_product_attention``) behind our request.

Translations needed:
- torch refuses ``attn_mask`` together with ``is_causal=True``, and its ``is_causal`` is top-left
  aligned; in either case (a mask AND causal, or bottom-right with Lq != Lk) the causal part is
  folded into an explicit boolean mask;
- float masks are cast to the query's dtype, as torch requires. Values beyond that dtype's range
  become -inf (below) or are clamped to its largest finite value (above), so a mask never turns
  into +inf or NaN in fp16; note that a bf16/fp16 float mask is rounded to that precision here
  (the math, chunked and blocked backends add float masks in fp32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .request import AttentionRequest


def torch_attention(req: AttentionRequest) -> torch.Tensor:
    mask = req.attn_mask
    is_causal = req.is_causal
    needs_explicit = is_causal and (mask is not None or (req.causal_align == "bottom_right" and req.q_len != req.k_len))
    if needs_explicit:
        causal = req.causal()  # (Lq, Lk) bool
        if mask is None:
            mask = causal
        elif mask.dtype == torch.bool:
            mask = mask & causal
        else:
            mask = mask.float().masked_fill(~causal, float("-inf"))
        is_causal = False
    if mask is not None and mask.dtype != torch.bool and mask.dtype != req.query.dtype:
        top = torch.finfo(req.query.dtype).max
        mask = mask.clamp(max=top).to(req.query.dtype)
    return F.scaled_dot_product_attention(
        req.query, req.key, req.value, attn_mask=mask, dropout_p=req.dropout_p,
        is_causal=is_causal, scale=req.scale, enable_gqa=req.n_rep > 1,
    )
