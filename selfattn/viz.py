"""Pictures of what attention does: loss curves and attention maps, as PNG (matplotlib, Agg)."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .layers import MultiHeadAttention  # noqa: E402


@contextlib.contextmanager
def record_attention(model: torch.nn.Module):
    """Within the block, every self-attention layer keeps its last weights; yields the list of
    layers in order (read ``layer.last_weights``, (B, H, Tq, Tk))."""
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention) and not m.cross]
    for m in layers:
        m.record_weights = True
    try:
        yield layers
    finally:
        for m in layers:
            m.record_weights = False


def plot_loss(metrics_path: str | Path, out: str | Path, title: str = "loss") -> Path:
    train, val = [], []
    for line in Path(metrics_path).read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            train.append((rec["step"], rec["loss"]))
        if "val_loss" in rec:
            val.append((rec["step"], rec["val_loss"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", lw=1.5, ms=3)
        best = min(v for _, v in val)
        ax.axhline(best, color="gray", ls=":", lw=1)
        ax.text(ax.get_xlim()[0], best, f" best val {best:.3f}", va="bottom", fontsize=8, color="gray")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def plot_heads(weights: torch.Tensor, tokens: list[str], out: str | Path, title: str = "") -> Path:
    """weights (H, Tq, Tk) -> a grid of heatmaps, one per head, tokens on both axes."""
    H = weights.shape[0]
    cols = min(H, 4)
    rows = math.ceil(H / cols)
    T = len(tokens)
    size = max(2.5, min(6.0, 0.18 * T))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size), squeeze=False)
    labels = [t.replace("\n", "⏎").replace(" ", "␣") for t in tokens]
    for h in range(rows * cols):
        ax = axes[h // cols][h % cols]
        if h >= H:
            ax.axis("off")
            continue
        ax.imshow(weights[h].float().cpu().numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"head {h}", fontsize=9)
        ax.set_xticks(range(T))
        ax.set_yticks(range(T))
        ax.set_xticklabels(labels, fontsize=6, rotation=90)
        ax.set_yticklabels(labels, fontsize=6)
        ax.set_xlabel("key (attended to)", fontsize=7)
        ax.set_ylabel("query", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


@torch.no_grad()
def plot_lm_attention(model, tokenizer, text: str, out: str | Path, layer: int = -1) -> Path:
    """Attention of every head of one layer of a GPT over ``text``."""
    ids = tokenizer.encode(text)[: model.config.block_size]
    if not ids:
        raise ValueError("text for the attention picture encodes to no tokens")
    model.eval()
    with record_attention(model) as layers:
        model(torch.tensor([ids], device=next(model.parameters()).device))
        w = layers[layer].last_weights[0]  # (H, T, T)
    tokens = [tokenizer.decode([i]) for i in ids]
    n = len(layers)
    return plot_heads(w, tokens, out, title=f"layer {layer % n + 1} of {n}: attention weights per head")
