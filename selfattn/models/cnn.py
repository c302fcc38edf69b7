"""A small convolutional network: the reference a vision transformer's accuracy is read against.

image (B, C, H, W) -> per stage: 3×3 conv -> batch norm -> ReLU -> 2×2 max pool (halves H and W)
-> global average pool -> dropout -> linear head -> logits

Convolutions build in what attention has to learn: locality (a 3×3 window) and translation
equivariance (one kernel slid everywhere). Trained by the same pipeline on the same split, it
tells how much of a ViT's number is the architecture and how much is the data and the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, check_range


@dataclass
class CNNConfig:
    image_size: int = 28
    in_channels: int = 1
    n_classes: int = 10
    channels: tuple[int, ...] = (32, 64, 128)  # one conv stage each; every stage halves the image
    dropout: float = 0.1

    def __post_init__(self):
        for name in ("image_size", "in_channels", "n_classes"):
            check_range(f"model.{name}", getattr(self, name), 1)
        if not self.channels or any(not isinstance(c, int) or c < 1 for c in self.channels):
            raise ConfigError(f"model.channels={self.channels!r} is not allowed; give one or more ints >= 1")
        check_range("model.dropout", self.dropout, 0.0, 1.0, hi_open=True)
        if self.image_size < 2 ** len(self.channels):
            raise ConfigError(f"model.image_size={self.image_size} is too small for {len(self.channels)} "
                              f"pooling stages (needs >= {2 ** len(self.channels)})")


class CNN(nn.Module):
    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = c = config
        stages, width = [], c.in_channels
        for out in c.channels:
            stages += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(),
                       nn.MaxPool2d(2)]
            width = out
        self.stages = nn.Sequential(*stages)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(width, c.n_classes)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


    def check_images(self, images) -> None:
        c = self.config
        expected = f"(batch, {c.in_channels}, {c.image_size}, {c.image_size}) float"
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError(f"images must be a float torch.Tensor of shape {expected}; got "
                            f"{getattr(images, 'dtype', type(images).__name__)}")
        if images.dim() != 4 or images.shape[0] == 0 or images.shape[1] != c.in_channels \
                or min(images.shape[2:]) < 2 ** len(c.channels):
            raise ValueError(f"images must have shape {expected}; got {tuple(images.shape)}")

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        """images (B, C, H, W) float -> logits (B, n_classes) [or (logits, loss) with labels (B,)]."""
        self.check_images(images)
        x = self.stages(images)  # (B, C_last, H / 2^S, W / 2^S)
        x = x.mean(dim=(2, 3))  # (B, C_last): global average pool
        logits = self.head(self.drop(x))  # (B, n_classes)
        if labels is None:
            return logits
        return logits, F.cross_entropy(logits.float(), labels)
