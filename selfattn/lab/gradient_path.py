"""gradient-path: how much the loss at the last position depends on the first token, against the
distance between them, for attention, an LSTM and a dilated causal CNN at equal parameters.

Measured at initialisation (seeded), on random tokens: the norm of d loss_T / d embedding_0,
divided by the norm of d loss_T / d embedding_T (the token's own), so families with different
output scales compare. Seed's claim: attention's path between any two positions is one step
long, so the signal from far tokens does not fade; an RNN's passes through T steps.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .baselines import build_family
from .common import Finding, Settings, errorbar, figure, mean_std, pm, save, seeded, token_loss

NAME = "gradient-path"
TITLE = "Gradient path: d loss(last) / d token(first) against distance"
CLAIM = "attention's path between any two tokens is O(1) long; an RNN's is O(T)"
FAMILIES = ("attention", "lstm", "cnn")


def first_token_influence(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    """‖∂ loss_last / ∂ emb_0‖ / ‖∂ loss_last / ∂ emb_last‖, mean over the batch. x (B, T), target (B,)."""
    grabbed = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        grabbed["emb"] = output  # (B, T, D)

    handle = model.tok_emb.register_forward_hook(keep)
    try:
        model.zero_grad(set_to_none=True)
        logits = model(x)  # (B, T, C)
        y = torch.full_like(x, -100)
        y[:, -1] = target
        token_loss(logits, y).backward()
    finally:
        handle.remove()
    g = grabbed["emb"].grad  # (B, T, D)
    first, last = g[:, 0].norm(dim=-1), g[:, -1].norm(dim=-1)  # (B,)
    return float((first / last.clamp(min=1e-30)).mean())


def run(settings: Settings, out: Path) -> Finding:
    distances = settings.pick((4, 16, 64, 256, 1024), (4, 16, 64, 256), (4, 8))
    width, n_layer, n_head, vocab, batch = settings.pick(64, 32, 16), 2, 4, 16, settings.pick(16, 8, 2)
    ratio: dict[tuple[str, int], list[float]] = {}
    for d in distances:
        T = d + 1
        for fam in FAMILIES:
            for seed in settings.seed_list:
                seeded(seed)
                model, _ = build_family(fam, vocab_size=vocab, n_classes=vocab, width=width, n_layer=n_layer,
                                        n_head=n_head, length=T, position="sinusoidal")
                g = torch.Generator().manual_seed(seed)
                x = torch.randint(0, vocab, (batch, T), generator=g)
                target = torch.randint(0, vocab, (batch,), generator=g)
                ratio.setdefault((fam, d), []).append(first_token_influence(model, x, target))

    headers = ["distance", *[f"{f} ratio" for f in FAMILIES]]
    rows = [[str(d), *[pm(ratio[(f, d)], "{:.2e}") for f in FAMILIES]] for d in distances]
    fig, axes = figure(1, width=5.5)
    for f in FAMILIES:
        # the log axis cannot show exact zeros: floor them (and say so in the label)
        errorbar(axes[0], list(distances), [[max(v, 1e-12) for v in ratio[(f, d)]] for d in distances], f)
    axes[0].set_xscale("log", base=2)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("distance from the first token to the last (tokens)")
    axes[0].set_ylabel("‖∂L/∂x_first‖ / ‖∂L/∂x_last‖ (floored at 1e-12)")
    axes[0].grid(alpha=0.3)
    axes[0].legend()
    png = save(fig, out / f"{NAME}.png")

    m = {k: mean_std(v)[0] for k, v in ratio.items()}
    near, far = distances[0], distances[-1]
    drop = {f: m[(f, far)] / m[(f, near)] if m[(f, near)] > 0 else float("nan") for f in FAMILIES}
    agrees = m[("attention", far)] > m[("lstm", far)] and drop["attention"] > drop["lstm"]
    sentence = (f"From distance {near} to {far} the first token's relative gradient changes by a factor "
                f"{drop['attention']:.2g} for attention, {drop['lstm']:.2g} for the LSTM and {drop['cnn']:.2g} for "
                f"the CNN; at {far} it is {m[('attention', far)]:.2g} (attention) vs {m[('lstm', far)]:.2g} (LSTM).")
    data = {"distances": list(distances), "ratio": {f"{f}|{d}": v for (f, d), v in ratio.items()}}
    return Finding(NAME, TITLE, CLAIM, headers, rows, png, sentence, agrees, data=data)
