"""The models attention is compared with, and the transformers themselves, behind one interface:
``model(ids (B, T)) -> logits (B, T, C)``, with the token embedding at ``model.tok_emb``.

- ``RNNTagger``: an LSTM or GRU over the sequence (causal by construction: O(T) sequential steps);
- ``DilatedCausalCNN``: 1-D convolutions, kernel k, dilation doubling per layer, left padding only
  (causal); the receptive field is 1 + (k-1)(2^L - 1), so L = ceil(log2 T) layers cover T tokens;
- ``gpt_tagger``: the library's GPT with ``n_classes`` outputs (no tied embeddings).

``match_width`` finds the width at which a baseline has the transformer's parameter count (±10%).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import init_normal_
from ..models.gpt import GPT, GPTConfig

RNN_KINDS = ("lstm", "gru")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class RNNTagger(nn.Module):
    def __init__(self, vocab_size: int, n_classes: int, width: int, n_layer: int = 2, kind: str = "lstm"):
        super().__init__()
        if kind not in RNN_KINDS:
            raise ValueError(f"kind={kind!r} is not allowed; choose one of {RNN_KINDS}")
        self.kind = kind
        self.tok_emb = nn.Embedding(vocab_size, width)
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn(width, width, num_layers=n_layer, batch_first=True)
        self.head = nn.Linear(width, n_classes)

    def sequential_ops(self, T: int) -> int:
        """Steps that must run one after another: every token, in every layer (a wavefront could
        overlap layers, T + L - 1, but cuDNN/CPU kernels run layer by layer)."""
        return T * self.rnn.num_layers

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.tok_emb(ids))  # (B, T, W)
        return self.head(h)  # (B, T, C)


class CausalConvBlock(nn.Module):
    """Pre-norm residual block: LayerNorm -> dilated causal conv -> GELU -> pointwise conv."""

    def __init__(self, width: int, kernel: int, dilation: int):
        super().__init__()
        self.pad = (kernel - 1) * dilation  # all on the left: position t sees t, t-d, t-2d, ...
        self.norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(width, width, kernel, dilation=dilation)
        self.mix = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, W)
        h = self.norm(x).transpose(1, 2)  # (B, W, T)
        h = self.conv(F.pad(h, (self.pad, 0)))  # (B, W, T)
        h = self.mix(F.gelu(h)).transpose(1, 2)  # (B, T, W)
        return x + h


class DilatedCausalCNN(nn.Module):
    def __init__(self, vocab_size: int, n_classes: int, width: int, n_layer: int, kernel: int = 3):
        super().__init__()
        if n_layer < 1 or kernel < 2:
            raise ValueError(f"need n_layer >= 1 and kernel >= 2; got n_layer={n_layer}, kernel={kernel}")
        self.kernel = kernel
        self.tok_emb = nn.Embedding(vocab_size, width)
        self.blocks = nn.ModuleList(CausalConvBlock(width, kernel, 2 ** i) for i in range(n_layer))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_classes)

    @property
    def receptive_field(self) -> int:
        return 1 + (self.kernel - 1) * (2 ** len(self.blocks) - 1)

    def sequential_ops(self, T: int) -> int:
        return len(self.blocks)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(ids)  # (B, T, W)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # (B, T, C)


def cnn_layers_for(length: int, kernel: int = 3) -> int:
    """Fewest dilated layers whose receptive field covers ``length`` tokens."""
    n = 1
    while 1 + (kernel - 1) * (2 ** n - 1) < length:
        n += 1
    return n


def gpt_tagger(vocab_size: int, n_classes: int, width: int, n_layer: int, n_head: int, *,
               position: str = "learned", block_size: int = 1024, init_std: float = 0.02) -> GPT:
    """The library's GPT, its output layer resized to ``n_classes`` (untied: classes need not be tokens).
    Sinusoidal positions get the original transformer's sqrt(width) scaling of the token embeddings
    (otherwise the table drowns them and the comparison would test the scaling, not the positions)."""
    cfg = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                    n_embd=width, position=position, tie_embeddings=False, dropout=0.0, init_std=init_std,
                    sinusoidal_scale_input=position == "sinusoidal")
    model = GPT(cfg)
    if n_classes != vocab_size:
        model.lm_head = nn.Linear(width, n_classes, bias=False)
        init_normal_(model.lm_head, init_std)
    model.sequential_ops = lambda T, n=n_layer: n  # every position of a layer at once
    return model


def match_width(build: Callable[[int], nn.Module], target: int, *, tolerance: float = 0.10,
                lo: int = 2, hi: int = 4096) -> tuple[int, nn.Module]:
    """The width w (in [lo, hi]) whose ``build(w)`` has the parameter count closest to ``target``;
    raises ValueError when even that one is more than ``tolerance`` away. Parameters grow with
    width, so a bisection finds the crossing and its two neighbours are compared."""
    if target < 1:
        raise ValueError(f"target={target!r} parameters is not allowed; give an int >= 1")
    # grow from the smallest width (never build a huge model), then bisect the last doubling
    a, b = lo, lo
    while b < hi and count_params(build(b)) < target:
        a, b = b, min(2 * b, hi)
    while b - a > 1:
        mid = (a + b) // 2
        if count_params(build(mid)) < target:
            a = mid
        else:
            b = mid
    best_w, best = min(((w, build(w)) for w in {a, b}), key=lambda wm: abs(count_params(wm[1]) - target))
    n = count_params(best)
    if abs(n - target) > tolerance * target:
        raise ValueError(f"no width in [{lo}, {hi}] gives {target} parameters within {tolerance:.0%} "
                         f"(closest: width {best_w} with {n})")
    return best_w, best


def build_family(family: str, *, vocab_size: int, n_classes: int, width: int, n_layer: int, n_head: int,
                 length: int, position: str = "learned") -> tuple[nn.Module, nn.Module | None]:
    """(model, reference transformer) for one family at the transformer's size: "attention" is
    the GPT itself; "lstm"/"gru"/"cnn" have their width matched to its parameter count."""
    gpt = gpt_tagger(vocab_size, n_classes, width, n_layer, n_head, position=position,
                     block_size=max(length, 1))
    if family == "attention":
        return gpt, None
    target = count_params(gpt)
    if family in RNN_KINDS:
        return match_width(lambda w: RNNTagger(vocab_size, n_classes, w, n_layer, family), target)[1], gpt
    if family == "cnn":
        layers = cnn_layers_for(length)
        return match_width(lambda w: DilatedCausalCNN(vocab_size, n_classes, w, layers), target)[1], gpt
    raise ValueError(f"family={family!r} is not allowed; choose one of {FAMILIES}")


FAMILIES = ("attention", "lstm", "gru", "cnn")


def describe(model: nn.Module) -> str:
    if isinstance(model, GPT):
        c = model.config
        return f"GPT {c.n_layer}x{c.n_embd} h{c.n_head} {c.position}"
    if isinstance(model, RNNTagger):
        return f"{model.kind.upper()} {model.rnn.num_layers}x{model.rnn.hidden_size}"
    if isinstance(model, DilatedCausalCNN):
        return f"CNN {len(model.blocks)}x{model.tok_emb.embedding_dim} rf{model.receptive_field}"
    return type(model).__name__
