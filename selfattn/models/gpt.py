"""A decoder-only transformer (GPT), readable top to bottom.

tokens -> embeddings (+ positions) -> n_layer causal blocks -> final norm -> logits

One config covers the two families users meet:
- GPT-2 style: learned positions, LayerNorm, GELU, biases, tied input/output embeddings;
- Llama style: RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..attention.masks import causal_mask
from ..block import BlockSpec, TransformerBlock
from ..cache import KVCache
from ..config import ConfigError, check_choice, check_range
from ..layers import ACTIVATIONS, NORMS, init_normal_, make_norm
from ..positional import POSITION_KINDS, build_positional, default_positions
from ..attention import BACKEND_NAMES


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024  # context window (positions the model is trained for)
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None  # None = n_head; fewer = grouped-query attention
    n_embd: int = 768
    ffn_hidden: int | None = None  # None: 4*n_embd (gelu/relu), ~8/3*n_embd rounded up to 64 (swiglu)
    activation: str = "gelu_tanh"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    position: str = "learned"
    rope_base: float = 10000.0
    # sinusoidal only: multiply token embeddings by sqrt(n_embd) before adding the table, as the
    # original transformer does. Without it, embeddings drawn at std 0.02 are drowned by a table of
    # amplitude 1 and the model hardly sees its tokens.
    sinusoidal_scale_input: bool = False
    bias: bool = True
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02
    attn_backend: str = "auto"

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check_range(f"model.{name}", getattr(self, name), 1)
        check_choice("model.activation", self.activation, ACTIVATIONS)
        check_choice("model.norm", self.norm, NORMS)
        check_choice("model.position", self.position, POSITION_KINDS)
        check_choice("model.attn_backend", self.attn_backend, BACKEND_NAMES)
        check_range("model.dropout", self.dropout, 0.0, 1.0, hi_open=True)
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd={self.n_embd} must be divisible by model.n_head={self.n_head}")
        if self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head):
            raise ConfigError(f"model.n_kv_head={self.n_kv_head} must divide model.n_head={self.n_head}")
        if self.sinusoidal_scale_input and self.position != "sinusoidal":
            raise ConfigError(f"model.sinusoidal_scale_input=True needs model.position='sinusoidal'; "
                              f"got position={self.position!r}")
        if self.position == "rope" and (self.n_embd // self.n_head) % 2:
            raise ConfigError("model.position='rope' needs an even head size (n_embd / n_head)")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def hidden(self) -> int:
        if self.ffn_hidden:
            return self.ffn_hidden
        if self.activation == "swiglu":
            return 64 * math.ceil(8 * self.n_embd / 3 / 64)
        return 4 * self.n_embd

    @classmethod
    def preset(cls, name: str, **overrides) -> "GPTConfig":
        if name not in GPT_PRESETS:
            raise ConfigError(f"unknown GPT preset {name!r}; choose one of {sorted(GPT_PRESETS)}")
        return replace(GPT_PRESETS[name], **overrides)


GPT_PRESETS = {
    "gpt2": GPTConfig(),
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),
    "llama": GPTConfig(activation="swiglu", norm="rmsnorm", norm_eps=1e-5, position="rope", bias=False,
                       tie_embeddings=False, n_kv_head=4),
    "tiny": GPTConfig(vocab_size=256, block_size=64, n_layer=2, n_head=4, n_embd=32),
}


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        c = self.config = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.n_embd)
        self.pos = build_positional(c.position, dim=c.n_embd, n_head=c.n_head, max_len=c.block_size,
                                    rope_base=c.rope_base, sinusoidal_scale_input=c.sinusoidal_scale_input)
        self.drop = nn.Dropout(c.dropout)
        spec = BlockSpec(dim=c.n_embd, n_head=c.n_head, n_kv_head=c.n_kv_head, ffn_hidden=c.hidden,
                         activation=c.activation, norm=c.norm, norm_eps=c.norm_eps, prenorm=True,
                         bias=c.bias, dropout=c.dropout, backend=c.attn_backend)
        self.blocks = nn.ModuleList(TransformerBlock(spec) for _ in range(c.n_layer))
        self.norm_f = make_norm(c.norm, c.n_embd, c.norm_eps, c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(lambda m: init_normal_(m, self.config.init_std))
        # Residual projections write into the stream once per layer, twice per block: scale them
        # by 1/sqrt(2·n_layer) so the stream's variance does not grow with depth (GPT-2's rule).
        for name, p in self.named_parameters():
            if name.endswith(("attn.out_proj.weight", "ffn.down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=c.init_std / math.sqrt(2 * c.n_layer))

    # ---- sizes -------------------------------------------------------------------------------
    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if hasattr(self.pos, "weight"):
                n -= self.pos.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None, training: bool = True) -> float:
        """Matmul FLOPs per token: 2 per weight (forward) plus attention's QKᵀ and AV, 2·2·T·d per
        layer counting the full T as PaLM's appendix does; training is 3× the forward."""
        c, T = self.config, seq_len or self.config.block_size
        n = self.num_params(non_embedding=True) + (c.vocab_size * c.n_embd)  # the lm_head matmul counts
        forward = 2 * n + 4 * c.n_layer * T * c.n_embd
        return 3 * forward if training else forward

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                cache: KVCache | None = None, last_only: bool = False):
        """input_ids (B, T) -> logits (B, T, vocab) [or (logits, loss) with targets (B, T)].

        attention_mask (B, T): 1 for real tokens, 0 for (left) padding. positions (B, T): default
        0..T-1 after any cached tokens, counted over real tokens only when padding is given.
        cache: a KVCache from ``make_cache`` for incremental decoding. last_only: logits of the
        last position only (B, 1, vocab), all generation needs.
        """
        self._check_ids(input_ids, targets)
        self._check_attention_mask(attention_mask, input_ids)
        B, T = input_ids.shape
        dev = input_ids.device
        past = cache.length if cache is not None else 0
        if past + T > self.config.block_size and self.config.position == "learned":
            raise ValueError(
                f"input of {past + T} tokens is longer than the model's context (block_size="
                f"{self.config.block_size}); shorten the prompt or max_new_tokens"
            )
        if positions is None:
            positions = self._positions(B, T, cache, attention_mask, dev)  # (B, T)
        if cache is not None:
            cache.begin(T, attention_mask, positions)
            key_mask, k_positions = cache.keys_mask(), cache.keys_positions()  # (B, S)
        else:
            key_mask = attention_mask.bool() if attention_mask is not None else None
            k_positions = positions
        # masks: True = may attend. Without padding the causal flag alone suffices (fused kernels
        # skip the masked half); with padding, one (B, 1, T, S) boolean mask carries both.
        mask, is_causal = None, T > 1  # one new query may see every key: no mask at all
        # Without any padding (cache.padded False) the mask is all True: skip the check, which
        # would otherwise reduce over every cached key and sync on each decoded token.
        padded = cache.padded if cache is not None else key_mask is not None
        if padded and not bool(key_mask.all()):
            S = key_mask.shape[1]
            mask = causal_mask(T, S, align="bottom_right", device=dev) & key_mask[:, None, None, :]
            is_causal = False
        x = self.tok_emb(input_ids)  # (B, T, D)
        x = self.drop(self.pos.add_to_input(x, positions))
        for i, block in enumerate(self.blocks):
            x = block(x, positions=positions, pos=self.pos, mask=mask, is_causal=is_causal,
                      cache=cache.layer(i) if cache is not None else None, k_positions=k_positions)
        if cache is not None:
            cache.advance()
        x = self.norm_f(x)
        if last_only:
            x = x[:, -1:, :]
        logits = self.lm_head(x)  # (B, T, vocab)
        if last_only and targets is None and logits.dtype in (torch.bfloat16, torch.float16):
            logits = self._refine_top_logits(x, logits)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def _refine_top_logits(self, x: torch.Tensor, logits: torch.Tensor, k: int = 16) -> torch.Tensor:
        """Generation in bf16: logits come out rounded to bf16 (steps of 0.125 at magnitude
        16-32), enough to tie or swap the two best tokens and so change a greedy answer. Return
        fp32 logits whose k largest entries are recomputed in fp32 from the same hidden state
        (a k-row product: nothing next to the full head)."""
        out = logits.float()  # (B, 1, V)
        k = min(k, out.shape[-1])
        top = out.topk(k, dim=-1).indices  # (B, 1, k)
        rows = self.lm_head.weight[top[:, 0]].float()  # (B, k, D)
        exact = (rows @ x.float().transpose(1, 2)).transpose(1, 2)  # (B, 1, k); the head has no bias
        return out.scatter(-1, top, exact)

    @staticmethod
    def _positions(B, T, cache, attention_mask, device):
        """Positions of the new tokens: after the cached ones, counting real tokens only, so a
        left-padded prompt gets the same positions as the prompt alone."""
        past_real = cache.real_tokens() if cache is not None else torch.zeros(B, dtype=torch.long, device=device)
        if attention_mask is None:
            return past_real[:, None] + torch.arange(T, device=device)
        return (past_real[:, None] + attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    @staticmethod
    def _check_attention_mask(attention_mask, input_ids) -> None:
        if attention_mask is None:
            return
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.dtype.is_floating_point \
                or attention_mask.dtype.is_complex:
            raise TypeError(f"attention_mask must be a bool or integer tensor (1 = real token, 0 = padding); got "
                            f"{getattr(attention_mask, 'dtype', type(attention_mask).__name__)}")
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}; "
                             f"got {tuple(attention_mask.shape)}")

    def _check_ids(self, input_ids, targets):
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"input_ids must be an int64/int32 tensor of token ids; got "
                            f"{getattr(input_ids, 'dtype', type(input_ids).__name__)}")
        if input_ids.dim() != 2 or input_ids.numel() == 0:
            raise ValueError(f"input_ids must have shape (batch, tokens) with at least one token; "
                             f"got {tuple(input_ids.shape)}")
        # the value check reads tensor values: under torch.compile (training, ids from our own data)
        # it would break the graph, so it runs in eager mode only
        lo, hi = (0, 0) if torch.compiler.is_compiling() else (int(input_ids.min()), int(input_ids.max()))
        if lo < 0 or hi >= self.config.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.config.vocab_size})")
        if targets is not None and targets.shape != input_ids.shape:
            raise ValueError(f"targets must have the shape of input_ids {tuple(input_ids.shape)}; "
                             f"got {tuple(targets.shape)}")

    def make_cache(self, batch: int, max_len: int | None = None, dtype=None) -> KVCache:
        c = self.config
        p = next(self.parameters())
        return KVCache(c.n_layer, batch, c.n_kv_head or c.n_head, max_len or c.block_size, c.head_dim,
                       dtype=dtype or p.dtype, device=p.device)

