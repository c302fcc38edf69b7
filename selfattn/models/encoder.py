"""A bidirectional encoder (BERT), readable top to bottom.

tokens (+ positions + segments) -> embedding norm -> n_layer blocks, no causal mask -> heads

Every token sees every real token on both sides; padding is hidden as *keys* (a padded query
still computes something, which is ignored), so a padded batch gives each sequence the same
outputs as running it alone. Heads, chosen by config:
- masked-language modelling (BERT's pretraining): dense + GELU + LayerNorm, then a decoder tied
  to the word embeddings plus a per-token bias; ``mask_tokens`` draws the 80/10/10 corruption;
- sequence classification from the first token ([CLS], through the pooler when there is one)
  or the mean over real tokens;
- sentence embeddings: the mean over real tokens, optionally L2-normalised (Sentence-BERT).

post-norm (``prenorm=False``, BERT): LayerNorm on the summed embeddings, a norm after every
residual, no final norm. pre-norm: no embedding norm, a final norm after the last block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import BACKEND_NAMES
from ..block import BlockSpec, TransformerBlock
from ..config import ConfigError, check_choice, check_range
from ..layers import ACTIVATIONS, init_normal_
from ..positional import build_positional

ENCODER_POSITIONS = ("learned", "sinusoidal", "none")
POOLINGS = ("cls", "mean")
IGNORE_INDEX = -100


@dataclass
class EncoderConfig:
    vocab_size: int = 30522
    max_position: int = 512  # learned positions; longer inputs are an error
    type_vocab_size: int = 2  # segments (sentence A/B); 0 = no segment embeddings
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    ffn_hidden: int | None = None  # None: 4*n_embd
    activation: str = "gelu"  # exact (erf) GELU, as BERT
    norm_eps: float = 1e-12
    prenorm: bool = False  # False: BERT's post-norm
    position: str = "learned"
    dropout: float = 0.0
    attn_dropout: float | None = None  # on the attention weights; None = dropout (BERT's recipe)
    pooling: str = "cls"  # what the classifier reads: first token or mean over real tokens
    pooler: bool = False  # BERT's dense+tanh over the first token (kept when loaded from HF)
    n_classes: int = 0  # 0 = no classification head
    mlm_head: bool = False
    pad_id: int = 0
    init_std: float = 0.02
    attn_backend: str = "auto"

    def __post_init__(self):
        for name in ("vocab_size", "max_position", "n_layer", "n_head", "n_embd"):
            check_range(f"model.{name}", getattr(self, name), 1)
        check_range("model.type_vocab_size", self.type_vocab_size, 0)
        if self.ffn_hidden is not None:
            check_range("model.ffn_hidden", self.ffn_hidden, 1)
        check_choice("model.activation", self.activation, ACTIVATIONS)
        check_choice("model.position", self.position, ENCODER_POSITIONS)
        check_choice("model.pooling", self.pooling, POOLINGS)
        check_choice("model.attn_backend", self.attn_backend, BACKEND_NAMES)
        check_range("model.dropout", self.dropout, 0.0, 1.0, hi_open=True)
        if self.attn_dropout is not None:
            check_range("model.attn_dropout", self.attn_dropout, 0.0, 1.0, hi_open=True)
        check_range("model.norm_eps", self.norm_eps, 0.0, lo_open=True)
        check_range("model.init_std", self.init_std, 0.0, lo_open=True)
        check_range("model.pad_id", self.pad_id, 0, self.vocab_size - 1)
        if self.n_classes == 1 or self.n_classes < 0:
            raise ConfigError(f"model.n_classes={self.n_classes!r} is not allowed; use 0 (no classifier) or >= 2")
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd={self.n_embd} must be divisible by model.n_head={self.n_head}")

    @property
    def hidden(self) -> int:
        return self.ffn_hidden or 4 * self.n_embd


@dataclass
class EncoderOutput:
    hidden: torch.Tensor  # (B, T, D) last hidden states
    logits: torch.Tensor | None = None  # (B, n_classes) when there is a classifier
    mlm_logits: torch.Tensor | None = None  # (B, T, vocab) when there is an MLM head
    loss: torch.Tensor | None = None


class MLMHead(nn.Module):
    """BERT's prediction head: transform each hidden state, then score it against every word
    embedding (the decoder weight *is* the embedding matrix) plus a per-token bias."""

    def __init__(self, dim: int, vocab_size: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        h = self.norm(F.gelu(self.dense(x)))  # (B, T, D)
        return F.linear(h, word_embeddings, self.bias)  # (B, T, vocab)


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        c = self.config = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.n_embd)
        self.pos = build_positional(c.position, dim=c.n_embd, n_head=c.n_head, max_len=c.max_position)
        self.seg_emb = nn.Embedding(c.type_vocab_size, c.n_embd) if c.type_vocab_size else None
        self.emb_norm = None if c.prenorm else nn.LayerNorm(c.n_embd, eps=c.norm_eps)
        self.drop = nn.Dropout(c.dropout)
        spec = BlockSpec(dim=c.n_embd, n_head=c.n_head, ffn_hidden=c.hidden, activation=c.activation,
                         norm="layernorm", norm_eps=c.norm_eps, prenorm=c.prenorm, bias=True,
                         dropout=c.dropout, attn_dropout=c.attn_dropout, backend=c.attn_backend)
        self.blocks = nn.ModuleList(TransformerBlock(spec) for _ in range(c.n_layer))
        self.norm_f = nn.LayerNorm(c.n_embd, eps=c.norm_eps) if c.prenorm else None
        self.pooler = nn.Linear(c.n_embd, c.n_embd) if c.pooler else None
        self.classifier = nn.Linear(c.n_embd, c.n_classes) if c.n_classes else None
        self.mlm_head = MLMHead(c.n_embd, c.vocab_size, c.norm_eps) if c.mlm_head else None
        self.apply(lambda m: init_normal_(m, self.config.init_std))

    # ---- the encoder -------------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> last hidden states (B, T, D).

        attention_mask (B, T): 1 for real tokens, 0 for padding (left or right); every row needs
        at least one real token. token_type_ids (B, T): segment ids, default 0.
        """
        attention_mask = self._check_inputs(input_ids, attention_mask, token_type_ids)
        B, T = input_ids.shape
        positions = self._positions(attention_mask, B, T, input_ids.device)  # (B, T)
        x = self.tok_emb(input_ids)  # (B, T, D)
        x = self.pos.add_to_input(x, positions)
        if self.seg_emb is not None:
            seg = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            x = x + self.seg_emb(seg)
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        x = self.drop(x)
        # Hide pad keys only; without padding no mask at all lets fused kernels take the fast path.
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        for block in self.blocks:
            x = block(x, mask=mask)
        if self.norm_f is not None:
            x = self.norm_f(x)
        return x

    @staticmethod
    def _positions(attention_mask, B, T, device) -> torch.Tensor:
        """Real tokens are numbered 0, 1, ... in order, so left padding does not shift them; pad
        slots keep their own index (with right padding this is exactly 0..T-1, as BERT)."""
        index = torch.arange(T, device=device).expand(B, T)
        if attention_mask is None:
            return index
        real = attention_mask.bool()
        return torch.where(real, attention_mask.long().cumsum(-1) - 1, index)

    # ---- pooling -----------------------------------------------------------------------------
    @staticmethod
    def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, D) -> (B, D): the average over real tokens only."""
        if attention_mask is None:
            return hidden.mean(dim=1)
        w = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        return (hidden * w).sum(dim=1) / w.sum(dim=1)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """What the classifier reads, (B, D): the first token (through the pooler's dense+tanh
        when there is one, as BERT) or the mean over real tokens, by ``config.pooling``."""
        if self.config.pooling == "mean":
            return self.mean_pool(hidden, attention_mask)
        first = hidden[:, 0]  # (B, D): [CLS]
        if attention_mask is not None:
            # The first *real* token, so a left-padded batch pools [CLS] too.
            start = attention_mask.long().argmax(dim=1)  # (B,)
            first = hidden[torch.arange(hidden.shape[0], device=hidden.device), start]
        return torch.tanh(self.pooler(first)) if self.pooler is not None else first

    def sentence_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                           token_type_ids: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        """(B, T) -> (B, D): mean of the last hidden states over real tokens; unit L2 norm if
        ``normalize`` (cosine similarity is then a dot product)."""
        emb = self.mean_pool(self.encode(input_ids, attention_mask, token_type_ids), attention_mask)
        return F.normalize(emb, p=2, dim=-1) if normalize else emb

    # ---- heads -------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> EncoderOutput:
        """Runs the encoder and every head the config has.

        labels (B,): class ids -> classification loss; labels (B, T): MLM targets, -100 where
        there is nothing to predict -> MLM loss (the mean over the predicted tokens).
        """
        if labels is not None:
            self._check_labels(labels, input_ids)
        hidden = self.encode(input_ids, attention_mask, token_type_ids)
        out = EncoderOutput(hidden=hidden)
        if self.classifier is not None:
            out.logits = self.classifier(self.drop(self.pool(hidden, attention_mask)))  # (B, C)
        if self.mlm_head is not None:
            out.mlm_logits = self.mlm_head(hidden, self.tok_emb.weight)  # (B, T, V)
        if labels is not None and labels.dim() == 1:
            out.loss = F.cross_entropy(out.logits.float(), labels)
        elif labels is not None:
            logits = out.mlm_logits.float().reshape(-1, self.config.vocab_size)
            flat = labels.reshape(-1)
            # Sum / count rather than the mean: a batch with no masked token gives 0, not NaN.
            n = (flat != IGNORE_INDEX).sum().clamp(min=1)
            out.loss = F.cross_entropy(logits, flat, ignore_index=IGNORE_INDEX, reduction="sum") / n
        return out

    # ---- checks ------------------------------------------------------------------------------
    def _check_inputs(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor | None:
        c = self.config
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"input_ids must be an int64/int32 tensor of token ids; got "
                            f"{getattr(input_ids, 'dtype', type(input_ids).__name__)}")
        if input_ids.dim() != 2 or input_ids.numel() == 0:
            raise ValueError(f"input_ids must have shape (batch, tokens) with at least one token; "
                             f"got {tuple(input_ids.shape)}")
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= c.vocab_size:
            raise ValueError(f"token id {lo if lo < 0 else hi} is outside the vocabulary [0, {c.vocab_size})")
        T = input_ids.shape[1]
        if c.position == "learned" and T > c.max_position:
            raise ValueError(f"input of {T} tokens is longer than the model's max_position={c.max_position}; "
                             "truncate it")
        if attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}; "
                                 f"got {tuple(getattr(attention_mask, 'shape', ()))}")
            attention_mask = attention_mask.bool() if attention_mask.dtype == torch.bool else attention_mask != 0
            empty = (~attention_mask.any(dim=1)).nonzero().flatten().tolist()
            if empty:
                raise ValueError(f"attention_mask rows {empty} have no real token (all padding)")
        if token_type_ids is not None:
            if self.seg_emb is None:
                raise ValueError("token_type_ids given, but the model has no segment embeddings "
                                 "(type_vocab_size=0)")
            if not isinstance(token_type_ids, torch.Tensor) or token_type_ids.shape != input_ids.shape:
                raise ValueError(f"token_type_ids must have the shape of input_ids {tuple(input_ids.shape)}; "
                                 f"got {tuple(getattr(token_type_ids, 'shape', ()))}")
            if int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= c.type_vocab_size:
                raise ValueError(f"token_type_ids must lie in [0, {c.type_vocab_size}); got "
                                 f"[{int(token_type_ids.min())}, {int(token_type_ids.max())}]")
        return attention_mask

    def _check_labels(self, labels, input_ids) -> None:
        B = input_ids.shape[0]
        if labels.dim() == 1:
            if self.classifier is None:
                raise ValueError("labels of shape (batch,) are class ids, but the model has no classifier "
                                 "(n_classes=0)")
            if labels.shape[0] != B:
                raise ValueError(f"labels must have shape ({B},); got {tuple(labels.shape)}")
            if int(labels.min()) < 0 or int(labels.max()) >= self.config.n_classes:
                raise ValueError(f"class labels must lie in [0, {self.config.n_classes}); got "
                                 f"[{int(labels.min())}, {int(labels.max())}]")
        elif labels.dim() == 2:
            if self.mlm_head is None:
                raise ValueError("labels of shape (batch, tokens) are MLM targets, but the model has no "
                                 "MLM head (mlm_head=False)")
            if labels.shape != input_ids.shape:
                raise ValueError(f"MLM labels must have the shape of input_ids {tuple(input_ids.shape)}; "
                                 f"got {tuple(labels.shape)}")
        else:
            raise ValueError(f"labels must be (batch,) class ids or (batch, tokens) MLM targets; got "
                             f"shape {tuple(labels.shape)}")

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def mask_tokens(input_ids: torch.Tensor, mask_id: int, vocab_size: int, special_ids: Sequence[int],
                prob: float = 0.15, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption for masked-language modelling: returns (inputs, labels), both (B, T).

    Each non-special token is selected with probability ``prob``; labels hold the original id at
    selected positions and -100 elsewhere. Of the selected: 80% become ``mask_id``, 10% a random
    non-special token, 10% stay as they are (so the model cannot learn that only [MASK] matters).
    Special ids (pad, [CLS], [SEP], [MASK], ...) are never selected nor drawn as replacements.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"input_ids must be an int64/int32 tensor; got "
                        f"{getattr(input_ids, 'dtype', type(input_ids).__name__)}")
    if not 0.0 < prob <= 1.0:
        raise ValueError(f"prob={prob!r} is out of range; allowed (0, 1]")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id={mask_id} is outside the vocabulary [0, {vocab_size})")
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise ValueError(f"input_ids must lie in [0, {vocab_size}); got "
                         f"[{int(input_ids.min())}, {int(input_ids.max())}]")
    special = torch.tensor(sorted({int(s) for s in special_ids} | {mask_id}), dtype=input_ids.dtype,
                           device=input_ids.device)
    ordinary = torch.ones(vocab_size, dtype=torch.bool, device=input_ids.device)
    ordinary[special[(special >= 0) & (special < vocab_size)]] = False
    pool = ordinary.nonzero().flatten()  # the ids a random replacement may take
    if pool.numel() == 0:
        raise ValueError("every id in the vocabulary is special; nothing to draw random replacements from")

    def uniform():
        return torch.rand(input_ids.shape, generator=generator, device=input_ids.device)

    selectable = ~torch.isin(input_ids, special)
    selected = selectable & (uniform() < prob)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = uniform()  # one draw decides mask (< 0.8), random (< 0.9) or keep
    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    pick = torch.randint(pool.numel(), input_ids.shape, generator=generator, device=input_ids.device)
    inputs = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    inputs = torch.where(to_random, pool[pick].to(input_ids.dtype), inputs)
    return inputs, labels
