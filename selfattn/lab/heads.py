"""heads: one attention head against several heads of the same total width, on a task that needs
two different relations at once (y_t combines x_{t-a} and x_{t-b}), in a one-layer GPT (so the
two lookups cannot be spread over two layers).

Seed's claim: several heads let one layer attend to different things at once, where one head
has a single softmax and must average them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..viz import record_attention
from .baselines import count_params, gpt_tagger
from .common import Budget, Finding, Settings, accuracy, figure, mean_std, pm, save, seeded, train
from .tasks import TwoRelationsTask

NAME = "heads"
TITLE = "Heads: one head vs several of the same total width"
CLAIM = "several heads attend to several relations at once"


def run(settings: Settings, out: Path) -> Finding:
    task = TwoRelationsTask(length=settings.pick(16, 16, 6))
    width = settings.pick(64, 32, 16)
    head_counts = settings.pick((1, 2, 4, 8), (1, 2, 4), (1, 2))
    budget = Budget(steps=settings.pick(800, 300, 3), batch=settings.pick(32, 32, 8), lr=3e-3)
    eval_n = settings.pick(512, 256, 8)
    acc: dict[int, list[float]] = {}
    params: dict[int, int] = {}
    maps: dict[int, torch.Tensor] = {}
    for h in head_counts:
        for seed in settings.seed_list:
            seeded(seed)
            model = gpt_tagger(task.vocab_size, task.n_classes, width, n_layer=1, n_head=h, position="rope",
                               block_size=task.length)
            train(model, task, budget, seed=seed)
            acc.setdefault(h, []).append(accuracy(model, task, seed=seed, n=eval_n))
            params[h] = count_params(model)
            if seed == settings.seed_list[0]:
                model.eval()
                with torch.no_grad(), record_attention(model) as layers:
                    model(task.sample(64, torch.Generator().manual_seed(0))[0])
                    maps[h] = layers[0].last_weights.mean(0)  # (H, T, T), averaged over the batch

    headers = ["heads", "head width", "parameters", "accuracy"]
    rows = [[str(h), str(width // h), f"{params[h]:,}", pm(acc[h])] for h in head_counts]
    fig, axes = figure(1 + len(head_counts[:2]), width=4.0)
    ms = [mean_std(acc[h]) for h in head_counts]
    axes[0].bar([str(h) for h in head_counts], [m for m, _ in ms], yerr=[s for _, s in ms], capsize=3)
    axes[0].set_xlabel(f"heads (total width {width})")
    axes[0].set_ylabel("accuracy")
    axes[0].set_ylim(0, 1.02)
    axes[0].set_title(f"y_t = (x_(t-{task.a}), x_(t-{task.b}))")
    for ax, h in zip(axes[1:], head_counts[:2]):
        # every head's map side by side: (T, H*T)
        w = maps[h]
        ax.imshow(torch.cat(list(w), dim=1).numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_title(f"{h} head(s): mean attention, heads side by side", fontsize=8)
        ax.set_xlabel("key position (per head)")
        ax.set_ylabel("query position")
    png = save(fig, out / f"{NAME}.png")

    m = {h: mean_std(acc[h])[0] for h in head_counts}
    best_multi = max(head_counts[1:], key=lambda h: m[h])
    agrees = m[best_multi] > m[1] + 0.05
    sentence = (f"With the same total width {width} in one layer, one head reaches {m[1]:.2f} accuracy and "
                f"{best_multi} heads {m[best_multi]:.2f} on a task needing x_(t-{task.a}) and x_(t-{task.b}) at once "
                f"(parameters equal: {params[1]:,} vs {params[best_multi]:,}).")
    data = {"accuracy": {str(h): v for h, v in acc.items()}, "params": {str(h): v for h, v in params.items()},
            "width": width}
    return Finding(NAME, TITLE, CLAIM, headers, rows, png, sentence, agrees, data=data)
