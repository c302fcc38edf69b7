"""The reference for fashion-vit: a 3-stage CNN trained by the same pipeline on the same split
(same validation images, augmentation, schedule shape and time budget: train.max_steps=0 fits
the cosine schedule to the 20 minutes)."""

from ..models.cnn import CNNConfig
from ..train import TrainConfig
from ..vision import CNNRunConfig, ImageDataConfig, run_vision_recipe

NAME = "fashion-cnn"
DESCRIPTION = "CNN baseline (3 conv stages, 32-64-128 channels) on Fashion-MNIST, same split and pipeline as fashion-vit"


def default_config() -> CNNRunConfig:
    return CNNRunConfig(
        recipe=NAME,
        arch="cnn",
        model=CNNConfig(image_size=28, n_classes=10, channels=(32, 64, 128), dropout=0.1),
        data=ImageDataConfig(dataset="fashion-mnist", val_fraction=0.1, random_crop=True, crop_padding=2,
                             hflip=True),
        train=TrainConfig(max_steps=0, batch_size=128, lr=2e-3, min_lr=1e-5, warmup_steps=200,
                          weight_decay=0.05, beta2=0.999, grad_clip=1.0, eval_every=500, eval_batches=24,
                          checkpoint_every=1000, max_minutes=20.0, dtype="float32", log_every=25),
        label_smoothing=0.1,
    )


def run(cfg: CNNRunConfig, run_dir, resume: bool = False) -> dict:
    return run_vision_recipe(cfg, run_dir, resume=resume)
