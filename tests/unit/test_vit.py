"""The vision transformer: patches, positions, errors, rollout, and a learned image rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfattn.config import ConfigError
from selfattn.models import ViT, ViTConfig
from selfattn.models.vit import attention_rollout, sinusoid_2d_table


def tiny(**overrides) -> ViT:
    torch.manual_seed(0)
    cfg = dict(image_size=8, patch_size=2, in_channels=1, n_classes=4, d_model=32, n_layer=2, n_head=4,
               ffn_hidden=64)
    cfg.update(overrides)
    return ViT(ViTConfig(**cfg)).eval()


def test_patch_embedding_shape_and_row_major_order():
    model = tiny(in_channels=3, image_size=8, patch_size=4)
    images = torch.randn(2, 3, 8, 12)  # a 2 x 3 grid of 4x4 patches
    tokens = model.patchify(images)
    assert tokens.shape == (2, 6, 32)
    W, b = model.patch_embed.weight, model.patch_embed.bias  # (D, C, p, p)
    for k in range(6):
        r, c = divmod(k, 3)  # row-major: patch k is at grid row k // gw, column k % gw
        patch = images[:, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4]  # (B, C, p, p)
        expected = patch.flatten(1) @ W.flatten(1).T + b  # a linear map of the flattened patch
        torch.testing.assert_close(tokens[:, k], expected, atol=1e-5, rtol=1e-5)


def test_conv_stem_feeds_the_patch_projection_at_full_resolution():
    """The hybrid: stride-1 convolutions keep H×W, so token k still covers patch k of the image,
    and only pixels inside the patch plus a (stem_convs)-pixel border can change token k."""
    model = tiny(stem_convs=2, stem_width=8, image_size=8, patch_size=4)
    assert model.patch_embed.in_channels == 8 and len(model.stem) == 6
    images = torch.randn(2, 1, 8, 12)
    tokens = model.patchify(images)
    assert tokens.shape == (2, 6, 32)
    torch.testing.assert_close(tokens, model.patch_embed(model.stem(images)).flatten(2).transpose(1, 2))
    changed = images.clone()
    changed[:, :, 6:, 10:] += 1.0  # the bottom-right corner: patch 5 (row 1, column 2) only
    moved = (model.patchify(changed) - tokens).abs().amax(dim=(0, 2))  # (6,)
    assert moved[5] > 0 and torch.all(moved[:5] == 0)  # the others lie beyond the 2-pixel reach of 2 convs
    with pytest.raises(ConfigError, match="model.stem_convs"):
        ViTConfig(stem_convs=-1)


@pytest.mark.parametrize("position", ["learned", "sinusoid2d"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_forward_loss_and_backward(position, pooling):
    model = tiny(position=position, pooling=pooling).train()
    images, labels = torch.randn(3, 1, 8, 8), torch.tensor([0, 3, 1])
    logits, loss = model(images, labels)
    assert logits.shape == (3, 4)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("position", ["learned", "sinusoid2d"])
def test_position_table_at_the_original_size_is_unchanged(position):
    model = tiny(position=position)
    g = model.config.grid
    table = model.grid_positions(g, g)
    if position == "learned":
        assert table is model.pos_grid
    else:
        coords = torch.arange(g, dtype=torch.float32)
        torch.testing.assert_close(table[0], sinusoid_2d_table(coords, coords, 32))


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_learned_positions_resample_smoothly(mode):
    model = tiny(interpolation=mode, image_size=16)  # an 8 x 8 grid
    g = model.config.grid
    with torch.no_grad():
        # A table that is a linear function of the patch centre: interpolation must reproduce it
        # exactly at the new centres (bilinear and bicubic are exact on linear functions).
        rows = torch.arange(g).float()[:, None].expand(g, g)
        cols = torch.arange(g).float()[None, :].expand(g, g)
        model.pos_grid.zero_()
        model.pos_grid[0, :, 0] = rows.reshape(-1)
        model.pos_grid[0, :, 1] = cols.reshape(-1)
    n = 2 * g
    big = model.grid_positions(n, n)[0].reshape(n, n, -1)  # (2g, 2g, D)
    centres = (torch.arange(n).float() + 0.5) / 2 - 0.5  # where the new patch centres fall
    # Only where the kernel's taps lie inside the grid (the border is clamped, not linear).
    reach = 2 if mode == "bicubic" else 1
    ok = (centres.floor() - (reach - 1) >= 0) & (centres.floor() + reach <= g - 1)
    want = centres[ok]
    # torch's bicubic kernel (a = -0.75) reproduces linear functions only approximately.
    tol = 1e-4 if mode == "bilinear" else 0.05
    torch.testing.assert_close(big[ok][:, ok, 0], want[:, None].expand(len(want), len(want)), atol=tol, rtol=0)
    torch.testing.assert_close(big[ok][:, ok, 1], want[None, :].expand(len(want), len(want)), atol=tol, rtol=0)
    assert (big[1:, :, 0] > big[:-1, :, 0]).all() and (big[:, 1:, 1] > big[:, :-1, 1]).all()  # order kept
    # A constant table stays constant everywhere, borders included (the weights sum to 1).
    with torch.no_grad():
        model.pos_grid.fill_(0.3)
    torch.testing.assert_close(model.grid_positions(n, n - 2), torch.full((1, n * (n - 2), 32), 0.3))


def quadrant_batch(n, g, size=8):
    """Noise images with one bright quadrant; the label is the quadrant (0 TL, 1 TR, 2 BL, 3 BR)."""
    labels = torch.randint(0, 4, (n,), generator=g)
    images = 0.3 * torch.randn(n, 1, size, size, generator=g)
    h = size // 2
    for i, q in enumerate(labels.tolist()):
        r, c = divmod(q, 2)
        images[i, 0, r * h:(r + 1) * h, c * h:(c + 1) * h] += 1.0
    return images, labels


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = tiny().train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(120):
            images, labels = quadrant_batch(64, g)
            _, loss = model(images, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        yield model.eval()
    finally:
        torch.set_num_threads(threads)


def test_learns_which_quadrant_is_bright(trained):
    images, labels = quadrant_batch(400, torch.Generator().manual_seed(1))
    with torch.no_grad():
        accuracy = (trained(images).argmax(-1) == labels).float().mean().item()
    assert accuracy >= 0.95, accuracy


def test_upsampled_images_keep_their_predictions(trained):
    """The same image at 2x resolution (a 8x8 grid of patches instead of 4x4, positions
    interpolated) is still classified the same way."""
    images, labels = quadrant_batch(200, torch.Generator().manual_seed(2))
    big = F.interpolate(images, scale_factor=2, mode="nearest")  # (B, 1, 16, 16)
    with torch.no_grad():
        small_pred = trained(images).argmax(-1)
        big_pred = trained(big).argmax(-1)
    assert (big_pred == small_pred).float().mean().item() >= 0.9
    assert (big_pred == labels).float().mean().item() >= 0.9


def test_attention_rollout(trained):
    images, labels = quadrant_batch(4, torch.Generator().manual_seed(3))
    heat, R = attention_rollout(trained, images, return_matrix=True)
    assert heat.shape == (4, 4, 4) and R.shape == (4, 17, 17)
    torch.testing.assert_close(R.sum(-1), torch.ones(4, 17))
    torch.testing.assert_close(heat.sum((1, 2)), torch.ones(4))
    assert (heat >= 0).all()
    assert all(not b.attn.record_weights and b.attn.last_weights is None for b in trained.blocks)
    assert not trained.training


def test_rollout_of_uniform_attention_is_uniform():
    model = tiny(n_layer=3)
    with torch.no_grad():
        for block in model.blocks:  # zero queries and keys: every token attends equally to all
            block.attn.qkv_proj.weight[:64].zero_()
            block.attn.qkv_proj.bias[:64].zero_()
    heat = attention_rollout(model, torch.randn(2, 1, 8, 8))
    torch.testing.assert_close(heat, torch.full((2, 4, 4), 1 / 16))
    heat_mean = attention_rollout(tiny(pooling="mean"), torch.randn(1, 1, 8, 8))
    assert heat_mean.shape == (1, 4, 4)


def test_bad_images_get_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match=r"\(batch, 1, H, W\).*got 3 dims"):
        model(torch.randn(1, 8, 8))
    with pytest.raises(ValueError, match="1 channel.*got 3 channels"):
        model(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="multiples of patch_size=2.*got 8x7"):
        model(torch.randn(2, 1, 8, 7))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[0.0]])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        model(torch.randn(2, 1, 8, 8), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"labels must have shape"):
        model(torch.randn(2, 1, 8, 8), torch.tensor([0]))
    with pytest.raises(ConfigError, match="divisible by model.patch_size"):
        ViTConfig(image_size=10, patch_size=4)
    with pytest.raises(ConfigError, match="sinusoid2d"):
        ViTConfig(d_model=30, n_head=3, position="sinusoid2d")
    with pytest.raises(ConfigError, match="pooling"):
        ViTConfig(pooling="max")
