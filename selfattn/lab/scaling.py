"""scaling: why the scores are divided by √d.

1. For q, k with independent unit-variance entries, q·k has variance d: the unscaled scores
   spread as √d and the softmax saturates (its largest weight goes to 1, its gradient to 0);
   q·k/√d keeps variance 1 at every width.
2. The same one-head GPT trained with and without the factor at growing head width d. The
   model is initialised so that queries and keys have unit-variance entries (init_std = 1/√d,
   the regime the seed's argument is about; at GPT-2's tiny 0.02 the scores start near 0 either
   way). "Without" multiplies the queries by √d, which cancels the library's 1/√d exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..layers import MultiHeadAttention
from .baselines import gpt_tagger
from .common import Budget, Finding, Settings, accuracy, errorbar, figure, mean_std, pm, save, seeded, train
from .tasks import AssociativeRecallTask

NAME = "scaling"
TITLE = "Scaling: dot products with and without 1/√d"
CLAIM = "dividing by √d keeps the softmax out of saturation as d grows"


def score_statistics(d: int, *, seed: int, n_keys: int = 32, n: int = 2048) -> dict:
    """Variance of q·k and the mean largest softmax weight, unscaled and scaled, for unit-variance q, k."""
    g = torch.Generator().manual_seed(seed * 7919 + d)
    q = torch.randn(n, 1, d, generator=g, dtype=torch.float64)
    k = torch.randn(n, n_keys, d, generator=g, dtype=torch.float64)
    s = (q @ k.transpose(1, 2))[:, 0]  # (n, n_keys)
    out = {}
    for name, scores in (("unscaled", s), ("scaled", s / math.sqrt(d))):
        w = scores.softmax(-1)
        out[f"var_{name}"] = float(scores.var())
        out[f"maxw_{name}"] = float(w.max(-1).values.mean())
    return out


def unscale(model: torch.nn.Module) -> list:
    """Multiply every self-attention layer's queries by √head_dim (a forward hook on its fused
    q/k/v projection): the library then computes q·k unscaled. Returns the hook handles."""
    handles = []
    for m in model.modules():
        if isinstance(m, MultiHeadAttention) and not m.cross:
            D, factor = m.dim, math.sqrt(m.head_dim)

            def hook(_mod, _inp, out, D=D, factor=factor):
                return torch.cat([out[..., :D] * factor, out[..., D:]], dim=-1)

            handles.append(m.qkv_proj.register_forward_hook(hook))
    return handles


def run(settings: Settings, out: Path) -> Finding:
    widths = settings.pick((16, 64, 256, 1024), (16, 64, 256), (8, 16))
    train_widths = settings.pick((16, 64, 256), (16, 64), (8,))
    budget = Budget(steps=settings.pick(600, 200, 3), batch=settings.pick(32, 32, 8), lr=1e-3)
    task = AssociativeRecallTask(distance=settings.pick(8, 8, 2))
    eval_n = settings.pick(512, 256, 16)
    stats = {d: [score_statistics(d, seed=s) for s in settings.seed_list] for d in widths}
    acc: dict[tuple[str, int], list[float]] = {}
    loss: dict[tuple[str, int], list[float]] = {}
    for d in train_widths:
        for variant in ("scaled", "unscaled"):
            for seed in settings.seed_list:
                seeded(seed)
                model = gpt_tagger(task.vocab_size, task.n_classes, d, n_layer=2, n_head=1, position="learned",
                                   block_size=task.length, init_std=1 / math.sqrt(d))
                if variant == "unscaled":
                    unscale(model)
                r = train(model, task, budget, seed=seed)
                loss.setdefault((variant, d), []).append(r["loss"])
                acc.setdefault((variant, d), []).append(accuracy(model, task, seed=seed, n=eval_n))

    headers = ["d", "var(q·k)", "var(q·k/√d)", "max weight unscaled", "max weight scaled",
               "acc scaled", "acc unscaled", "loss scaled", "loss unscaled"]
    rows = []
    for d in widths:
        col = lambda key: pm([s[key] for s in stats[d]])  # noqa: E731
        trained = [pm(acc[("scaled", d)]), pm(acc[("unscaled", d)]), pm(loss[("scaled", d)]),
                   pm(loss[("unscaled", d)])] if d in train_widths else ["-"] * 4
        rows.append([str(d), col("var_unscaled"), col("var_scaled"), col("maxw_unscaled"), col("maxw_scaled"), *trained])
    fig, axes = figure(3, width=4.2)
    for variant in ("unscaled", "scaled"):
        errorbar(axes[0], list(widths), [[s[f"var_{variant}"] for s in stats[d]] for d in widths], variant)
        errorbar(axes[1], list(widths), [[s[f"maxw_{variant}"] for s in stats[d]] for d in widths], variant)
        errorbar(axes[2], list(train_widths), [acc[(variant, d)] for d in train_widths], variant)
    for ax, (title, ylabel) in zip(axes, (("score variance", "var"), ("softmax saturation (32 keys)", "mean max weight"),
                                         ("trained: associative recall", "accuracy"))):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("head width d")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend()
    png = save(fig, out / f"{NAME}.png")

    big = widths[-1]
    v_un, v_sc = (mean_std([s[k] for s in stats[big]])[0] for k in ("var_unscaled", "var_scaled"))
    w_un, w_sc = (mean_std([s[k] for s in stats[big]])[0] for k in ("maxw_unscaled", "maxw_scaled"))
    dt = train_widths[-1]
    a_sc, a_un = mean_std(acc[("scaled", dt)])[0], mean_std(acc[("unscaled", dt)])[0]
    l_sc, l_un = mean_std(loss[("scaled", dt)])[0], mean_std(loss[("unscaled", dt)])[0]
    variance_ok = 0.5 * big < v_un < 2 * big and 0.5 < v_sc < 2 and w_un > w_sc
    training_ok = (a_sc > a_un + 0.02) or (a_sc >= a_un and l_sc < l_un)
    agrees = variance_ok and training_ok
    sentence = (f"At d={big} unscaled scores have variance {v_un:.0f} (scaled: {v_sc:.2f}) and the softmax puts "
                f"{w_un:.2f} on its largest weight (scaled: {w_sc:.2f}); trained at d={dt}, the model with 1/√d "
                f"reaches accuracy {a_sc:.2f} (loss {l_sc:.2f}) and without it {a_un:.2f} (loss {l_un:.2f}).")
    data = {"widths": list(widths), "stats": {str(d): v for d, v in stats.items()},
            "accuracy": {f"{v}|{d}": x for (v, d), x in acc.items()},
            "loss": {f"{v}|{d}": x for (v, d), x in loss.items()}}
    return Finding(NAME, TITLE, CLAIM, headers, rows, png, sentence, agrees, data=data)
