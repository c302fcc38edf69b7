"""The layer around the mechanism: projections, heads, the cache; feed-forward; norms.

``MultiHeadAttention`` owns everything the seed adds on top of plain attention: learned query,
key and value projections, the split into heads (with fewer key/value heads for grouped-query
attention), positions that act on q/k or on the scores, an optional KV cache, cross-attention
and the output projection. The weighted sum itself is ``selfattn.attention``'s.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention_weights, scaled_dot_product_attention
from .cache import LayerCache
from .positional import NoPositions, PositionalEncoding

ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "swiglu")
NORMS = ("layernorm", "rmsnorm")


class MultiHeadAttention(nn.Module):
    """n_head heads of size d/n_head; ``n_kv_head`` < n_head shares each key/value head among
    n_head/n_kv_head query heads (GQA; 1 = multi-query). ``cross=True``: keys and values come from
    ``context`` (another sequence), with width ``context_dim``."""

    def __init__(self, dim: int, n_head: int, n_kv_head: int | None = None, *, bias: bool = True,
                 dropout: float = 0.0, cross: bool = False, context_dim: int | None = None,
                 backend: str = "auto"):
        super().__init__()
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        if dim % n_head:
            raise ValueError(f"dim={dim} must be divisible by n_head={n_head}")
        if n_kv_head < 1 or n_head % n_kv_head:
            raise ValueError(f"n_kv_head={n_kv_head} must divide n_head={n_head}")
        self.dim, self.n_head, self.n_kv_head = dim, n_head, n_kv_head
        self.head_dim = dim // n_head
        self.cross, self.dropout, self.backend = cross, dropout, backend
        kv_width = 2 * n_kv_head * self.head_dim
        if cross:
            self.q_proj = nn.Linear(dim, dim, bias=bias)
            self.kv_proj = nn.Linear(context_dim or dim, kv_width, bias=bias)
        else:
            self.qkv_proj = nn.Linear(dim, dim + kv_width, bias=bias)  # fused: one matmul for q, k, v
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.record_weights = False  # set by selfattn.viz to keep the last attention weights
        self.last_weights: torch.Tensor | None = None

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, n, self.head_dim).transpose(1, 2)  # (B, n, T, hd)

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.kv_proj(context)  # (B, S, 2*Hkv*hd)
        k, v = kv.split(self.n_kv_head * self.head_dim, dim=-1)
        return self._heads(k, self.n_kv_head), self._heads(v, self.n_kv_head)  # (B, Hkv, S, hd)

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor | None = None,
                pos: PositionalEncoding | None = None, mask: torch.Tensor | None = None,
                is_causal: bool = False, cache: LayerCache | None = None,
                context: torch.Tensor | None = None, k_positions: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D).

        mask: bool, True = attend, broadcastable to (B, H, T, S). is_causal: causal over the keys,
        aligned bottom-right (with a cache the T new queries are the last positions).
        positions/k_positions (B, T)/(B, S): for RoPE/ALiBi; k_positions defaults to positions
        extended backwards over the cache.
        """
        B, T, D = x.shape
        pos = pos or NoPositions()
        if self.cross:
            q = self._heads(self.q_proj(x), self.n_head)
            if cache is not None and cache.cross is not None:
                k, v = cache.cross  # encoder keys/values, computed once per sequence
            else:
                if context is None:
                    raise ValueError("cross-attention needs context (the encoder output)")
                k, v = self.project_kv(context)
                if cache is not None:
                    cache.cross = (k, v)
        else:
            qkv = self.qkv_proj(x)  # (B, T, D + 2*Hkv*hd)
            q, k, v = qkv.split([D, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim], dim=-1)
            q, k, v = self._heads(q, self.n_head), self._heads(k, self.n_kv_head), self._heads(v, self.n_kv_head)
            if positions is not None:
                q, k = pos.rotate(q, k, positions, positions)  # RoPE acts on the new tokens only
            if cache is not None:
                k, v = cache.update(k, v)  # (B, Hkv, S, hd), S = cached + T
        bias = None
        if positions is not None and not self.cross:
            kp = k_positions if k_positions is not None else positions
            bias = pos.score_bias(positions, kp)  # (B, H, T, S) or None
        attn_mask = mask
        if bias is not None:
            # ALiBi: fold the boolean mask into the float bias so one float mask carries both.
            if attn_mask is not None:
                bias = bias.masked_fill(~attn_mask, float("-inf"))
            attn_mask = bias
        y = scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal, enable_gqa=self.n_kv_head != self.n_head,
            backend=self.backend, causal_align="bottom_right",
        )  # (B, H, T, hd)
        if self.record_weights:
            self.last_weights = attention_weights(
                q, k, attn_mask=attn_mask, is_causal=is_causal,
                enable_gqa=self.n_kv_head != self.n_head, causal_align="bottom_right").detach()
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.out_proj(y)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (GPT-2's): 0.5·x·(1 + tanh(z)), z = √(2/π)·(x + 0.044715·x³).

    Under ``torch.compile`` it is written as x·sigmoid(2z), the same function, because inductor's
    CPU tanh costs about four times its exp: as tanh it was the largest non-matmul kernel of a
    compiled training step (benchmarks/NOTES.md). Eager keeps torch's single fused kernel."""
    if not torch.compiler.is_compiling():
        return F.gelu(x, approximate="tanh")
    xf = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x  # fp32 inside, as torch's kernel
    return (xf * torch.sigmoid(2.0 * _SQRT_2_OVER_PI * (xf + 0.044715 * xf * xf * xf))).to(x.dtype)


class FeedForward(nn.Module):
    """Position-wise: the same two-layer network applied to every token on its own.
    SwiGLU: down(silu(gate(x)) * up(x)), as in Llama."""

    def __init__(self, dim: int, hidden: int, activation: str = "gelu", *, bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not allowed; choose one of {ACTIVATIONS}")
        self.activation = activation
        if activation == "swiglu":
            self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up_proj(x)  # (B, T, hidden)
        if self.activation == "swiglu":
            h = F.silu(self.gate_proj(x)) * h
        elif self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "gelu_tanh":
            h = gelu_tanh(h)
        else:
            h = F.relu(h)
        return self.drop(self.down_proj(h))


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · weight, computed in fp32 (no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def init_normal_(module: nn.Module, std: float) -> None:
    """GPT-2/BERT initialisation of one module: linear and embedding weights ~ N(0, std), biases 0.
    Use as ``model.apply(lambda m: init_normal_(m, std))``."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def make_norm(kind: str, dim: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"norm={kind!r} is not allowed; choose one of {NORMS}")
