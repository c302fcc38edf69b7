"""Positional information, behind one small interface.

Self-attention is permutation-equivariant: without positions it sees a set, not a sequence.
Each encoding here injects order in one of three places:

- ``add_to_input``: a vector per position added to the token embeddings (learned, sinusoidal);
- ``rotate``: queries and keys rotated by an angle proportional to position (RoPE), so the
  score q_i·k_j depends only on i - j;
- ``score_bias``: a per-head penalty linear in the distance added to the scores (ALiBi).

Every method receives explicit ``positions`` (B, T) so left-padded batches and KV-cache decoding
use the right positions. "none" does nothing at all.
"""

from __future__ import annotations

import math

import torch
from torch import nn

POSITION_KINDS = ("learned", "sinusoidal", "rope", "alibi", "none")


class PositionalEncoding(nn.Module):
    """Base: the identity in all three places."""

    kind = "none"

    def add_to_input(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor):
        return q, k

    def score_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor | None:
        return None


class NoPositions(PositionalEncoding):
    kind = "none"


class LearnedPositions(PositionalEncoding):
    """One learned vector per position, up to ``max_len`` (positions beyond it are an error)."""

    kind = "learned"

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)

    def add_to_input(self, x, positions):
        # reading a tensor value breaks a torch.compile graph: check in eager mode only
        hi = int(positions.max()) if positions.numel() and not torch.compiler.is_compiling() else 0
        if hi >= self.max_len:
            raise ValueError(
                f"position {hi} is beyond the {self.max_len} learned positions (block_size); "
                "shorten the input or use sinusoidal/rope/alibi positions"
            )
        return x + self.weight[positions].to(x.dtype)  # (B, T, D)


def sinusoidal_table(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(p / base^(2i/d)); any positions, fp32."""
    half = torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device)  # 2i
    inv_freq = base ** (-half / dim)  # (D/2,)
    angles = positions.float().unsqueeze(-1) * inv_freq  # (..., D/2)
    pe = torch.zeros(*positions.shape, dim, device=positions.device)
    pe[..., 0::2] = torch.sin(angles)
    pe[..., 1::2] = torch.cos(angles[..., : dim // 2])
    return pe


class SinusoidalPositions(PositionalEncoding):
    """The fixed encoding of "Attention Is All You Need": defined for every position."""

    kind = "sinusoidal"

    def __init__(self, dim: int, base: float = 10000.0, scale_input: bool = False):
        super().__init__()
        self.dim, self.base = dim, base
        # The original transformer multiplies embeddings by sqrt(d) before adding the table.
        self.input_scale = math.sqrt(dim) if scale_input else 1.0

    def add_to_input(self, x, positions):
        return x * self.input_scale + sinusoidal_table(positions, self.dim, self.base).to(x.dtype)


class RotaryPositions(PositionalEncoding):
    """RoPE: rotate pairs (x_i, x_{i+d/2}) of each head by angle p·θ_i ("rotate half" layout,
    as Hugging Face's Llama). Scores then depend on positions only through their difference."""

    kind = "rope"

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head size; got head_dim={head_dim}")
        self.head_dim, self.base = head_dim, base

    def cos_sin(self, positions: torch.Tensor):
        # Every layer rotates with the same positions: compute the tables once per forward and
        # reuse them (SmolLM2's 30 layers otherwise repeat cos/sin/cat 30 times per token).
        memo = getattr(self, "_memo", None)
        if (memo is not None and memo[0].shape == positions.shape and memo[0].device == positions.device
                and torch.equal(memo[0], positions)):
            return memo[1]
        # The frequencies in fp32 from the base, not from the buffer: model.to(bfloat16) casts the
        # buffer too, and bf16 frequencies put angles off by ~p/256 radians at position p.
        D = self.head_dim
        inv_freq = self.base ** (-torch.arange(0, D, 2, dtype=torch.float32, device=positions.device) / D)
        angles = positions.float().unsqueeze(-1) * inv_freq  # (B, T, D/2)
        angles = torch.cat([angles, angles], dim=-1)  # (B, T, D)
        out = angles.cos().unsqueeze(1), angles.sin().unsqueeze(1)  # (B, 1, T, D)
        if not torch.is_grad_enabled():  # no memo under autograd (nothing to save there)
            self._memo = (positions.clone(), out)
        return out

    @staticmethod
    def _rotate(x, cos, sin):  # not `_apply`: nn.Module uses that name for .to()/.double()
        x1, x2 = x.chunk(2, dim=-1)
        rotated = torch.cat([-x2, x1], dim=-1)
        return (x.float() * cos + rotated.float() * sin).to(x.dtype)

    def rotate(self, q, k, q_pos, k_pos):
        # q (B, H, Tq, D), k (B, Hkv, Tk, D); positions (B, T)
        cq, sq = self.cos_sin(q_pos)
        ck, sk = (cq, sq) if k_pos is q_pos else self.cos_sin(k_pos)
        return self._rotate(q, cq, sq), self._rotate(k, ck, sk)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """Per-head slopes: the geometric sequence 2^(-8/n), 2^(-16/n), ... for n a power of two;
    otherwise the closest power of two's slopes plus every other slope of the next one."""

    def power_of_two(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_head).is_integer():
        slopes = power_of_two(n_head)
    else:
        closest = 2 ** math.floor(math.log2(n_head))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_head - closest]
    return torch.tensor(slopes, dtype=torch.float32)


class ALiBiPositions(PositionalEncoding):
    """ALiBi: score(i, j) -= slope_h · |i - j|; no parameters, extrapolates to longer inputs."""

    kind = "alibi"

    def __init__(self, n_head: int):
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_head), persistent=False)  # (H,)

    def score_bias(self, q_pos, k_pos):
        dist = (q_pos.unsqueeze(-1) - k_pos.unsqueeze(-2)).abs().float()  # (B, Tq, Tk)
        return -self.slopes.view(1, -1, 1, 1) * dist.unsqueeze(1)  # (B, H, Tq, Tk)


def build_positional(kind: str, *, dim: int, n_head: int, max_len: int, rope_base: float = 10000.0,
                     sinusoidal_scale_input: bool = False) -> PositionalEncoding:
    if kind == "learned":
        return LearnedPositions(max_len, dim)
    if kind == "sinusoidal":
        return SinusoidalPositions(dim, scale_input=sinusoidal_scale_input)
    if kind == "rope":
        return RotaryPositions(dim // n_head, rope_base)
    if kind == "alibi":
        return ALiBiPositions(n_head)
    if kind == "none":
        return NoPositions()
    raise ValueError(f"position={kind!r} is not allowed; choose one of {POSITION_KINDS}")


def default_positions(batch: int, length: int, offset: int = 0, device=None) -> torch.Tensor:
    """(B, T) positions offset..offset+T-1 for every row."""
    return torch.arange(offset, offset + length, device=device).unsqueeze(0).expand(batch, length)
