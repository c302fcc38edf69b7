"""The encoder–decoder transformer of "Attention Is All You Need", readable top to bottom.

source ids -> embeddings (+ positions) -> n_encoder_layers blocks (no causal mask) -> memory
target ids -> embeddings (+ positions) -> n_decoder_layers causal blocks, each with
              cross-attention over the memory -> final norm -> logits

Masks (True = may attend):
- encoder self-attention: every real source token sees every real source token; padding keys
  are masked out (padding *queries* compute garbage that nobody reads);
- decoder self-attention: causal (and target padding keys, when given);
- cross-attention: every target position sees every real source token, never source padding.

Decoding reuses two caches: the decoder's own keys/values grow one position per step (the
``KVCache``), and the cross-attention keys/values are projected from the memory once, on the first
step, and kept in the cache's ``cross`` slot, so the encoder runs once per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import BACKEND_NAMES
from ..attention.masks import causal_mask
from ..block import BlockSpec, TransformerBlock
from ..cache import KVCache
from ..config import ConfigError, check_choice, check_range
from ..layers import ACTIVATIONS, init_normal_, make_norm
from ..positional import LearnedPositions, SinusoidalPositions, default_positions

SEQ2SEQ_POSITIONS = ("sinusoidal", "learned")


@dataclass
class Seq2SeqConfig:
    vocab_size: int = 8000  # the joint vocabulary; src/tgt_vocab_size override it per side
    src_vocab_size: int | None = None  # None = vocab_size
    tgt_vocab_size: int | None = None  # None = vocab_size
    share_embeddings: bool = False  # one embedding table for source and target (needs equal vocabularies)
    tie_output: bool = True  # output layer = target embedding table (transposed)
    d_model: int = 512
    n_head: int = 8
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    ffn_hidden: int | None = None  # None = 4*d_model (2048 for the base model)
    activation: str = "relu"  # the original's; "gelu" also works
    dropout: float = 0.1
    position: str = "sinusoidal"  # sinusoidal: embeddings scaled by sqrt(d_model), as in the paper
    max_len: int = 256  # longest source or target sequence (a hard limit only for learned positions)
    prenorm: bool = True  # the paper is post-norm; pre-norm trains more stably without warm-up tricks
    norm_eps: float = 1e-5
    label_smoothing: float = 0.1
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    init_std: float = 0.02
    attn_backend: str = "auto"

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_head", "n_encoder_layers", "n_decoder_layers", "max_len"):
            check_range(f"model.{name}", getattr(self, name), 1)
        for name in ("src_vocab_size", "tgt_vocab_size", "ffn_hidden"):
            if getattr(self, name) is not None:
                check_range(f"model.{name}", getattr(self, name), 1)
        check_choice("model.position", self.position, SEQ2SEQ_POSITIONS)
        check_choice("model.activation", self.activation, ACTIVATIONS)
        check_choice("model.attn_backend", self.attn_backend, BACKEND_NAMES)
        check_range("model.dropout", self.dropout, 0.0, 1.0, hi_open=True)
        check_range("model.label_smoothing", self.label_smoothing, 0.0, 1.0, hi_open=True)
        if self.d_model % self.n_head:
            raise ConfigError(f"model.d_model={self.d_model} must be divisible by model.n_head={self.n_head}")
        if self.share_embeddings and self.src_vocab != self.tgt_vocab:
            raise ConfigError(
                f"model.share_embeddings=True needs one vocabulary; got src_vocab_size={self.src_vocab} "
                f"and tgt_vocab_size={self.tgt_vocab}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < min(self.src_vocab, self.tgt_vocab):
                raise ConfigError(f"model.{name}={value} is outside the vocabulary [0, "
                                  f"{min(self.src_vocab, self.tgt_vocab)})")
        if len({self.pad_id, self.bos_id, self.eos_id}) != 3:
            raise ConfigError(f"model.pad_id, bos_id and eos_id must differ; got {self.pad_id}, "
                              f"{self.bos_id}, {self.eos_id}")

    @property
    def src_vocab(self) -> int:
        return self.src_vocab_size or self.vocab_size

    @property
    def tgt_vocab(self) -> int:
        return self.tgt_vocab_size or self.vocab_size

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


def _embedding_positions(c: Seq2SeqConfig) -> nn.Module:
    if c.position == "sinusoidal":
        return SinusoidalPositions(c.d_model, scale_input=True)
    return LearnedPositions(c.max_len, c.d_model)


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        c = self.config = config
        self.src_emb = nn.Embedding(c.src_vocab, c.d_model)
        self.tgt_emb = self.src_emb if c.share_embeddings else nn.Embedding(c.tgt_vocab, c.d_model)
        # Two position modules so learned tables are not shared between the two sides.
        self.src_pos = _embedding_positions(c)
        self.tgt_pos = _embedding_positions(c)
        self.drop = nn.Dropout(c.dropout)

        common = dict(dim=c.d_model, n_head=c.n_head, ffn_hidden=c.ffn_hidden or 4 * c.d_model,
                      activation=c.activation, norm_eps=c.norm_eps, prenorm=c.prenorm,
                      dropout=c.dropout, backend=c.attn_backend)
        self.encoder = nn.ModuleList(TransformerBlock(BlockSpec(**common)) for _ in range(c.n_encoder_layers))
        self.decoder = nn.ModuleList(
            TransformerBlock(BlockSpec(**common, cross_attention=True, context_dim=c.d_model))
            for _ in range(c.n_decoder_layers))
        # Pre-norm leaves the residual stream un-normalised: one last norm on each side.
        # Post-norm blocks already end in a norm.
        self.enc_norm = make_norm("layernorm", c.d_model, c.norm_eps) if c.prenorm else nn.Identity()
        self.dec_norm = make_norm("layernorm", c.d_model, c.norm_eps) if c.prenorm else nn.Identity()
        self.lm_head = nn.Linear(c.d_model, c.tgt_vocab, bias=False)

        self.apply(lambda m: init_normal_(m, self.config.init_std))
        if c.position == "sinusoidal":
            # Embeddings are multiplied by sqrt(d) before the table (values in [-1, 1]) is added:
            # initialise them with std d^-1/2 so the two terms have the same scale.
            for emb in {id(self.src_emb): self.src_emb, id(self.tgt_emb): self.tgt_emb}.values():
                nn.init.normal_(emb.weight, std=c.d_model ** -0.5)
        if c.tie_output:
            self.lm_head.weight = self.tgt_emb.weight

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- encoder -----------------------------------------------------------------------------
    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src_ids (B, S) -> memory (B, S, D). src_mask (B, S): True/1 for real tokens; default
        ``src_ids != pad_id``. Rows of the memory at padding positions are meaningless."""
        self._check_ids("src_ids", src_ids, self.config.src_vocab)
        src_mask = self._source_mask(src_ids, src_mask)
        B, S = src_ids.shape
        positions = default_positions(B, S, device=src_ids.device)  # (B, S); padding sits on the right
        x = self.drop(self.src_pos.add_to_input(self.src_emb(src_ids), positions))  # (B, S, D)
        key_mask = self._key_mask(src_mask)  # (B, 1, 1, S) or None
        for block in self.encoder:
            x = block(x, mask=key_mask)
        return self.enc_norm(x)

    # ---- decoder -----------------------------------------------------------------------------
    def decode(self, tgt_ids: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor | None = None,
               *, tgt_mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """tgt_ids (B, T) -> logits (B, T, tgt_vocab), attending to ``memory`` (B, S, D).

        src_mask (B, S): True for real source tokens (None: all real). tgt_mask (B, T): True for
        real target tokens (None: all real; right padding needs none, causality hides it).
        cache: from ``make_cache``; the T tokens continue the cached ones, and the first call
        stores the cross-attention keys/values of ``memory`` for every later step.
        """
        self._check_ids("tgt_ids", tgt_ids, self.config.tgt_vocab)
        B, T = tgt_ids.shape
        if memory.dim() != 3 or memory.shape[0] != B or memory.shape[2] != self.config.d_model:
            raise ValueError(f"memory must have shape ({B}, S, {self.config.d_model}) (the encoder's "
                             f"output for the same batch); got {tuple(memory.shape)}")
        if src_mask is not None and src_mask.shape != memory.shape[:2]:
            raise ValueError(f"src_mask must have shape {tuple(memory.shape[:2])}; got {tuple(src_mask.shape)}")
        if tgt_mask is not None and tgt_mask.shape != tgt_ids.shape:
            raise ValueError(f"tgt_mask must have the shape of tgt_ids {tuple(tgt_ids.shape)}; "
                             f"got {tuple(tgt_mask.shape)}")
        dev = tgt_ids.device
        past = cache.length if cache is not None else 0
        if self.config.position == "learned" and past + T > self.config.max_len:
            raise ValueError(f"target of {past + T} tokens is longer than model.max_len={self.config.max_len}")
        positions = default_positions(B, T, offset=past, device=dev)  # (B, T)
        if cache is not None:
            cache.begin(T, tgt_mask, positions)
            self_keys = cache.keys_mask()  # (B, past + T)
        else:
            self_keys = tgt_mask.bool() if tgt_mask is not None else None
        # Causal flag alone when no key is padding (fused kernels skip the masked half);
        # otherwise one (B, 1, T, S) boolean mask carries both.
        self_mask, is_causal = None, T > 1
        if self_keys is not None and not bool(self_keys.all()):
            S = self_keys.shape[1]
            self_mask = causal_mask(T, S, align="bottom_right", device=dev) & self_keys[:, None, None, :]
            is_causal = False
        cross_mask = self._key_mask(src_mask)  # (B, 1, 1, S) or None

        x = self.drop(self.tgt_pos.add_to_input(self.tgt_emb(tgt_ids), positions))  # (B, T, D)
        for i, block in enumerate(self.decoder):
            x = block(x, mask=self_mask, is_causal=is_causal, cache=cache.layer(i) if cache is not None else None,
                      context=memory, context_mask=cross_mask)
        if cache is not None:
            cache.advance()
        return self.lm_head(self.dec_norm(x))  # (B, T, tgt_vocab)

    def decode_step(self, tokens: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor | None,
                    cache: KVCache) -> torch.Tensor:
        """One decoding step: tokens (B,) (the last token of each row) -> logits (B, tgt_vocab)
        of the next one. ``cache`` holds everything before; it advances by one position."""
        if tokens.dim() != 1:
            raise ValueError(f"tokens must have shape (batch,); got {tuple(tokens.shape)}")
        return self.decode(tokens[:, None], memory, src_mask, cache=cache)[:, -1]

    def make_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """A KV cache for the decoder's self-attention (and the cross-attention slot)."""
        c = self.config
        p = next(self.parameters())
        return KVCache(c.n_decoder_layers, batch, c.n_head, max_len or c.max_len, c.head_dim,
                       dtype=p.dtype, device=p.device)

    # ---- training ----------------------------------------------------------------------------
    def forward(self, src_ids: torch.Tensor, tgt_in: torch.Tensor, src_mask: torch.Tensor | None = None,
                tgt_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        """Teacher forcing: src_ids (B, S), tgt_in (B, T) (BOS + target[:-1]) -> logits (B, T, V)
        [or (logits, loss) with labels (B, T) (target + EOS); positions holding pad_id or -100
        are ignored; the loss is label-smoothed by ``config.label_smoothing``]."""
        if labels is not None and labels.shape != tgt_in.shape:
            raise ValueError(f"labels must have the shape of tgt_in {tuple(tgt_in.shape)}; got {tuple(labels.shape)}")
        src_mask = self._source_mask(src_ids, src_mask)
        memory = self.encode(src_ids, src_mask)
        logits = self.decode(tgt_in, memory, src_mask, tgt_mask=tgt_mask)
        if labels is None:
            return logits
        targets = labels.masked_fill(labels == self.config.pad_id, -100)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=-100, label_smoothing=self.config.label_smoothing)
        return logits, loss

    # ---- helpers -----------------------------------------------------------------------------
    def _source_mask(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        if src_mask is None:
            return src_ids != self.config.pad_id  # (B, S)
        if src_mask.shape != src_ids.shape:
            raise ValueError(f"src_mask must have the shape of src_ids {tuple(src_ids.shape)}; "
                             f"got {tuple(src_mask.shape)}")
        return src_mask.bool()

    @staticmethod
    def _key_mask(key_mask: torch.Tensor | None) -> torch.Tensor | None:
        """(B, S) real-token mask -> (B, 1, 1, S) for attention, or None when nothing is padding."""
        if key_mask is None or bool(key_mask.all()):
            return None
        return key_mask.bool()[:, None, None, :]

    @staticmethod
    def _check_ids(name: str, ids, vocab: int) -> None:
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} must be an int64/int32 tensor of token ids; got "
                            f"{getattr(ids, 'dtype', type(ids).__name__)}")
        if ids.dim() != 2 or ids.numel() == 0:
            raise ValueError(f"{name} must have shape (batch, tokens) with at least one token; got {tuple(ids.shape)}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:
            raise ValueError(f"{name}: token id {lo if lo < 0 else hi} is outside the vocabulary [0, {vocab})")
