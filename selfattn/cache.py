"""A preallocated key/value cache for incremental decoding.

Decoding token t needs the keys and values of tokens 0..t-1 from every layer. Recomputing them is
O(T²) work per sequence; keeping them makes each step O(T). The buffers are allocated once for
``max_len`` positions, so a decode step writes into them in place and allocates nothing.

All rows of a batch advance together; left-padded prompts occupy slots that ``key_mask`` marks as
padding, so they are never attended to.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layer: int, batch: int, n_kv_head: int, max_len: int, head_dim: int,
                 *, dtype=torch.float32, device=None):
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.key_mask = torch.ones(batch, max_len, dtype=torch.bool, device=device)  # True = real token
        self.positions = torch.zeros(batch, max_len, dtype=torch.long, device=device)  # for RoPE/ALiBi
        self.max_len = max_len
        self.length = 0  # slots filled so far (same for every row)
        self.pending = 0  # tokens written by the current forward, committed by advance()
        self.padded = False  # True once any forward brought an attention_mask (maybe padding)
        self.cross: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def layer(self, i: int) -> "LayerCache":
        return LayerCache(self, i)

    def check_room(self, new_tokens: int) -> None:
        if self.length + new_tokens > self.max_len:
            raise ValueError(
                f"the KV cache holds {self.max_len} positions; {self.length} are used and "
                f"{new_tokens} more were requested"
            )

    def begin(self, new_tokens: int, attention_mask: torch.Tensor | None, positions: torch.Tensor) -> None:
        """Called once per forward, before the layers: reserve slots, record padding and positions."""
        self.check_room(new_tokens)
        self.pending = new_tokens
        end = self.length + new_tokens
        if attention_mask is not None:
            self.padded = True
            self.key_mask[:, self.length:end] = attention_mask.bool()
        elif self.padded:  # the buffer starts all True: only a reused slot after padding needs writing
            self.key_mask[:, self.length:end] = True
        self.positions[:, self.length:end] = positions

    def real_tokens(self) -> torch.Tensor:
        """(B,) how many real (non-padding) tokens each row holds."""
        if not self.padded:  # no padding ever: every filled slot is real, no reduction needed
            return torch.full((self.batch,), self.length, dtype=torch.long, device=self.key_mask.device)
        return self.key_mask[:, : self.length].sum(-1)

    def keys_positions(self) -> torch.Tensor:
        return self.positions[:, : self.length + self.pending]

    def keys_mask(self) -> torch.Tensor:
        """(B, length + pending) bool over the keys a forward may see."""
        return self.key_mask[:, : self.length + self.pending]

    def advance(self) -> None:
        self.length += self.pending
        self.pending = 0

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (beam search): in place, so views stay valid."""
        self.k.copy_(self.k.index_select(1, index))
        self.v.copy_(self.v.index_select(1, index))
        self.key_mask.copy_(self.key_mask.index_select(0, index))  # padded stays as it was
        self.positions.copy_(self.positions.index_select(0, index))
        self.cross = [None if c is None else (c[0].index_select(0, index), c[1].index_select(0, index))
                      for c in self.cross]


class LayerCache:
    """One layer's view of the cache: ``update`` appends new keys/values and returns all so far."""

    def __init__(self, cache: KVCache, index: int):
        self.cache, self.index = cache, index

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: (B, Hkv, T_new, D) -> (B, Hkv, length + T_new, D)
        c, i = self.cache, self.index
        start, end = c.length, c.length + k.shape[-2]
        c.k[i, :, :, start:end] = k
        c.v[i, :, :, start:end] = v
        return c.k[i, :, :, :end], c.v[i, :, :, :end]

    @property
    def cross(self):
        return self.cache.cross[self.index]

    @cross.setter
    def cross(self, kv):
        self.cache.cross[self.index] = kv
