"""The vision transformer (ViT, Dosovitskiy et al. 2020), readable top to bottom.

image (B, C, H, W) -> non-overlapping p×p patches, each projected to d_model (a strided Conv2d
is exactly "flatten the patch, multiply by a matrix") -> a sequence of (H/p)·(W/p) tokens in
row-major order -> [class token] + positions -> n_layer pre-norm blocks without a mask ->
final norm -> class token (or the mean of the patch tokens) -> linear head -> logits

Attention sees a set; the positions tell it where each patch came from: a learned table over the
patch grid, or a fixed 2-D sinusoidal one (half of the width encodes the row, half the column).
Images of another size than ``config.image_size`` give another grid: the learned table is
resampled over the grid (bicubic by default), the sinusoidal one evaluated at the matching
fractional coordinates, so a patch keeps the position of the same region of the image.

Optionally (``stem_convs > 0``) a few 3×3 convolutions at full resolution run before the patch
projection: the paper's "hybrid" model, where the strided projection reads patches of a CNN
feature map instead of raw pixels. On small images and a small compute budget the local features
they add are cheap (stride 1, few channels) and spare the attention layers from learning edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import BACKEND_NAMES
from ..block import BlockSpec, TransformerBlock
from ..config import ConfigError, check_choice, check_range
from ..positional import sinusoidal_table

VIT_POOLING = ("cls", "mean")
VIT_POSITIONS = ("learned", "sinusoid2d")
VIT_INTERPOLATION = ("bicubic", "bilinear")


@dataclass
class ViTConfig:
    image_size: int = 28  # square images of image_size × image_size pixels (at training time)
    patch_size: int = 4
    in_channels: int = 1
    n_classes: int = 10
    d_model: int = 64
    n_layer: int = 6
    n_head: int = 4
    ffn_hidden: int | None = None  # None = 4*d_model
    dropout: float = 0.0
    pooling: str = "cls"
    position: str = "learned"
    interpolation: str = "bicubic"  # how a learned table is resampled for another image size
    norm_eps: float = 1e-6
    init_std: float = 0.02
    attn_backend: str = "auto"
    stem_convs: int = 0  # 3×3 conv + BatchNorm + ReLU layers before the patch projection (0 = plain ViT)
    stem_width: int = 32  # their output channels

    def __post_init__(self):
        check_range("model.stem_convs", self.stem_convs, 0, 8)
        check_range("model.stem_width", self.stem_width, 1)
        for name in ("image_size", "patch_size", "in_channels", "n_classes", "d_model", "n_layer", "n_head"):
            check_range(f"model.{name}", getattr(self, name), 1)
        if self.ffn_hidden is not None:
            check_range("model.ffn_hidden", self.ffn_hidden, 1)
        check_choice("model.pooling", self.pooling, VIT_POOLING)
        check_choice("model.position", self.position, VIT_POSITIONS)
        check_choice("model.interpolation", self.interpolation, VIT_INTERPOLATION)
        check_choice("model.attn_backend", self.attn_backend, BACKEND_NAMES)
        check_range("model.dropout", self.dropout, 0.0, 1.0, hi_open=True)
        if self.image_size % self.patch_size:
            raise ConfigError(f"model.image_size={self.image_size} must be divisible by "
                              f"model.patch_size={self.patch_size}")
        if self.d_model % self.n_head:
            raise ConfigError(f"model.d_model={self.d_model} must be divisible by model.n_head={self.n_head}")
        if self.position == "sinusoid2d" and self.d_model % 4:
            raise ConfigError(f"model.position='sinusoid2d' needs model.d_model divisible by 4 (sin and cos "
                              f"for rows and columns); got {self.d_model}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def sinusoid_2d_table(rows: torch.Tensor, cols: torch.Tensor, dim: int) -> torch.Tensor:
    """(gh,) row and (gw,) column coordinates (may be fractional) -> (gh*gw, dim) in row-major
    order: the first dim/2 channels encode the row, the last dim/2 the column."""
    r = sinusoidal_table(rows, dim // 2)  # (gh, D/2)
    c = sinusoidal_table(cols, dim // 2)  # (gw, D/2)
    gh, gw = len(rows), len(cols)
    return torch.cat([r[:, None, :].expand(gh, gw, -1), c[None, :, :].expand(gh, gw, -1)], dim=-1).reshape(gh * gw, dim)


def _resampled_coords(new: int, old: int, device=None) -> torch.Tensor:
    """Where the centres of ``new`` cells fall on a grid of ``old`` cells (align_corners=False,
    the rule F.interpolate uses), so fixed and learned tables are moved the same way."""
    return (torch.arange(new, dtype=torch.float32, device=device) + 0.5) * (old / new) - 0.5


def conv_stem(in_channels: int, width: int, n: int) -> nn.Module:
    """``n`` × (3×3 conv, stride 1, same padding -> BatchNorm -> ReLU); identity when n = 0.
    Stride 1 keeps the image size, so patches, grids and position interpolation are unchanged."""
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1, bias=False),
                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class ViT(nn.Module):
    # kept out of weight decay by the Trainer (selfattn.train.weight_decay_groups), like biases
    no_weight_decay = ("pos_", "cls_token")

    def __init__(self, config: ViTConfig):
        super().__init__()
        c = self.config = config
        self.stem = conv_stem(c.in_channels, c.stem_width, c.stem_convs)  # (B, C, H, W) -> (B, C', H, W)
        stem_out = c.stem_width if c.stem_convs else c.in_channels
        self.patch_embed = nn.Conv2d(stem_out, c.d_model, kernel_size=c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.d_model)) if c.pooling == "cls" else None
        if c.position == "learned":
            self.pos_grid = nn.Parameter(torch.zeros(1, c.grid * c.grid, c.d_model))  # (1, N, D) row-major
            self.pos_cls = nn.Parameter(torch.zeros(1, 1, c.d_model)) if c.pooling == "cls" else None
        else:
            self.pos_grid, self.pos_cls = None, None  # fixed: computed for each grid (the class token gets none)
        self.drop = nn.Dropout(c.dropout)
        spec = BlockSpec(dim=c.d_model, n_head=c.n_head, ffn_hidden=c.ffn_hidden or 4 * c.d_model,
                         activation="gelu", norm="layernorm", norm_eps=c.norm_eps, prenorm=True,
                         dropout=c.dropout, backend=c.attn_backend)
        self.blocks = nn.ModuleList(TransformerBlock(spec) for _ in range(c.n_layer))
        self.norm_f = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.head = nn.Linear(c.d_model, c.n_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.config.init_std
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)
        # The patch projection is a linear map of the flattened patch: initialise it like one.
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        for p in (self.cls_token, self.pos_grid, self.pos_cls):
            if p is not None:
                nn.init.trunc_normal_(p, std=std)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- pieces ------------------------------------------------------------------------------
    def check_images(self, images) -> None:
        """Refuse what the model cannot read, before any work, saying what it expects."""
        c = self.config
        expected = (f"(batch, {c.in_channels}, H, W) float with H and W multiples of patch_size={c.patch_size} "
                    f"(trained at {c.image_size}x{c.image_size})")
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor of shape {expected}; got {type(images).__name__}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a float tensor (scale uint8 pixels to [0, 1] first) of shape "
                            f"{expected}; got dtype {images.dtype}")
        if images.dim() != 4:
            raise ValueError(f"images must have shape {expected}; got {images.dim()} dims {tuple(images.shape)}")
        B, C, H, W = images.shape
        if B == 0:
            raise ValueError(f"images must hold at least one image; got shape {tuple(images.shape)}")
        if C != c.in_channels:
            raise ValueError(f"images must have {c.in_channels} channel(s), shape {expected}; got {C} "
                             f"channels in {tuple(images.shape)}")
        if H < c.patch_size or W < c.patch_size or H % c.patch_size or W % c.patch_size:
            raise ValueError(f"image height and width must be positive multiples of patch_size={c.patch_size}, "
                             f"shape {expected}; got {H}x{W}")

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, gh*gw, D): patch k is the k-th patch in row-major order."""
        x = self.patch_embed(self.stem(images))  # (B, D, gh, gw)
        return x.flatten(2).transpose(1, 2)  # (B, gh*gw, D)

    def grid_positions(self, gh: int, gw: int) -> torch.Tensor:
        """(1, gh*gw, D) position vectors for a grid of gh × gw patches."""
        c, g = self.config, self.config.grid
        dev = self.patch_embed.weight.device
        if c.position == "sinusoid2d":
            rows, cols = _resampled_coords(gh, g, dev), _resampled_coords(gw, g, dev)
            return sinusoid_2d_table(rows, cols, c.d_model)[None].to(self.patch_embed.weight.dtype)
        if (gh, gw) == (g, g):
            return self.pos_grid
        table = self.pos_grid.reshape(1, g, g, c.d_model).permute(0, 3, 1, 2)  # (1, D, g, g)
        table = F.interpolate(table, size=(gh, gw), mode=c.interpolation, align_corners=False)  # (1, D, gh, gw)
        return table.flatten(2).transpose(1, 2)  # (1, gh*gw, D)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) -> normalised token states (B, [1 +] gh*gw, D)."""
        self.check_images(images)
        p = self.config.patch_size
        gh, gw = images.shape[2] // p, images.shape[3] // p
        x = self.patchify(images) + self.grid_positions(gh, gw)  # (B, N, D)
        if self.cls_token is not None:
            cls = self.cls_token + (self.pos_cls if self.pos_cls is not None else 0)
            x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)  # every patch sees every patch: no mask
        return self.norm_f(x)

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        """images (B, C, H, W) float -> logits (B, n_classes) [or (logits, loss) with labels (B,)]."""
        if labels is not None:
            self._check_labels(labels, images)
        x = self.features(images)
        pooled = x[:, 0] if self.cls_token is not None else x.mean(dim=1)  # (B, D)
        logits = self.head(pooled)  # (B, n_classes)
        if labels is None:
            return logits
        return logits, F.cross_entropy(logits.float(), labels)

    def _check_labels(self, labels, images) -> None:
        n = self.config.n_classes
        if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"labels must be an int64 tensor of class ids; got {getattr(labels, 'dtype', type(labels).__name__)}")
        if labels.dim() != 1 or (isinstance(images, torch.Tensor) and images.dim() >= 1
                                 and labels.shape[0] != images.shape[0]):
            raise ValueError(f"labels must have shape (batch,) matching the images; got {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n):
            raise ValueError(f"labels must lie in [0, {n}); got values in [{int(labels.min())}, {int(labels.max())}]")


@torch.no_grad()
def attention_rollout(model: ViT, images: torch.Tensor, *, return_matrix: bool = False):
    """Attention rollout (Abnar & Zuidema 2020): how much each patch flows into the class token.

    Per layer: A = mean over heads of the attention weights, plus the identity for the residual
    path, rows renormalised to sum to 1; the layers are chained R = A_L ··· A_1. Returns (B, gh, gw):
    the class token's row of R over the patches, renormalised to sum to 1 (with mean pooling, the
    mean of all rows). ``return_matrix=True`` also returns R (B, T, T), whose rows sum to 1.
    """
    model.check_images(images)
    attns = [block.attn for block in model.blocks]
    was_training = model.training
    model.eval()
    for a in attns:
        a.record_weights = True
    try:
        model.features(images)
        maps = [a.last_weights for a in attns]  # each (B, H, T, T)
    finally:
        for a in attns:
            a.record_weights, a.last_weights = False, None
        model.train(was_training)
    T = maps[0].shape[-1]
    eye = torch.eye(T, device=maps[0].device)
    R = eye.expand(maps[0].shape[0], T, T)
    for w in maps:
        A = w.float().mean(dim=1) + eye  # (B, T, T)
        A = A / A.sum(dim=-1, keepdim=True)
        R = A @ R
    p = model.config.patch_size
    gh, gw = images.shape[2] // p, images.shape[3] // p
    if model.cls_token is not None:
        flow = R[:, 0, 1:]  # (B, N): class token <- patches
    else:
        flow = R.mean(dim=1)  # (B, N)
    flow = flow / flow.sum(dim=-1, keepdim=True)
    heat = flow.reshape(-1, gh, gw)
    return (heat, R) if return_matrix else heat
