"""One validated attention call, shared by every backend.

All checks happen here, before any computation, so every backend sees the same clean inputs and
every user sees the same clear error: the argument, what it got, what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .masks import CAUSAL_ALIGNMENTS, causal_mask, combine


@dataclass(frozen=True)
class AttentionRequest:
    query: torch.Tensor  # (..., Hq, Lq, D)
    key: torch.Tensor  # (..., Hkv, Lk, D)
    value: torch.Tensor  # (..., Hkv, Lk, Dv)
    attn_mask: torch.Tensor | None  # bool (True = attend) or float (added), broadcastable to (..., Hq, Lq, Lk)
    dropout_p: float
    is_causal: bool
    scale: float
    enable_gqa: bool
    causal_align: str

    @property
    def q_len(self) -> int:
        return self.query.shape[-2]

    @property
    def k_len(self) -> int:
        return self.key.shape[-2]

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head (1 without GQA)."""
        if self.query.dim() < 3:
            return 1
        return self.query.shape[-3] // self.key.shape[-3]

    def _repeat(self, t: torch.Tensor) -> torch.Tensor:
        # torch's enable_gqa semantics: query head h uses kv head h // n_rep
        return t if self.n_rep == 1 else t.repeat_interleave(self.n_rep, dim=-3)

    def key_for_queries(self) -> torch.Tensor:
        return self._repeat(self.key)

    def value_for_queries(self) -> torch.Tensor:
        return self._repeat(self.value)

    @property
    def float_mask(self) -> torch.Tensor | None:
        m = self.attn_mask
        return m if m is not None and m.dtype != torch.bool else None

    def causal(self) -> torch.Tensor | None:
        if not self.is_causal:
            return None
        return causal_mask(self.q_len, self.k_len, align=self.causal_align, device=self.query.device)

    def bool_mask(self) -> torch.Tensor | None:
        """User boolean mask AND causal mask (either may be absent); broadcastable to the scores."""
        user = self.attn_mask if self.attn_mask is not None and self.attn_mask.dtype == torch.bool else None
        return combine(user, self.causal())

    @property
    def has_mask(self) -> bool:
        return self.attn_mask is not None or self.is_causal


def _check_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {t.dtype}")
    if t.dim() < 2:
        raise ValueError(f"{name} must have at least 2 dims (..., L, D); got shape {tuple(t.shape)}")


def make_request(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
    enable_gqa=False, causal_align="top_left",
) -> AttentionRequest:
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_tensor(name, t)
    if not (query.dim() == key.dim() == value.dim()):
        raise ValueError(
            "query, key and value must have the same number of dims; got "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    if not (query.dtype == key.dtype == value.dtype):
        raise ValueError(
            f"query, key and value must share one dtype; got {query.dtype}, {key.dtype}, {value.dtype}"
        )
    if not (query.device == key.device == value.device):
        raise ValueError(f"query, key and value must be on one device; got {query.device}, {key.device}, {value.device}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query and key must have the same last dim (head size); got {query.shape[-1]} and {key.shape[-1]}"
        )
    if key.shape[:-1] != value.shape[:-1]:
        raise ValueError(
            f"key and value must agree on all dims but the last; got {tuple(key.shape)} and {tuple(value.shape)}"
        )
    if query.shape[:-3] != key.shape[:-3]:
        raise ValueError(
            f"query and key must have the same batch dims; got {tuple(query.shape[:-3])} and {tuple(key.shape[:-3])}"
        )
    if query.dim() >= 3:
        hq, hkv = query.shape[-3], key.shape[-3]
        if enable_gqa:
            if hkv == 0 or hq % hkv != 0:
                raise ValueError(
                    f"with enable_gqa=True the query heads ({hq}) must be a multiple of the key/value heads ({hkv})"
                )
        elif hq != hkv:
            raise ValueError(
                f"query has {hq} heads but key/value have {hkv}; pass enable_gqa=True for grouped-query attention"
            )
    if not isinstance(dropout_p, (int, float)) or not (0.0 <= float(dropout_p) < 1.0):
        raise ValueError(f"dropout_p must be a float in [0, 1); got {dropout_p!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    elif not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float or None (1/sqrt(head size)); got {scale!r}")
    if causal_align not in CAUSAL_ALIGNMENTS:
        raise ValueError(f"causal_align={causal_align!r} is not allowed; choose one of {CAUSAL_ALIGNMENTS}")
    if attn_mask is not None:
        if not isinstance(attn_mask, torch.Tensor):
            raise TypeError(f"attn_mask must be a torch.Tensor or None; got {type(attn_mask).__name__}")
        if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
            raise ValueError(
                f"attn_mask must be bool (True = attend) or floating point (added to the scores); got {attn_mask.dtype}"
            )
        target = (*query.shape[:-1], key.shape[-2])
        try:
            full = torch.broadcast_shapes(attn_mask.shape, target)
        except RuntimeError:
            full = None
        if full != torch.Size(target):
            raise ValueError(
                f"attn_mask of shape {tuple(attn_mask.shape)} cannot broadcast to the scores' shape {target} "
                "(..., heads, queries, keys)"
            )
        if attn_mask.device != query.device:
            raise ValueError(f"attn_mask is on {attn_mask.device} but query is on {query.device}")
    return AttentionRequest(
        query, key, value, attn_mask, float(dropout_p), bool(is_causal), float(scale), bool(enable_gqa), causal_align
    )
