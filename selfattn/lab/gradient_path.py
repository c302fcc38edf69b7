"""gradient-path: how much the loss at the last position depends on the first token, against the
distance between them, for attention, an LSTM and a dilated causal CNN at equal parameters.

The norm of d loss_T / d embedding_0, divided by the norm of d loss_T / d embedding_T (the
token's own), so families with different output scales compare; measured twice: at
initialisation on random tokens (each family at its usual initialisation), and after the same
short training on a copy task whose answer at the last position *is* the first token (so the
path from the first token is the one that must carry the signal). Seed's claim: attention's path between any two positions is one step
long, so the signal from far tokens does not fade; an RNN's passes through T steps.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .baselines import build_family
from .tasks import CopyTask, generator
from .common import Budget, Finding, Settings, errorbar, figure, mean_std, pm, save, seeded, token_loss, train

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
    distances = settings.pick((4, 16, 64, 256), (4, 16, 64), (4, 8))
    width, n_layer, n_head, batch = settings.pick(64, 32, 16), 2, 4, settings.pick(32, 16, 2)
    budget = Budget(steps=settings.pick(300, 100, 2), batch=settings.pick(32, 32, 4))
    ratio: dict[tuple[str, str, int], list[float]] = {}
    for d in distances:
        task = CopyTask(distance=d, k=1)  # x_0, d blanks, go: answer x_0 at the last position
        for fam in FAMILIES:
            for seed in settings.seed_list:
                seeded(seed)
                model, _ = build_family(fam, vocab_size=task.vocab_size, n_classes=task.n_classes, width=width,
                                        n_layer=n_layer, n_head=n_head, length=task.length, position="sinusoidal")
                for when in ("init", "trained"):
                    if when == "trained":
                        train(model, task, budget, seed=seed)
                    x, y = task.sample(batch, generator(seed, "probe"))
                    ratio.setdefault((when, fam, d), []).append(first_token_influence(model, x, y[:, -1]))

    headers = ["distance", *[f"{f} {w}" for w in ("init", "trained") for f in FAMILIES]]
    rows = [[str(d), *[pm(ratio[(w, f, d)], "{:.1e}") for w in ("init", "trained") for f in FAMILIES]]
            for d in distances]
    fig, axes = figure(2, width=4.8)
    for ax, when in zip(axes, ("init", "trained")):
        for f in FAMILIES:
            # a log axis cannot show exact zeros: floor them (and say so in the label)
            errorbar(ax, list(distances), [[max(v, 1e-12) for v in ratio[(when, f, d)]] for d in distances], f)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("distance first -> last token")
        ax.set_title("at initialisation" if when == "init" else f"after {budget.steps} steps of copying x_0")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("|dL/dx_first| / |dL/dx_last| (floor 1e-12)")
    axes[0].legend()
    png = save(fig, out / f"{NAME}.png")

    m = {k: mean_std(v)[0] for k, v in ratio.items()}
    near, far = distances[0], distances[-1]
    drop = {f: m[("trained", f, far)] / m[("trained", f, near)] if m[("trained", f, near)] > 0 else float("nan")
            for f in FAMILIES}
    agrees = m[("trained", "attention", far)] > m[("trained", "lstm", far)] and drop["attention"] > drop["lstm"]
    sentence = (f"After training to copy the first token, its relative gradient at the last position changes by a "
                f"factor {drop['attention']:.2g} for attention, {drop['lstm']:.2g} for the LSTM and {drop['cnn']:.2g} "
                f"for the CNN from distance {near} to {far}, where it is {m[('trained', 'attention', far)]:.2g} "
                f"(attention) vs {m[('trained', 'lstm', far)]:.2g} (LSTM); at initialisation "
                f"{m[('init', 'attention', far)]:.2g} vs {m[('init', 'lstm', far)]:.2g}.")
    data = {"distances": list(distances), "ratio": {f"{w}|{f}|{d}": v for (w, f, d), v in ratio.items()},
            "budget": {"steps": budget.steps, "batch": budget.batch, "lr": budget.lr}}
    return Finding(NAME, TITLE, CLAIM, headers, rows, png, sentence, agrees, data=data)
