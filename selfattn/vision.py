"""Image classification end to end: images -> ViT (or the CNN baseline) -> Trainer -> test accuracy
+ pictures.

Splits: validation is carved from the training images (``data.val_fraction``, fixed by
``data.split_seed``) and chooses the best checkpoint; the test images are touched once, after
training, for the final number. Pixels are scaled to [0, 1] and standardised with the mean and
standard deviation of the training split, which are stored in the run's config.json so that
``classify-image`` reads new images exactly as training did.

Batches are a pure function of (seed, split, index), augmentation included: the training stream is
a sequence of seeded permutations of the training images, and the crop offsets and flips of batch
``index`` come from a generator seeded by the same key. A resumed run therefore sees the very
batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import ConfigError, check_choice, check_range, from_dict, save_json
from .models.cnn import CNN, CNNConfig
from .models.vit import ViT, ViTConfig
from .train import TrainConfig, Trainer, resolve_dtype

DATASETS = ("fashion-mnist", "mnist-5k", "digits", "synthetic-quadrant")
ARCHS = ("vit", "cnn")
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass
class ImageDataConfig:
    dataset: str = "fashion-mnist"
    val_fraction: float = 0.1
    split_seed: int = 0  # fixes the train/validation split (and the synthetic images)
    random_crop: bool = True  # shift by up to crop_padding pixels: pad with background, crop back
    crop_padding: int = 2
    hflip: bool = False  # mirror half of the images; Fashion-MNIST only (a mirrored digit is not a digit)
    synthetic_size: int = 16  # synthetic-quadrant: image side
    synthetic_count: int = 2400  # synthetic-quadrant: training images (the test set is a quarter of that)
    mean: float | None = None  # of the training pixels in [0, 1]; filled in by the pipeline
    std: float | None = None

    def __post_init__(self):
        check_choice("data.dataset", self.dataset, DATASETS)
        check_range("data.val_fraction", self.val_fraction, 0.0, 0.5, lo_open=True)
        check_range("data.crop_padding", self.crop_padding, 0)
        check_range("data.synthetic_size", self.synthetic_size, 4)
        check_range("data.synthetic_count", self.synthetic_count, 8)
        if self.hflip and self.dataset != "fashion-mnist":
            raise ConfigError(f"data.hflip=True is only allowed for data.dataset='fashion-mnist' (a mirrored "
                              f"{self.dataset} image can change its label); got data.dataset={self.dataset!r}; "
                              "set data.hflip=false")
        if self.std is not None:
            check_range("data.std", self.std, 0.0, lo_open=True)

    def check_available(self) -> None:
        """Fail before any work when the images cannot be read, saying what to install
        (``selfattn train`` calls this; not in __post_init__, so a config still prints without data)."""
        from .data import images as im

        if self.dataset == "fashion-mnist":
            missing = [p for p in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")
                       if not (im.FASHION_DIR / p).is_file()]
            if missing:
                raise ConfigError(f"data.dataset='fashion-mnist' needs {im.FASHION_DIR / missing[0]}; install it "
                                  f"with: {im.FASHION_HINT}")
        elif self.dataset == "mnist-5k":
            try:
                im._mnist_5k_path()
            except FileNotFoundError as e:
                raise ConfigError(f"data.dataset='mnist-5k': {e}") from None
        elif self.dataset == "digits":
            import importlib.util

            if importlib.util.find_spec("sklearn") is None:
                raise ConfigError("data.dataset='digits' needs scikit-learn; install it with: pip install scikit-learn")


@dataclass
class VisionRunConfig:
    recipe: str = "custom"
    arch: str = "vit"
    model: ViTConfig = field(default_factory=ViTConfig)
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    label_smoothing: float = 0.0  # training loss only; validation is plain cross-entropy

    def __post_init__(self):
        check_choice("arch", self.arch, ARCHS)
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0, hi_open=True)
        want = _ARCH_CONFIG[self.arch]
        if not isinstance(self.model, want):
            raise ConfigError(f"arch={self.arch!r} needs a {want.__name__} model section; got "
                              f"{type(self.model).__name__}")


@dataclass
class CNNRunConfig(VisionRunConfig):
    """The same run with the CNN baseline in the model section."""

    arch: str = "cnn"
    model: CNNConfig = field(default_factory=CNNConfig)


_ARCH_CONFIG = {"vit": ViTConfig, "cnn": CNNConfig}
_RUN_CONFIG = {"vit": VisionRunConfig, "cnn": CNNRunConfig}


def run_config_from_dict(data: dict) -> VisionRunConfig:
    arch = data.get("arch", "vit") if isinstance(data, dict) else None
    check_choice("arch", arch, ARCHS)
    return from_dict(_RUN_CONFIG[arch], data)


def build_model(cfg: VisionRunConfig) -> torch.nn.Module:
    if cfg.arch == "cnn":
        return CNN(cfg.model)
    return ViT(cfg.model)


# ---- data ------------------------------------------------------------------------------------
def class_names(dataset: str) -> tuple[str, ...]:
    check_choice("data.dataset", dataset, DATASETS)
    if dataset == "fashion-mnist":
        from .data.images import FASHION_CLASSES

        return FASHION_CLASSES
    if dataset == "synthetic-quadrant":
        return QUADRANTS
    return tuple(str(d) for d in range(10))


def synthetic_quadrant(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (uint8 (n, size, size)) of dim noise with one bright quadrant; the label is which
    quadrant (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.rand(n, size, size, generator=g) * 0.35  # (N, S, S) background noise
    h = size // 2
    for q in range(4):
        r, c = divmod(q, 2)
        sel = labels == q
        images[sel, r * h:(r + 1) * h, c * h:(c + 1) * h] += 0.45 + 0.2 * torch.rand(int(sel.sum()), 1, 1,
                                                                                      generator=g)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels


def load_dataset(dataset: str, synthetic_size: int = 16, synthetic_count: int = 2400, seed: int = 0):
    """{"train": (uint8 (N, H, W), int64 (N,)), "test": ...} and the pixel value that means white."""
    from .data import images as im

    check_choice("data.dataset", dataset, DATASETS)
    if dataset == "fashion-mnist":
        return {"train": im.fashion_mnist("train"), "test": im.fashion_mnist("test")}, 255
    if dataset == "mnist-5k":
        return im.mnist_holdout_split(seed), 255
    if dataset == "digits":
        x, y = im.sklearn_digits()
        kept, held = im.stratified_holdout(y, 0.2, seed)
        return {"train": (x[kept], y[kept]), "test": (x[held], y[held])}, 16
    train = synthetic_quadrant(synthetic_count, synthetic_size, seed)
    test = synthetic_quadrant(max(synthetic_count // 4, 4), synthetic_size, seed + 1_000_003)
    return {"train": train, "test": test}, 255


@dataclass
class ImageSplits:
    """uint8 images (N, H, W) and int64 labels per split, and the pixel value of white."""

    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    white: int

    @property
    def image_size(self) -> int:
        return self.images["train"].shape[-1]


def build_splits(cfg: ImageDataConfig) -> ImageSplits:
    from .data.images import train_val_split

    raw, white = load_dataset(cfg.dataset, cfg.synthetic_size, cfg.synthetic_count, cfg.split_seed)
    x, y = raw["train"]
    tr, va = train_val_split(len(y), cfg.val_fraction, seed=cfg.split_seed)
    images = {"train": x[tr], "val": x[va], "test": raw["test"][0]}
    labels = {"train": y[tr], "val": y[va], "test": raw["test"][1]}
    return ImageSplits(images, labels, white)


def pixel_stats(images: torch.Tensor, white: int) -> tuple[float, float]:
    """Mean and standard deviation of uint8 pixels scaled to [0, 1]."""
    x = images.double() / white
    return float(x.mean()), float(x.std())


def stable_seed(*key) -> int:
    """A seed from a key that is the same in every process (Python's hash() of a str is not)."""
    return zlib.crc32(repr(key).encode()) & 0x7FFF_FFFF


class ImageTask:
    """Classification batches keyed by (seed, split, index): (images (B, 1, H, W) float, labels (B,))."""

    def __init__(self, splits: ImageSplits, data: ImageDataConfig, seed: int, label_smoothing: float = 0.0):
        if data.mean is None or data.std is None:
            raise ValueError("data.mean and data.std must be set (pixel_stats of the training split)")
        self.splits, self.data, self.seed, self.label_smoothing = splits, data, seed, label_smoothing
        self._perms: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            n = len(self.splits.labels["train"])
            g = torch.Generator().manual_seed(stable_seed(self.seed, "epoch", epoch))
            self._perms[epoch] = torch.randperm(n, generator=g)
        return self._perms[epoch]

    def indices(self, split: str, index: int, size: int) -> torch.Tensor:
        """Which images batch ``index`` holds: training walks seeded permutations, one an epoch;
        validation and test walk the split in order (wrapping around)."""
        n = len(self.splits.labels[split])
        pos = torch.arange(index * size, (index + 1) * size)
        if split != "train":
            return pos % n
        epochs = pos // n
        out = torch.empty(size, dtype=torch.long)
        for e in epochs.unique().tolist():
            sel = epochs == e
            out[sel] = self._permutation(e)[pos[sel] % n]
        return out

    def batch(self, split, index, size, rows=None):
        if split not in _SPLIT_CODES:
            raise ValueError(f"split={split!r} is not allowed; choose one of {tuple(_SPLIT_CODES)}")
        idx = self.indices(split, index, size)
        x = self.splits.images[split][idx].float() / self.splits.white  # (B, H, W) in [0, 1]
        y = self.splits.labels[split][idx]
        if split == "train":
            g = torch.Generator().manual_seed(stable_seed(self.seed, split, index))
            x = augment(x, g, self.data)
        x = normalise(x, self.data)[:, None]  # (B, 1, H, W)
        if rows is not None:
            x, y = x[rows], y[rows]
        return x, y

    def loss(self, model, batch):
        x, y = batch
        logits = model(x)  # (B, n_classes)
        smoothing = self.label_smoothing if model.training else 0.0
        return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)

    def tokens(self, batch) -> int:
        return batch[0].shape[0]  # images


def augment(x: torch.Tensor, g: torch.Generator, data: ImageDataConfig) -> torch.Tensor:
    """x (B, H, W) in [0, 1] -> shifted (random crop of the zero-padded image) and, for
    Fashion-MNIST with data.hflip, mirrored with probability 1/2. Draws only from ``g``."""
    B, H, W = x.shape
    p = data.crop_padding if data.random_crop else 0
    if p:
        padded = F.pad(x, (p, p, p, p))  # (B, H + 2p, W + 2p), background 0
        dy = torch.randint(0, 2 * p + 1, (B,), generator=g)
        dx = torch.randint(0, 2 * p + 1, (B,), generator=g)
        rows = dy[:, None] + torch.arange(H)  # (B, H)
        cols = dx[:, None] + torch.arange(W)  # (B, W)
        x = padded[torch.arange(B)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, H, W)
    if data.hflip and data.dataset == "fashion-mnist":
        flip = torch.rand(B, generator=g) < 0.5
        x = torch.where(flip[:, None, None], x.flip(-1), x)
    return x


def normalise(x01: torch.Tensor, data: ImageDataConfig) -> torch.Tensor:
    return (x01 - data.mean) / data.std


# ---- training --------------------------------------------------------------------------------
def save_run_files(run_cfg: VisionRunConfig):
    def write(folder: Path) -> None:
        save_json(run_cfg, folder / "config.json")

    return write


def resolve_config(cfg: VisionRunConfig, splits: ImageSplits) -> VisionRunConfig:
    """Fill in what the data decides: image size, classes, channels, pixel statistics."""
    n_classes = len(class_names(cfg.data.dataset))
    model = replace(cfg.model, image_size=splits.image_size, n_classes=n_classes, in_channels=1)
    data = cfg.data
    if data.mean is None or data.std is None:
        mean, std = pixel_stats(splits.images["train"], splits.white)
        data = replace(data, mean=mean, std=std)
    return replace(cfg, model=model, data=data)


def check_before_training(cfg: VisionRunConfig) -> None:
    """Errors a user can fix, raised before any data is read: the model must fit the data's size."""
    size = {"digits": 8, "synthetic-quadrant": cfg.data.synthetic_size}.get(cfg.data.dataset, 28)
    if cfg.arch == "vit" and size % cfg.model.patch_size:
        raise ConfigError(f"model.patch_size={cfg.model.patch_size} does not divide the {size}x{size} images of "
                          f"data.dataset={cfg.data.dataset!r}")
    if cfg.arch == "cnn" and size < 2 ** len(cfg.model.channels):
        raise ConfigError(f"model.channels={cfg.model.channels} has too many pooling stages for {size}x{size} images")


def train_image_classifier(cfg: VisionRunConfig, run_dir: Path, *, resume: bool = False) -> dict:
    run_dir = Path(run_dir)
    if resume:  # the saved config wins: a resumed run must be the run that was started
        cfg = run_config_from_dict(json.loads((run_dir / "config.json").read_text()))
    check_before_training(cfg)
    splits = build_splits(cfg.data)
    cfg = resolve_config(cfg, splits)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg)
    task = ImageTask(splits, cfg.data, cfg.train.seed, cfg.label_smoothing)
    trainer = Trainer(model, task, cfg.train, run_dir, save_files=save_run_files(cfg))
    if trainer.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_json(cfg, run_dir / "config.json")
        n = {s: len(v) for s, v in splits.labels.items()}
        print(f"{cfg.arch}: {model.num_params() / 1e6:.3f} M parameters; {cfg.data.dataset} "
              f"{splits.image_size}x{splits.image_size}: train {n['train']:,}, val {n['val']:,}, "
              f"test {n['test']:,}; precision {trainer.amp_dtype}", file=sys.stderr)
    result = trainer.fit(resume=resume)
    result["params"] = model.num_params()
    return result


def load_image_classifier(run_or_checkpoint: str | Path, *, which: str = "best"):
    """A trained classifier from a run folder (its best checkpoint, else the newest) or a checkpoint
    folder: (model in eval mode, run config)."""
    from .checkpoint import load_weights

    ckpt = find_checkpoint(run_or_checkpoint, which=which)
    cfg = run_config_from_dict(json.loads((ckpt / "config.json").read_text()))
    model = build_model(cfg)
    load_weights(ckpt, model)
    return model.eval(), cfg


def find_checkpoint(run_or_checkpoint: str | Path, *, which: str = "best") -> Path:
    from .checkpoint import complete_checkpoints

    check_choice("which", which, ("best", "last"))
    path = Path(run_or_checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a run folder or a checkpoint folder)")
    if (path / "manifest.json").is_file():
        return path
    best = path / "checkpoints" / "best"
    if which == "best" and (best / "manifest.json").is_file():
        return best
    steps = complete_checkpoints(path / "checkpoints")
    if not steps:
        raise FileNotFoundError(f"{path} is not a run folder with a complete checkpoint "
                                "(no checkpoints/*/manifest.json)")
    return steps[-1]


def read_checkpoint_config(run_or_checkpoint: str | Path) -> VisionRunConfig:
    """The run config of the checkpoint ``load_image_classifier`` would load, without the weights."""
    ckpt = find_checkpoint(run_or_checkpoint)
    return run_config_from_dict(json.loads((ckpt / "config.json").read_text()))


# ---- evaluation ------------------------------------------------------------------------------
@torch.no_grad()
def predict(model, images: torch.Tensor, *, batch_size: int = 500, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """images (N, 1, H, W) normalised -> probabilities (N, n_classes) in float32."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            logits = model(images[i:i + batch_size])
        out.append(logits.float().softmax(-1))
    return torch.cat(out)


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(n_classes, n_classes) counts: row = true class, column = predicted class."""
    flat = labels * n_classes + predicted
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def evaluate_split(model, cfg: VisionRunConfig, splits: ImageSplits, split: str) -> dict:
    x = normalise(splits.images[split].float() / splits.white, cfg.data)[:, None]  # (N, 1, H, W)
    probs = predict(model, x, dtype=resolve_dtype(cfg.train.dtype, torch.device("cpu")))
    pred = probs.argmax(-1)
    y = splits.labels[split]
    n = len(class_names(cfg.data.dataset))
    return {"accuracy": float((pred == y).float().mean()), "n": len(y),
            "confusion": confusion_matrix(y, pred, n), "predicted": pred, "probs": probs}


def run_vision_recipe(cfg: VisionRunConfig, run_dir: Path, *, resume: bool = False) -> dict:
    """Train, reload the best checkpoint (chosen by validation loss), measure validation and then
    test accuracy, and write results.json, loss.png, confusion.png and (ViT) attention pictures."""
    from .viz import plot_loss

    result = train_image_classifier(cfg, run_dir, resume=resume)
    if int(os.environ.get("RANK", 0)) != 0:
        return result
    run_dir = Path(run_dir)
    model, saved = load_image_classifier(run_dir)
    splits = build_splits(saved.data)
    names = class_names(saved.data.dataset)
    val = evaluate_split(model, saved, splits, "val")
    test = evaluate_split(model, saved, splits, "test")  # the test set's only use: the final number
    plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png", title=f"{saved.recipe}: loss")
    plot_confusion(test["confusion"], names, run_dir / "confusion.png",
                   title=f"{saved.recipe}: test accuracy {test['accuracy']:.2%} (n={test['n']:,})")
    pictures = ["loss.png", "confusion.png"]
    if saved.arch == "vit":
        x = normalise(splits.images["test"][:8].float() / splits.white, saved.data)[:, None]
        plot_rollout_grid(model, x, splits.images["test"][:8], splits.labels["test"][:8],
                          test["predicted"][:8], names, run_dir / "rollout.png")
        plot_class_token_heads(model, x[:1], splits.images["test"][0], run_dir / "cls_attention.png",
                               title=f"true {names[int(splits.labels['test'][0])]}")
        pictures += ["rollout.png", "cls_attention.png"]
    results = {
        "recipe": saved.recipe, "arch": saved.arch, "dataset": saved.data.dataset, "params": result["params"],
        "steps": result["steps"], "stop_reason": result["stop_reason"],
        "train_minutes": round(result["train_seconds"] / 60, 2), "best_val_loss": result["best_val"],
        "val_accuracy": val["accuracy"], "n_val": val["n"],
        "test_accuracy": test["accuracy"], "n_test": test["n"],
        "classes": list(names), "confusion_test": test["confusion"].tolist(),
        "checkpoint": "checkpoints/best", "pictures": pictures,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"test accuracy {test['accuracy']:.2%} (validation {val['accuracy']:.2%}) after {result['steps']} "
          f"steps ({result['train_seconds'] / 60:.1f} min of training); run folder: {run_dir} "
          f"(results.json, {', '.join(pictures)}, checkpoints/)", file=sys.stderr)
    result.update(run_dir=str(run_dir), val_accuracy=val["accuracy"], test_accuracy=test["accuracy"])
    return result


# ---- pictures --------------------------------------------------------------------------------
def plot_confusion(matrix: torch.Tensor, names, out: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = matrix.float()
    share = m / m.sum(dim=1, keepdim=True).clamp(min=1)  # each row: where that class's images went
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.55 * n))
    ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def plot_rollout_grid(model: ViT, x: torch.Tensor, raw: torch.Tensor, labels, predicted, names,
                      out: str | Path) -> Path:
    """For each image: the image, and the attention rollout upsampled over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .models.vit import attention_rollout

    heat = attention_rollout(model, x)  # (B, gh, gw), each sums to 1
    B, H = len(x), raw.shape[-1]
    up = F.interpolate(heat[:, None], size=(H, H), mode="nearest")[:, 0]  # (B, H, W)
    fig, axes = plt.subplots(2, B, figsize=(1.6 * B, 3.6), squeeze=False)
    for b in range(B):
        axes[0][b].imshow(raw[b].numpy(), cmap="gray")
        axes[0][b].set_title(f"{names[int(labels[b])]}\n→ {names[int(predicted[b])]}", fontsize=7)
        axes[1][b].imshow(raw[b].numpy(), cmap="gray")
        axes[1][b].imshow(up[b].numpy(), cmap="inferno", alpha=0.6)
        for ax in (axes[0][b], axes[1][b]):
            ax.axis("off")
    fig.suptitle("test images (true → predicted) and attention rollout into the "
                 f"{'class token' if model.cls_token is not None else 'mean-pooled tokens'}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


@torch.no_grad()
def class_token_attention(model: ViT, x: torch.Tensor) -> torch.Tensor:
    """x (1, 1, H, W) -> (L, H_heads, gh, gw): how each head of each layer spreads the class token's
    attention over the patches (with mean pooling: the mean query's attention)."""
    from .viz import record_attention

    model.eval()
    with record_attention(model) as layers:
        model(x)
        maps = [layer.last_weights[0].float() for layer in layers]  # each (heads, T, T)
    p = model.config.patch_size
    gh, gw = x.shape[2] // p, x.shape[3] // p
    if model.cls_token is not None:
        rows = [w[:, 0, 1:] for w in maps]  # (heads, N)
    else:
        rows = [w.mean(dim=1) for w in maps]
    return torch.stack(rows).reshape(len(maps), -1, gh, gw)


def plot_class_token_heads(model: ViT, x: torch.Tensor, raw: torch.Tensor, out: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = class_token_attention(model, x)  # (L, heads, gh, gw)
    L, Hh = maps.shape[:2]
    fig, axes = plt.subplots(L, Hh + 1, figsize=(1.5 * (Hh + 1), 1.5 * L + 0.6), squeeze=False)
    for layer in range(L):
        axes[layer][0].imshow(raw.numpy(), cmap="gray")
        axes[layer][0].set_ylabel(f"layer {layer + 1}", fontsize=8)
        for h in range(Hh):
            axes[layer][h + 1].imshow(maps[layer, h].numpy(), cmap="viridis")
            if layer == 0:
                axes[layer][h + 1].set_title(f"head {h}", fontsize=8)
        for ax in axes[layer]:
            ax.set_xticks([])
            ax.set_yticks([])
    who = "class token" if model.cls_token is not None else "mean query"
    fig.suptitle(f"attention of the {who} over the patches, per layer and head ({title})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


# ---- single images (classify-image) -----------------------------------------------------------
SIZE_POLICIES = ("resize", "exact")
_GREY_MODES = {"1", "L", "I", "I;16", "F"}
_CONVERTIBLE_MODES = _GREY_MODES | {"LA", "P", "PA", "RGB", "RGBA"}


def read_image(path: str | Path, image_size: int, *, size_policy: str = "resize", invert: bool = False) -> torch.Tensor:
    """An image file as greyscale pixels in [0, 1], (image_size, image_size) float32.

    The rule: greyscale, grey+alpha, palette, RGB and RGBA images are accepted; colour becomes
    luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B) and transparency is composited over black,
    the background of the training images. Other modes (CMYK, YCbCr, ...) are refused. The image
    must be square: with ``size_policy='exact'`` it must already be image_size × image_size; with
    'resize' a square of another side is resampled (box filter when shrinking, bilinear when
    growing). ``invert`` turns dark-on-light drawings into the light-on-dark the datasets use.
    """
    check_choice("--size-policy", size_policy, SIZE_POLICIES)
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            mode, (w, h) = img.mode, img.size
            if mode not in _CONVERTIBLE_MODES:
                raise ValueError(f"image {path} has mode {mode!r} ({len(img.getbands())} channels "
                                 f"{''.join(img.getbands())}); allowed: greyscale, grey+alpha, palette, RGB, RGBA")
            if w != h:
                raise ValueError(f"image {path} is {w}x{h}; the model reads square {image_size}x{image_size} "
                                 "images (crop it to a square first)")
            if size_policy == "exact" and w != image_size:
                raise ValueError(f"image {path} is {w}x{h}; --size-policy exact needs {image_size}x{image_size}")
            grey = _to_grey(img)
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path} is not an image this reader accepts ({type(e).__name__})") from None
    except OSError as e:  # truncated or damaged file
        raise ValueError(f"{path} could not be decoded as an image ({e})") from None
    if grey.size != (image_size, image_size):
        method = Image.Resampling.BOX if grey.size[0] > image_size else Image.Resampling.BILINEAR
        grey = grey.resize((image_size, image_size), method)
    import numpy as np

    x = torch.from_numpy(np.asarray(grey, dtype=np.float32).copy())  # (S, S) in [0, 1]
    return 1.0 - x if invert else x


def _to_grey(img):
    """PIL image -> mode 'F' image with values in [0, 1]."""
    import numpy as np
    from PIL import Image

    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("I", "I;16", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode == "I;16" or a.max() > 255 else 255.0
        a = np.clip(a / top, 0, 1) if img.mode != "F" else np.clip(a, 0, 1)
        return Image.fromarray(a.astype(np.float32))
    if img.mode == "1":
        img = img.convert("L")
    a = np.asarray(img, dtype=np.float64) / 255.0  # (H, W) or (H, W, C)
    if a.ndim == 2:
        return Image.fromarray(a.astype(np.float32))
    colour, alpha = (a[..., :-1], a[..., -1]) if img.mode in ("LA", "RGBA") else (a, None)
    if colour.shape[-1] == 3:
        lum = colour @ np.array([0.299, 0.587, 0.114])
    else:
        lum = colour[..., 0]
    if alpha is not None:
        lum = lum * alpha  # over black
    return Image.fromarray(lum.astype(np.float32))


def classify_image(model, cfg: VisionRunConfig, pixels01: torch.Tensor, top_k: int = 1) -> list[tuple[str, float]]:
    """(S, S) pixels in [0, 1] -> the top_k (label, probability) pairs, most likely first."""
    names = class_names(cfg.data.dataset)
    x = normalise(pixels01, cfg.data)[None, None]  # (1, 1, S, S)
    probs = predict(model, x)[0]
    k = min(top_k, len(names))
    p, i = probs.topk(k)
    return [(names[int(c)], float(v)) for v, c in zip(p, i)]
