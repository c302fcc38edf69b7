"""heads: one attention head against several heads of the same total width, on a task that needs
two different relations at once (y_t combines x_{t-a} and x_{t-b}), in a one-layer GPT (so the
two lookups cannot be spread over two layers).

Seed's claim: several heads let one layer attend to different things at once, where one head
has a single softmax and must split it.

What is measured is the claim itself, in the attention weights: how much of each head's
attention (averaged over queries t >= max(a, b) and a batch) falls on t-a and on t-b. The claim
agrees when a multi-head model that solves the task gives the two relations to two different
heads (each >= 0.5 of its head's attention) in every seed. Accuracy alone cannot test it: with
unequal weights (say 2/3 and 1/3) one head's weighted sum still tells which symbol was where,
and at width 64 one head does solve the task (an earlier version of this experiment scored
accuracy only and found 1.00 for one head and for two).
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
    mass: dict[int, list[list[list[float]]]] = {}  # heads -> per seed -> per head [on t-a, on t-b]
    for h in head_counts:
        for seed in settings.seed_list:
            seeded(seed)
            model = gpt_tagger(task.vocab_size, task.n_classes, width, n_layer=1, n_head=h, position="rope",
                               block_size=task.length)
            train(model, task, budget, seed=seed)
            acc.setdefault(h, []).append(accuracy(model, task, seed=seed, n=eval_n))
            params[h] = count_params(model)
            model.eval()
            with torch.no_grad(), record_attention(model) as layers:
                model(task.sample(64, torch.Generator().manual_seed(0))[0])
                w = layers[0].last_weights.mean(0)  # (H, T, T), averaged over the batch
            mass.setdefault(h, []).append(relation_mass(w, task.a, task.b).tolist())
            if seed == settings.seed_list[0]:
                maps[h] = w

    split = {h: [two_heads_split(m) for m in mass[h]] for h in head_counts}
    headers = ["heads", "head width", "parameters", "accuracy", f"attention on t-{task.a} / t-{task.b}, per head (seed 0)",
               "relations on separate heads"]
    rows = [[str(h), str(width // h), f"{params[h]:,}", pm(acc[h]), _describe_mass(mass[h][0]),
             f"{sum(split[h])}/{len(split[h])} seeds"] for h in head_counts]
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
    solved = [h for h in head_counts[1:] if m[h] >= 0.9]
    separate = [h for h in solved if all(split[h])]
    agrees = bool(separate) if solved else None
    if separate:
        outcome = (f"with {', '.join(map(str, separate))} heads the two relations go to two different heads "
                   f"in every seed ({', '.join(f'{h} heads: {m[h]:.2f}' for h in separate)} accuracy).")
    elif solved:
        outcome = "multi-head models solve it without giving the relations to separate heads."
    else:
        outcome = "no multi-head model solved the task in this budget."
    one = mass[1][0][0]
    sentence = (f"With the same total width {width} in one layer, on a task needing x_(t-{task.a}) and "
                f"x_(t-{task.b}) at once: one head reaches {m[1]:.2f} accuracy (its attention: "
                f"{one[0]:.2f} on t-{task.a}, {one[1]:.2f} on t-{task.b}, seed 0); {outcome}")
    data = {"accuracy": {str(h): v for h, v in acc.items()}, "params": {str(h): v for h, v in params.items()},
            "width": width, "relation_mass": {str(h): v for h, v in mass.items()},
            "separate_heads": {str(h): v for h, v in split.items()}}
    return Finding(NAME, TITLE, CLAIM, headers, rows, png, sentence, agrees, data=data)


def relation_mass(w: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """(H, T, T) attention -> (H, 2): each head's mean weight on key t-a and on key t-b, over the
    queries t >= max(a, b) (where both exist)."""
    T = w.shape[-1]
    t = torch.arange(max(a, b), T)
    return torch.stack([w[:, t, t - a].mean(-1), w[:, t, t - b].mean(-1)], dim=-1)


def two_heads_split(mass: list[list[float]], threshold: float = 0.5) -> bool:
    """True when one head gives >= threshold of its attention to the first relation and a
    *different* head >= threshold to the second."""
    return any(mass[i][0] >= threshold and mass[j][1] >= threshold
               for i in range(len(mass)) for j in range(len(mass)) if i != j)


def _describe_mass(per_head: list[list[float]]) -> str:
    return "; ".join(f"{x:.2f}/{y:.2f}" for x, y in per_head)
