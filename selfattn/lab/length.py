"""length: train at length L on a task defined at every length (y_t = x_{t-lag}), then test at
L, 2L, 4L, 8L, with learned, sinusoidal, RoPE, ALiBi and no positions.

Seed's claim: sinusoidal encodings may let the model reach lengths never seen in training.
Learned positions get a table long enough for the longest test, but the rows past L are never
trained (they stay at their random initialisation), which is what "learned" means beyond L.
"""

from __future__ import annotations

from pathlib import Path

from .baselines import gpt_tagger
from .common import Budget, Finding, Settings, accuracy, errorbar, figure, mean_std, pm, save, seeded, train
from .tasks import DelayedEchoTask

NAME = "length"
TITLE = "Length extrapolation: train at L, test at 2L, 4L, 8L"
CLAIM = "sinusoidal encodings extrapolate to lengths unseen in training"
POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "none")


def run(settings: Settings, out: Path) -> Finding:
    L = settings.pick(32, 16, 6)
    factors = (1, 2, 4, 8)
    width, n_layer, n_head = settings.pick(64, 32, 16), 2, settings.pick(4, 4, 2)
    budget = Budget(steps=settings.pick(600, 200, 3), batch=settings.pick(32, 32, 8), lr=3e-3)
    eval_n = settings.pick(256, 128, 8)
    task = DelayedEchoTask(L)
    acc: dict[tuple[str, int], list[float]] = {}
    for position in POSITIONS:
        for seed in settings.seed_list:
            seeded(seed)
            model = gpt_tagger(task.vocab_size, task.n_classes, width, n_layer, n_head, position=position,
                               block_size=L * factors[-1])
            train(model, task, budget, seed=seed)
            for f in factors:
                acc.setdefault((position, f), []).append(accuracy(model, task.at_length(f * L), seed=seed, n=eval_n))

    headers = ["position", *[f"acc @ {f * L}" for f in factors]]
    rows = [[p, *[pm(acc[(p, f)]) for f in factors]] for p in POSITIONS]
    fig, axes = figure(1, width=5.5)
    for p in POSITIONS:
        errorbar(axes[0], [f * L for f in factors], [acc[(p, f)] for f in factors], p)
    axes[0].axvline(L, color="gray", ls=":", lw=1)
    axes[0].set_xscale("log", base=2)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_xlabel(f"test length (trained at {L})")
    axes[0].set_ylabel(f"accuracy (y_t = x_(t-{task.lag}))")
    axes[0].grid(alpha=0.3)
    axes[0].legend()
    png = save(fig, out / f"{NAME}.png")

    m = {k: mean_std(v)[0] for k, v in acc.items()}
    kept = {p: (m[(p, 8)] / m[(p, 1)] if m[(p, 1)] > 0 else 0.0) for p in POSITIONS}
    best = max(POSITIONS, key=lambda p: m[(p, 8)])
    # the claim: sinusoidal keeps (most of) its accuracy past L, and better than learned positions do;
    # a model that did not learn the task at L says nothing about extrapolation
    learned_at_L = m[("sinusoidal", 1)] >= 0.5
    agrees = (kept["sinusoidal"] >= 0.9 and m[("sinusoidal", 8)] > m[("learned", 8)]) if learned_at_L else None
    sentence = (f"At 8L={8 * L} tokens (trained at {L}) the models keep "
                + ", ".join(f"{p} {kept[p]:.0%}" for p in POSITIONS)
                + f" of their accuracy at L; the best at 8L is {best} ({m[(best, 8)]:.2f}), sinusoidal reaches "
                f"{m[('sinusoidal', 8)]:.2f}"
                + ("." if learned_at_L else f" but only {m[('sinusoidal', 1)]:.2f} at L (not learned in this budget)."))
    data = {"L": L, "factors": list(factors), "accuracy": {f"{p}|{f}": v for (p, f), v in acc.items()}}
    return Finding(NAME, TITLE, CLAIM, headers, rows, png, sentence, agrees, data=data)
