"""The vision pipeline's pieces: batches that are a pure function of their key (augmentation
included), flips only where they keep the label, the CNN baseline, image reading rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfattn.config import ConfigError, apply_overrides
from selfattn.models.cnn import CNN, CNNConfig
from selfattn.vision import (CNNRunConfig, ImageDataConfig, ImageSplits, ImageTask, VisionRunConfig, augment,
                             confusion_matrix, read_image, run_config_from_dict, synthetic_quadrant)
from selfattn.train import weight_decay_groups


def splits(n=64, size=12, seed=0) -> ImageSplits:
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (3, n, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (3, n), generator=g)
    return ImageSplits({s: imgs[i] for i, s in enumerate(("train", "val", "test"))},
                       {s: labels[i] for i, s in enumerate(("train", "val", "test"))}, 255)


def task(dataset="fashion-mnist", hflip=True, seed=5, **kw) -> ImageTask:
    data = ImageDataConfig(dataset=dataset, hflip=hflip, mean=0.5, std=0.25, **kw)
    return ImageTask(splits(), data, seed)


def test_batches_are_a_pure_function_of_the_key_augmentation_included():
    a, b = task(), task()
    for index in (0, 3, 7):  # index 7 crosses into a later epoch of the 64 training images
        xa, ya = a.batch("train", index, 10)
        _ = b.batch("train", index + 1, 10)  # b's history differs; the batch must not
        xb, yb = b.batch("train", index, 10)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x1, _ = a.batch("train", 1, 10)
    x2, _ = task(seed=6).batch("train", 1, 10)
    assert not torch.equal(x1, x2)  # another seed, other batches
    assert not torch.equal(a.batch("train", 1, 10)[0], a.batch("train", 2, 10)[0])


def test_rows_slice_the_same_batch():
    t = task()
    x, y = t.batch("train", 2, 8)
    xs, ys = t.batch("train", 2, 8, rows=slice(4, 8))
    assert torch.equal(xs, x[4:8]) and torch.equal(ys, y[4:8])


def test_training_stream_visits_every_image_once_an_epoch():
    t = task()
    seen = torch.cat([t.indices("train", i, 16) for i in range(4)])  # 64 images, 4 batches of 16
    assert sorted(seen.tolist()) == list(range(64))
    assert t.indices("val", 0, 16).tolist() == list(range(16))  # evaluation walks in order


def test_validation_is_not_augmented_and_is_normalised():
    t = task()
    x, y = t.batch("val", 0, 8)
    raw = t.splits.images["val"][:8].float() / 255
    torch.testing.assert_close(x[:, 0], (raw - 0.5) / 0.25)
    assert torch.equal(y, t.splits.labels["val"][:8])


def test_random_crop_is_a_shift_with_background_padding():
    data = ImageDataConfig(dataset="mnist-5k", random_crop=True, crop_padding=2, mean=0.0, std=1.0)
    x = torch.rand(50, 10, 10)
    out = augment(x, torch.Generator().manual_seed(0), data)
    for b in range(50):  # each output is the input shifted by some (dy, dx) in [-2, 2]^2, zeros elsewhere
        padded = torch.nn.functional.pad(x[b], (2, 2, 2, 2))
        assert any(torch.equal(out[b], padded[dy:dy + 10, dx:dx + 10]) for dy in range(5) for dx in range(5))
    assert not torch.equal(out, x)


def test_horizontal_flip_only_for_fashion_mnist():
    x = torch.rand(200, 6, 6)
    g = torch.Generator().manual_seed(1)
    fashion = ImageDataConfig(dataset="fashion-mnist", random_crop=False, hflip=True)
    out = augment(x, g, fashion)
    flipped = torch.tensor([torch.equal(out[b], x[b].flip(-1)) for b in range(200)])
    kept = torch.tensor([torch.equal(out[b], x[b]) for b in range(200)])
    assert (flipped | kept).all() and 60 < int(flipped.sum()) < 140
    for dataset in ("mnist-5k", "digits", "synthetic-quadrant"):
        with pytest.raises(ConfigError, match="hflip=True is only allowed"):
            ImageDataConfig(dataset=dataset, hflip=True)
        plain = ImageDataConfig(dataset=dataset, random_crop=False, hflip=False)
        assert torch.equal(augment(x, torch.Generator().manual_seed(1), plain), x)


def test_synthetic_quadrant_labels_name_the_bright_quadrant():
    images, labels = synthetic_quadrant(40, 8, seed=3)
    means = images.float().reshape(40, 2, 4, 2, 4).mean(dim=(2, 4)).reshape(40, 4)  # (N, quadrant)
    assert torch.equal(means.argmax(-1), labels)
    again, _ = synthetic_quadrant(40, 8, seed=3)
    assert torch.equal(images, again)


def test_confusion_matrix_counts_true_rows_predicted_columns():
    m = confusion_matrix(torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 0]), 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_cnn_baseline_forward_backward_and_learns():
    torch.manual_seed(0)
    model = CNN(CNNConfig(image_size=8, n_classes=4, channels=(8, 16), dropout=0.0))
    images, labels = synthetic_quadrant(64, 8, seed=0)
    x = (images.float() / 255 - 0.3)[:, None]  # (64, 1, 8, 8)
    logits, loss = model(x, labels)
    assert logits.shape == (64, 4) and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    groups = weight_decay_groups(model, 0.1)
    assert all(p.dim() >= 2 for p in groups[0]["params"]) and all(p.dim() < 2 for p in groups[1]["params"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = float(loss.detach())
    for _ in range(30):
        opt.zero_grad()
        _, loss = model(x, labels)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first * 0.5


def test_cnn_refuses_bad_input():
    model = CNN(CNNConfig(image_size=8, channels=(4,)))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(batch, 1, 8, 8\)"):
        model(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="too small"):
        CNNConfig(image_size=4, channels=(4, 4, 4))


def test_run_configs_round_trip_and_refuse_a_mismatched_model():
    for cfg in (VisionRunConfig(), CNNRunConfig()):
        from selfattn.config import to_dict
        assert run_config_from_dict(to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="needs a CNNConfig"):
        apply_overrides(VisionRunConfig(), ["arch=cnn"])
    assert apply_overrides(CNNRunConfig(), ["model.channels=4,8"]).model.channels == (4, 8)


def _png(path, array, mode=None):
    from PIL import Image

    Image.fromarray(array).save(path) if mode is None else Image.fromarray(array).convert(mode).save(path)
    return path


def test_read_image_rules(tmp_path):
    grey = np.zeros((16, 16), dtype=np.uint8)
    grey[:8, :8] = 255
    x = read_image(_png(tmp_path / "g.png", grey), 16)
    assert x.shape == (16, 16) and float(x[0, 0]) == 1.0 and float(x[-1, -1]) == 0.0
    assert torch.equal(read_image(tmp_path / "g.png", 16, invert=True), 1 - x)
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 1] = 255  # pure green: luminance 0.587
    assert abs(float(read_image(_png(tmp_path / "c.png", rgb), 16)[3, 3]) - 0.587) < 1e-3
    rgba = np.concatenate([np.full((16, 16, 3), 255, np.uint8), np.full((16, 16, 1), 128, np.uint8)], -1)
    assert abs(float(read_image(_png(tmp_path / "a.png", rgba), 16)[0, 0]) - 128 / 255) < 1e-3  # over black
    big = np.kron(grey, np.ones((2, 2), np.uint8))  # 32x32: shrunk with a box filter to the same picture
    torch.testing.assert_close(read_image(_png(tmp_path / "big.png", big), 16), x)
    with pytest.raises(ValueError, match="--size-policy exact needs 16x16"):
        read_image(tmp_path / "big.png", 16, size_policy="exact")
    with pytest.raises(ValueError, match="is 16x12"):
        read_image(_png(tmp_path / "wide.png", np.zeros((12, 16), np.uint8)), 16)
    with pytest.raises(ValueError, match="mode 'CMYK'"):
        from PIL import Image
        Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
        read_image(tmp_path / "cmyk.jpg", 16)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        read_image(tmp_path / "text.png", 16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image(tmp_path / "missing.png", 16)


@pytest.mark.parametrize("name, arch, dataset", [("fashion-vit", "vit", "fashion-mnist"),
                                                 ("fashion-cnn", "cnn", "fashion-mnist"),
                                                 ("mnist-vit", "vit", "mnist-5k")])
def test_vision_recipes_are_registered_and_round_trip(name, arch, dataset):
    from selfattn.config import to_dict
    from selfattn.recipes import get_recipe

    cfg = get_recipe(name).default_config()
    assert (cfg.recipe, cfg.arch, cfg.data.dataset) == (name, arch, dataset)
    assert cfg.data.hflip == (dataset == "fashion-mnist")
    assert run_config_from_dict(to_dict(cfg)) == cfg
    cfg.data.check_available()  # the data packages of the set-up are installed
