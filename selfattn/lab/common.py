"""What every lab experiment shares: its size settings, one light training loop (the same AdamW,
schedule and budget for every model family), accuracy, statistics over seeds, and its result.

The loop is deliberately small: the lab trains hundreds of tiny models on synthetic data drawn on
the fly, with no checkpoints or validation curves, so ``selfattn.train.Trainer`` (built for long
resumable runs) would be all overhead; it reuses the Trainer's schedule (``lr_at``) and its AdamW
parameter groups (``weight_decay_groups``) so "the same trainer" means the same optimisation.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..train import TrainConfig, lr_at, weight_decay_groups
from .tasks import IGNORE, generator

SIZES = ("full", "quick", "tiny")


@dataclass(frozen=True)
class Settings:
    """How big to run: "full" (the committed report), "quick" (minutes for all seven), "tiny"
    (seconds; the smoke test). ``seeds``: how many seeds each measurement is repeated over."""

    size: str = "full"
    seeds: int = 3

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(f"size={self.size!r} is not allowed; choose one of {SIZES}")
        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or self.seeds < 1:
            raise ValueError(f"--seeds {self.seeds!r} is not allowed; give an int >= 1")

    def pick(self, full, quick, tiny):
        return {"full": full, "quick": quick, "tiny": tiny}[self.size]

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds))


@dataclass(frozen=True)
class Budget:
    """Same for every family in a comparison: steps of ``batch`` sequences, AdamW at ``lr`` with
    warm-up and cosine decay (the Trainer's schedule), gradient clipping at 1."""

    steps: int
    batch: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01

    def train_config(self) -> TrainConfig:
        return TrainConfig(max_steps=self.steps, batch_size=self.batch, lr=self.lr, min_lr=self.lr / 10,
                           warmup_steps=max(1, self.steps // 10), weight_decay=self.weight_decay,
                           progress=False)


@dataclass
class Finding:
    """One experiment's result: its table, its figure, and the sentence that says what it shows."""

    name: str
    title: str
    claim: str  # the seed's claim under test, in a few words
    headers: list[str]
    rows: list[list[str]]
    png: Path
    sentence: str  # what the numbers show, computed from them
    agrees: bool | None  # with the seed's claim; None = the numbers cannot tell
    seconds: float = 0.0
    data: dict = field(default_factory=dict)  # the raw numbers (written as JSON)
    threads: int | None = None  # torch's CPU threads while it ran (None: this process's)


def token_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the targeted positions. logits (B, T', C) may cover only the last T'
    positions of y (B, T) (a sequence classifier gives T' = 1)."""
    y = y[:, y.shape[1] - logits.shape[1]:]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)


@torch.no_grad()
def accuracy(model: nn.Module, task, *, seed: int, n: int = 512, batch: int = 256) -> float:
    """Fraction of targeted positions predicted exactly, on ``n`` fresh sequences (eval stream)."""
    model.eval()
    g = generator(seed, "eval")
    right = total = 0
    for start in range(0, n, batch):
        x, y = task.sample(min(batch, n - start), g)
        logits = model(x)
        y = y[:, y.shape[1] - logits.shape[1]:]
        keep = y != IGNORE
        right += int((logits.argmax(-1) == y)[keep].sum())
        total += int(keep.sum())
    model.train()
    return right / max(total, 1)


def train(model: nn.Module, task, budget: Budget, *, seed: int) -> dict:
    """Train on fresh draws of ``task`` (seeded): returns final loss and wall-clock seconds."""
    cfg = budget.train_config()
    opt = torch.optim.AdamW(weight_decay_groups(model, cfg.weight_decay), lr=cfg.lr,
                            betas=(cfg.beta1, cfg.beta2))
    g = generator(seed, "train")
    model.train()
    losses = []
    t0 = time.perf_counter()
    # One bar per model trained (a full lab run trains hundreds): rate and ETA on a terminal,
    # nothing in a log file (disable=None turns tqdm off when stderr is not a TTY).
    bar = tqdm(range(cfg.max_steps), desc=f"{type(model).__name__} seed {seed}", unit="step", leave=False,
               disable=None)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        x, y = task.sample(cfg.batch_size, g)
        loss = token_loss(model(x), y)
        if not torch.isfinite(loss):
            losses.append(float("nan"))
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    bar.close()
    tail = losses[-max(1, len(losses) // 10):]
    return {"loss": sum(tail) / len(tail), "seconds": time.perf_counter() - t0, "steps": len(losses),
            "losses": losses}


def seeded(seed: int) -> None:
    """Model initialisation for one seed (data has its own generators)."""
    torch.manual_seed(seed)


def mean_std(values) -> tuple[float, float]:
    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def pm(values, fmt: str = "{:.2f}") -> str:
    """"mean ± std" over seeds (just the mean for one seed)."""
    m, s = mean_std(values)
    if m != m:
        return "n/a"
    return fmt.format(m) if len(values) == 1 else f"{fmt.format(m)} ± {fmt.format(s)}"


def figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    from .. import viz  # noqa: F401  (selects the Agg backend)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, axes[0]


def save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def errorbar(ax, xs, per_seed: list[list[float]], label: str, **kw) -> None:
    """Mean over seeds with a ±1 std band; per_seed[i] holds every seed's value at xs[i]."""
    ms = [mean_std(v) for v in per_seed]
    ax.errorbar(xs, [m for m, _ in ms], yerr=[s for _, s in ms], label=label, capsize=3, marker="o", ms=3, **kw)
