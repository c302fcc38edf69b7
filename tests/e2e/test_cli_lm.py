"""The real pipeline through the real CLI, shrunken: train, reload, generate, resume, bad input."""

import json
import os
import subprocess
import sys

import pytest

TEXT = "\n".join(f"SPEAKER {i % 3}:\nthe cat sat on the mat and the dog sat on the log.\n" for i in range(400))
SMALL = ["train.compile=false", "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32",
         "train.batch_size=8", "train.eval_every=20", "train.eval_batches=2", "train.checkpoint_every=20",
         "train.warmup_steps=5", "train.lr=3e-3", "train.log_every=5", "train.dtype=float32",
         "sample.max_new_tokens=20"]


def cli(*args, check=True, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-m", "selfattn", *args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"selfattn {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    (tmp / "corpus.txt").write_text(TEXT)
    run = tmp / "run"
    cli("train", "shakespeare-char", f"data.path={tmp / 'corpus.txt'}", f"data.cache_dir={tmp / 'cache'}",
        "train.max_steps=60", *SMALL, "--run-dir", str(run))
    return tmp, run


def test_training_lowers_the_loss_and_writes_everything(trained):
    _, run = trained
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in recs if "val_loss" in r]
    train = [r["loss"] for r in recs if "loss" in r]
    assert len(vals) == 3 and vals[-1] < vals[0] < 4.0 and train[-1] < train[0] * 0.6
    for name in ("loss.png", "attention.png", "sample.txt", "config.json", "tokenizer/tokenizer.json",
                 "checkpoints/best/manifest.json", "checkpoints/step-00000060/manifest.json"):
        assert (run / name).is_file(), name
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generate_from_the_run(trained):
    _, run = trained
    a = cli("generate", str(run), "--prompt", "the ", "--max-new-tokens", "20", "--seed", "3")
    b = cli("generate", str(run), "--prompt", "the ", "--max-new-tokens", "20", "--seed", "3")
    assert a.stdout == b.stdout and a.stdout.startswith("the ") and len(a.stdout.strip()) >= 10
    g = cli("generate", str(run), "--prompt", "the ", "--max-new-tokens", "5", "--temperature", "0")
    assert len(g.stdout) == len("the ") + 5 + 1


def test_resume_continues_to_the_new_end(trained):
    tmp, run = trained
    resumed = tmp / "resumed"
    # stop a copy of the run at step 40 by training 40 steps of the same schedule, then resume it
    cli("train", "shakespeare-char", f"data.path={tmp / 'corpus.txt'}", f"data.cache_dir={tmp / 'cache'}",
        "train.max_steps=60", *SMALL, "--run-dir", str(resumed))
    import shutil
    shutil.rmtree(resumed / "checkpoints" / "step-00000060")
    cli("train", "--resume", str(resumed))
    from safetensors.torch import load_file

    a = load_file(str(run / "checkpoints" / "step-00000060" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step-00000060" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("args, fragment", [
    (["train", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
    (["train", "shakespeare-char", "model.n_layers=2"], "unknown config key 'model.n_layers'"),
    (["train", "shakespeare-char", "train.lr=fast"], "expected a float"),
    (["train", "shakespeare-char", "data.path=/no/such/file.txt"], "/no/such/file.txt"),
    (["train", "--resume", "/no/such/run"], "not a run folder"),
    (["generate", "/no/such/run"], "does not exist"),
    (["generate", "RUN", "--temperature", "-1"], "temperature must be a float >= 0"),
    (["generate", "RUN", "--top-p", "2"], "top_p must be in (0, 1]"),
    (["generate", "RUN", "--max-new-tokens", "0"], "max_new_tokens must be an int >= 1"),
    (["generate", "RUN", "--max-new-tokens", "1000"], "exceeds the model's context of 32 tokens"),
    (["generate", "RUN", "--prompt", ""], "--prompt must not be empty"),
    (["generate", "RUN", "--prompt", "\u00e9t\u00e9"], "is not in the vocabulary"),
    (["generate", "RUN", "--max-new-tokens", "many"], "invalid int value"),
    (["bogus"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(trained, args, fragment):
    _, run = trained
    args = [str(run) if a == "RUN" else a for a in args]
    r = cli(*args, check=False)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert fragment.lower() in lines[0].lower(), lines[0]
