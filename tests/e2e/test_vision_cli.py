"""The image pipeline through the real CLI, shrunken: a ViT learns which quadrant of a synthetic
image is bright; classify-image reads a PNG written here; resume is exact; bad images are one
line and exit status 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

SMALL = ["data.dataset=synthetic-quadrant", "data.hflip=false", "data.synthetic_count=800",
         "data.synthetic_size=16", "model.image_size=16", "model.patch_size=4", "model.d_model=32", "model.n_layer=2",
         "model.n_head=2", "model.ffn_hidden=64", "model.position=sinusoid2d", "train.batch_size=32",
         "train.eval_batches=3", "train.warmup_steps=10", "train.lr=3e-3", "train.dtype=float32",
         "train.log_every=10", "train.progress=false"]


def cli(*args, check=True, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-m", "selfattn", *args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"selfattn {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


def cli_here(capsys, *args):
    """The same CLI in this process (no interpreter start-up): (exit status, stdout, stderr)."""
    from selfattn.cli import main

    status = main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out, out.err


def quadrant_png(path, quadrant: int, size: int = 16, scale: int = 1):
    from PIL import Image

    rng = np.random.default_rng(quadrant)
    img = rng.uniform(0, 0.3, (size, size))
    r, c = divmod(quadrant, 2)
    h = size // 2
    img[r * h:(r + 1) * h, c * h:(c + 1) * h] += 0.6
    img = np.kron(img, np.ones((scale, scale)))
    Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vision")
    run = tmp / "run"
    cli("train", "fashion-vit", *SMALL, "train.max_steps=150", "train.eval_every=50", "train.checkpoint_every=50",
        "--run-dir", str(run))
    return tmp, run


def test_vit_learns_the_quadrant_rule_and_writes_everything(trained):
    _, run = trained
    results = json.loads((run / "results.json").read_text())
    assert results["test_accuracy"] >= 0.95 and results["val_accuracy"] >= 0.95, results
    assert results["n_test"] == 200 and results["classes"][1] == "top-right"
    assert sum(map(sum, results["confusion_test"])) == 200
    vals = [json.loads(line)["val_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "val_loss" in line]
    assert len(vals) == 3 and vals[-1] < vals[0]
    for name in ("loss.png", "confusion.png", "rollout.png", "cls_attention.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (run / "checkpoints" / "best" / "config.json").is_file()


def test_classify_image_reads_a_png(trained, capsys):
    tmp, run = trained
    out = cli("classify-image", str(run), str(quadrant_png(tmp / "q1.png", 1))).stdout.split()  # the real CLI
    assert out[0] == "top-right" and 0.5 < float(out[1]) <= 1.0
    names = ("top-left", "top-right", "bottom-left", "bottom-right")
    for q in (0, 2, 3):
        status, stdout, _ = cli_here(capsys, "classify-image", run, quadrant_png(tmp / f"q{q}.png", q))
        label, prob = stdout.split()
        assert status == 0 and label == names[q] and 0.5 < float(prob) <= 1.0
    # a 64x64 picture of the same rule is resized to 16x16 by the documented rule
    status, stdout, _ = cli_here(capsys, "classify-image", run, quadrant_png(tmp / "big.png", 2, scale=4),
                                 "--top-k", "2")
    lines = stdout.strip().splitlines()
    assert status == 0 and len(lines) == 2 and lines[0].split("\t")[0] == "bottom-left"


def test_resume_is_exact(trained):
    tmp, run = trained
    # a copy of the run stopped at step 100 (its step-150 checkpoint removed), then resumed
    copy = tmp / "resumed"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step-00000150")
    assert (copy / "checkpoints" / "step-00000100" / "manifest.json").is_file()
    cli("train", "--resume", str(copy))
    from safetensors.torch import load_file

    a = load_file(str(run / "checkpoints" / "step-00000150" / "model.safetensors"))
    b = load_file(str(copy / "checkpoints" / "step-00000150" / "model.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def _bad_files(tmp):
    from PIL import Image

    (tmp / "text.png").write_text("this is not a PNG")
    Image.fromarray(np.zeros((16, 12), np.uint8)).save(tmp / "wide.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp / "big32.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).convert("CMYK").save(tmp / "cmyk.jpg")


@pytest.mark.parametrize("args, fragment", [
    (["IMG:missing.png"], "does not exist"),
    (["IMG:text.png"], "not an image"),
    (["IMG:wide.png"], "is 12x16"),
    (["IMG:big32.png", "--size-policy", "exact"], "--size-policy exact needs 16x16"),
    (["IMG:big32.png", "--size-policy", "stretch"], "invalid choice"),
    (["IMG:cmyk.jpg"], "mode 'CMYK'"),
    (["IMG:big32.png", "--top-k", "0"], "--top-k must be an int >= 1"),
])
def test_bad_images_are_one_line_and_exit_2(trained, capsys, args, fragment):
    tmp, run = trained
    _bad_files(tmp)
    args = [str(tmp / a[4:]) if a.startswith("IMG:") else a for a in args]
    status, stdout, stderr = cli_here(capsys, "classify-image", run, *args)
    assert status == 2 and stdout == "", stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert fragment.lower() in lines[0].lower(), lines[0]


def test_a_bad_image_through_the_real_cli(trained):
    tmp, run = trained
    _bad_files(tmp)
    r = cli("classify-image", str(run), str(tmp / "text.png"), check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not an image" in r.stderr, r.stderr


def test_bad_run_and_config_are_one_line_and_exit_2(tmp_path, capsys):
    quadrant_png(tmp_path / "q.png", 0)
    for args, fragment in [
        (["classify-image", str(tmp_path / "no-run"), str(tmp_path / "q.png")], "does not exist"),
        (["train", "fashion-vit", "data.dataset=mnist-5k"], "hflip=True is only allowed"),
        (["train", "fashion-vit", "data.dataset=cifar"], "data.dataset='cifar' is not allowed"),
        (["train", "mnist-vit", "model.patch_size=5"], "must be divisible by model.patch_size=5"),
    ]:
        status, _, stderr = cli_here(capsys, *args)
        assert status == 2 and len(stderr.strip().splitlines()) == 1, stderr
        assert fragment.lower() in stderr.lower(), stderr
