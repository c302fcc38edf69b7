"""Masks for attention, as boolean tensors where True means "this query may look at this key".

Booleans keep masks exact in any precision: a float mask of -inf added to bf16 scores is where
overflow and NaN creep in, so backends turn booleans into -inf only inside an fp32 softmax.

Causal alignment. With Lq queries and Lk keys, "top_left" lets query i see keys 0..i (torch's
``is_causal``), "bottom_right" lets query i see keys 0..i + (Lk - Lq): the last query sees every
key. Bottom-right is what decoding with a KV cache needs (the new queries are the *last*
positions); the two agree when Lq == Lk.
"""

from __future__ import annotations

import torch

CAUSAL_ALIGNMENTS = ("top_left", "bottom_right")


def _offset(lq: int, lk: int, align: str) -> int:
    if align not in CAUSAL_ALIGNMENTS:
        raise ValueError(f"causal_align={align!r} is not allowed; choose one of {CAUSAL_ALIGNMENTS}")
    return 0 if align == "top_left" else lk - lq


def causal_mask(lq: int, lk: int, *, align: str = "top_left", device=None) -> torch.Tensor:
    """(Lq, Lk) bool: True where key j is not in the future of query i."""
    off = _offset(lq, lk, align)
    i = torch.arange(lq, device=device).unsqueeze(1)
    j = torch.arange(lk, device=device).unsqueeze(0)
    return j <= i + off


def sliding_window_mask(lq: int, lk: int, window: int, *, align: str = "bottom_right", device=None) -> torch.Tensor:
    """(Lq, Lk) bool: causal, and each query sees at most ``window`` keys (itself included)."""
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window={window!r} is not allowed; it must be an int >= 1")
    off = _offset(lq, lk, align)
    i = torch.arange(lq, device=device).unsqueeze(1) + off
    j = torch.arange(lk, device=device).unsqueeze(0)
    return (j <= i) & (j > i - window)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, Lk) with 1/True for real tokens (Hugging Face's convention) -> (B, 1, 1, Lk) bool."""
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask must have shape (batch, keys); got {tuple(attention_mask.shape)}"
        )
    return attention_mask.bool()[:, None, None, :]


def combine(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """AND of boolean masks that broadcast together; None entries are ignored."""
    out = None
    for m in masks:
        if m is None:
            continue
        out = m if out is None else out & m
    return out


def to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean keep-mask -> float mask (0 keep, -inf drop). Use fp32: bf16 has no room to spare."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
