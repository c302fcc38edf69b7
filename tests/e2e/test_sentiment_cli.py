"""The sentiment pipeline through the real CLI, shrunken: a synthetic rule (the label is whether a
review holds a positive or a negative word) read from a JSONL file, with a few masked-LM
pretraining steps first; then classify and embed, and bad input."""

import json
import os
import subprocess
import sys

import pytest

from selfattn.sentiment import synthetic_reviews

SMALL = ["data.max_len=40", "data.vocab_size=300", "model.max_position=40", "model.n_embd=32", "model.n_head=2",
         "model.ffn_hidden=64", "train.batch_size=16", "train.max_steps=90", "train.eval_every=30",
         "train.eval_batches=4", "train.checkpoint_every=30", "train.warmup_steps=5", "train.lr=3e-3",
         "train.log_every=10", "train.dtype=float32", "train.progress=false", "train_mlm_steps=15"]


def cli(*args, check=True, stdin=None, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-m", "selfattn", *args], capture_output=True, text=True, input=stdin,
                       timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"selfattn {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sentiment")
    data = tmp / "reviews.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in synthetic_reviews(800, seed=3)))
    run = tmp / "run"
    cli("train", "imdb-sentiment", f"data.path={data}", *SMALL, "--run-dir", str(run))
    return tmp, run


def test_learns_the_rule_and_writes_everything(trained):
    _, run = trained
    res = json.loads((run / "results.json").read_text())
    assert res["source"] == "file" and res["validation"]["n"] == 80 and res["test"]["n"] == 80
    assert res["validation"]["accuracy"] >= 0.97, res["validation"]
    assert res["test"]["accuracy"] >= 0.95, res["test"]
    assert sum(map(sum, res["test"]["confusion"])) == 80
    for name in ("confusion.png", "attention.png", "loss.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    for name in ("config.json", "tokenizer/tokenizer.json", "checkpoints/best/manifest.json",
                 "mlm/checkpoints/step-00000015/manifest.json"):
        assert (run / name).is_file(), name
    mlm = [json.loads(x) for x in (run / "mlm" / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in mlm)


def test_classify_prints_label_and_probability(trained):
    tmp, run = trained
    r = cli("classify", str(run), "--text", "the film was great and the cast wonderful",
            "--text", "a boring plot and awful music")
    lines = [ln.split("\t") for ln in r.stdout.strip().splitlines()]
    assert [x[0] for x in lines] == ["positive", "negative"]
    assert all(0.5 < float(p) <= 1.0 for _, p in lines)
    piped = cli("classify", str(run), stdin="it was good\n\nhated the ending\n")
    assert [ln.split("\t")[0] for ln in piped.stdout.splitlines()] == ["positive", "negative"]
    f = tmp / "lines.txt"
    f.write_text("loved it\nterrible\n")
    assert [ln.split("\t")[0] for ln in cli("classify", str(run), "--file", str(f)).stdout.splitlines()] == \
        ["positive", "negative"]


def test_too_long_text_is_truncated_with_a_warning(trained):
    _, run = trained
    r = cli("classify", str(run), "--text", "the movie was great " + "and the plot " * 60)
    assert r.stdout.startswith("positive\t")
    warn = r.stderr.strip().splitlines()
    assert len(warn) == 1 and "warning" in warn[0] and "truncated" in warn[0] and "max_len 40" in warn[0]


def test_embed_a_run_and_the_packaged_minilm(trained, tmp_path):
    _, run = trained
    vecs = json.loads(cli("embed", str(run), "--text", "good film", "--text", "bad film").stdout)
    assert len(vecs) == 2 and len(vecs[0]) == 32
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vecs)
    out = tmp_path / "e.npy"
    cli("embed", "minilm", "--text", "A man is eating food.", "--text", "A man eats a meal.",
        "--text", "The stock market fell sharply.", "--out", str(out))
    import numpy as np

    e = np.load(out)
    assert e.shape == (3, 384) and e.dtype == np.float32
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.3  # paraphrases are far closer than unrelated sentences


@pytest.mark.parametrize("args, stdin, fragment", [
    (["classify", "RUN", "--text", ""], None, "--text number 1 is empty"),
    (["classify", "RUN", "--text", "   "], None, "is empty"),
    (["classify", "RUN"], "\n  \n", "no text to classify"),
    (["classify", "RUN", "--file", "/no/such.txt"], None, "/no/such.txt"),
    (["classify", "/no/such/run", "--text", "good"], None, "does not exist"),
    (["embed", "RUN", "--text", ""], None, "is empty"),
    (["embed", "RUN", "--text", "good", "--out", "e.json"], None, "ending in .npy"),
    (["embed", "/no/such/model", "--text", "good"], None, "does not exist"),
    (["train", "imdb-sentiment", "data.source=file"], None, "data.path"),
    (["train", "imdb-minilm", "train_mlm_steps=5"], None, "train_mlm_steps"),
])
def test_bad_input_is_one_line_and_exit_2(trained, args, stdin, fragment):
    _, run = trained
    r = cli(*[str(run) if a == "RUN" else a for a in args], check=False, stdin=stdin)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert fragment.lower() in lines[0].lower(), lines[0]
