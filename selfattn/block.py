"""The transformer block: self-attention (the only part that mixes positions), an optional
cross-attention over another sequence, and a position-wise feed-forward network, each wrapped in a
residual connection and a normalisation.

pre-norm (GPT-2, Llama):  x = x + f(norm(x))        stable at depth, the default
post-norm (BERT, 2017):   x = norm(x + f(x))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import FeedForward, MultiHeadAttention, make_norm


@dataclass(frozen=True)
class BlockSpec:
    """The shape of one block; model configs build one of these."""

    dim: int
    n_head: int
    n_kv_head: int | None = None
    ffn_hidden: int | None = None  # default 4*dim
    activation: str = "gelu"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    prenorm: bool = True
    bias: bool = True
    dropout: float = 0.0
    # Dropout on the attention weights; None = the same as ``dropout``. A separate knob because on
    # a CPU it is the expensive one: any attention dropout forces the unfused three-step path and a
    # (B, H, T, T) random mask per layer (a MiniLM fine-tuning step at 256 tokens takes 2.26× as long
    # with it: benchmarks/encoder_step.py).
    attn_dropout: float | None = None
    cross_attention: bool = False
    context_dim: int | None = None
    backend: str = "auto"


class TransformerBlock(nn.Module):
    def __init__(self, spec: BlockSpec):
        super().__init__()
        s = spec
        self.prenorm = s.prenorm
        p_attn = s.dropout if s.attn_dropout is None else s.attn_dropout
        self.attn = MultiHeadAttention(s.dim, s.n_head, s.n_kv_head, bias=s.bias, dropout=p_attn,
                                       backend=s.backend)
        self.norm1 = make_norm(s.norm, s.dim, s.norm_eps, s.bias)
        self.cross_attn = None
        if s.cross_attention:
            self.cross_attn = MultiHeadAttention(s.dim, s.n_head, s.n_kv_head, bias=s.bias, dropout=p_attn,
                                                 cross=True, context_dim=s.context_dim, backend=s.backend)
            self.norm_cross = make_norm(s.norm, s.dim, s.norm_eps, s.bias)
        self.ffn = FeedForward(s.dim, s.ffn_hidden or 4 * s.dim, s.activation, bias=s.bias, dropout=s.dropout)
        self.norm2 = make_norm(s.norm, s.dim, s.norm_eps, s.bias)
        self.drop = nn.Dropout(s.dropout)

    def _residual(self, x, norm, f):
        if self.prenorm:
            return x + self.drop(f(norm(x)))
        return norm(x + self.drop(f(x)))

    def forward(self, x: torch.Tensor, *, positions=None, pos=None, mask=None, is_causal=False,
                cache=None, k_positions=None, context=None, context_mask=None) -> torch.Tensor:
        # x (B, T, D) -> (B, T, D); context (B, S, D_ctx) for cross-attention; masks bool, True = attend
        x = self._residual(x, self.norm1, lambda h: self.attn(
            h, positions=positions, pos=pos, mask=mask, is_causal=is_causal, cache=cache,
            k_positions=k_positions))
        if self.cross_attn is not None:
            x = self._residual(x, self.norm_cross, lambda h: self.cross_attn(
                h, mask=context_mask, cache=cache, context=context))
        return self._residual(x, self.norm2, self.ffn)
