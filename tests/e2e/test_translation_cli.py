"""The translation pipeline through the real CLI, shrunken: a synthetic copy task learnt exactly,
`selfattn translate` (greedy, beam, --text/--file/stdin), user TSV/JSONL pairs, bad input."""

import io
import json
import os
import subprocess
import sys

import pytest
import torch

TINY_MODEL = ["model.d_model=64", "model.n_head=4", "model.n_encoder_layers=2", "model.n_decoder_layers=2",
              "model.ffn_hidden=128", "model.dropout=0.0", "model.label_smoothing=0.0"]
TINY_TRAIN = ["train.batch_size=32", "train.warmup_steps=30", "train.lr=2e-3", "train.dtype=float32",
              "train.log_every=20", "train.progress=false", "train.eval_batches=4"]
SYNTHETIC = ["data.source=synthetic", "data.synthetic_task=copy", "data.vocab_size=300", "data.synthetic_symbols=8",
             "data.synthetic_max_symbols=6", "data.synthetic_pairs=2000", "decode.beam_size=3"]


def cli(*args, check=True, timeout=300, input=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-m", "selfattn", *args], capture_output=True,
                       text=True, timeout=timeout, env=env, input=input,
                       stdin=None if input is not None else subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"selfattn {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("translation") / "run"
    cli("train", "bible-en-es", *SYNTHETIC, *TINY_MODEL, *TINY_TRAIN, "train.max_steps=500", "train.eval_every=250",
        "train.checkpoint_every=500", "--run-dir", str(run))
    return run


def test_copy_task_is_learnt_and_scored_with_greedy_and_beam(trained):
    results = json.loads((trained / "results.json").read_text())
    assert results["test_sentences"] == 100 and results["beam_size"] == 3
    assert results["exact_match_greedy"] >= 0.95, results
    assert results["exact_match_beam"] >= 0.95, results
    assert results["bleu_greedy"] >= 90 and results["bleu_beam"] >= 90, results
    assert len(results["samples"]) == 5 and all(s["greedy"] == s["reference"] for s in results["samples"][:3])
    vals = [json.loads(line)["val_loss"] for line in (trained / "metrics.jsonl").read_text().splitlines()
            if "val_loss" in line]
    assert len(vals) == 2 and vals[-1] < 0.2 < vals[0] * 4
    for name in ("loss.png", "cross_attention.png", "samples.txt", "config.json", "tokenizer/tokenizer.json",
                 "checkpoints/best/manifest.json"):
        assert (trained / name).is_file(), name
    assert (trained / "cross_attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_translate_greedy_beam_file_and_stdin(trained, tmp_path):
    sentences = ["a b c d", "h g f e d", "c c a"]
    greedy = cli("translate", str(trained), *sum((["--text", s] for s in sentences), []), "--beam", "1")
    assert greedy.stdout.splitlines() == sentences
    f = tmp_path / "in.txt"
    f.write_text("\n".join(sentences) + "\n\n")
    beam = cli("translate", str(trained), "--file", str(f), "--beam", "4", "--length-penalty", "1.0")
    assert beam.stdout.splitlines() == sentences
    assert cli("translate", str(trained), input="b a\n").stdout.splitlines() == ["b a"]


def test_cross_attention_weights_are_distributions_over_real_source_tokens(trained):
    from selfattn.translation import cross_attention, load_translator

    model, tok, cfg = load_translator(trained)
    src, tgt = tok.encode("a b c"), tok.encode("a b c")
    w = cross_attention(model, src, tgt)  # (H, T, S)
    assert w.shape == (cfg.model.n_head, len(tgt) + 1, len(src))
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:2]))
    # copying reads the source left to right: the most-attended source position never moves back
    focus = w.mean(0)[:-1].argmax(-1)
    assert focus[0] == 0 and (focus[1:] >= focus[:-1]).all(), focus


def test_task_batches_are_a_pure_function_of_seed_split_and_index():
    from selfattn.translation import TranslationTask

    enc = {"train": [([5 + i % 7] * (1 + i % 5), [9] * (1 + i % 3)) for i in range(50)], "val": [([4], [5, 6])]}
    task = TranslationTask(enc, seed=3)
    a, b = task.batch("train", 7, 8), TranslationTask(enc, seed=3).batch("train", 7, 8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    half = task.batch("train", 7, 8, rows=slice(4, 8))
    assert torch.equal(half[1][:, :a[1].shape[1]], a[1][4:8][:, :half[1].shape[1]])
    src, tgt_in, labels = task.batch("val", 0, 8)
    assert src.tolist() == [[4]] and tgt_in.tolist() == [[1, 5, 6]] and labels.tolist() == [[5, 6, 2]]


@pytest.mark.parametrize("suffix", ["tsv", "jsonl"])
def test_user_pairs_file_end_to_end(tmp_path, suffix):
    words = ["one", "two", "three", "four", "five", "six"]
    spanish = ["uno", "dos", "tres", "cuatro", "cinco", "seis"]
    rows = [(f"{words[i % 6]} {words[(i // 6) % 6]}", f"{spanish[i % 6]} {spanish[(i // 6) % 6]}") for i in range(120)]
    path = tmp_path / f"pairs.{suffix}"
    if suffix == "tsv":
        path.write_text("en\tes\n" + "".join(f"{s}\t{t}\n" for s, t in rows))
        keys = ["data.source_key=en", "data.target_key=es"]
    else:
        path.write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in rows))
        keys = []
    run = tmp_path / "run"
    cli("train", "bible-en-es", f"data.path={path}", *keys, "data.vocab_size=300", "data.test_fraction=0.1",
        *TINY_MODEL, *TINY_TRAIN, "train.max_steps=30", "train.eval_every=15", "train.checkpoint_every=30",
        "decode.beam_size=2", "--run-dir", str(run))
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"]["source"] == "pairs"
    results = json.loads((run / "results.json").read_text())
    assert results["test_sentences"] == 12 and 0 <= results["bleu_beam"] <= 100
    out = cli("translate", str(run), "--text", "one two", "--beam", "2").stdout.splitlines()
    assert len(out) == 1


@pytest.mark.parametrize("args, fragment", [
    (["translate", "RUN", "--text", "a", "--beam", "0"], "--beam 0 is not allowed"),
    (["translate", "RUN", "--text", "a", "--length-penalty", "-1"], "--length-penalty -1.0 is not allowed"),
    (["translate", "RUN", "--text", "a", "--max-len", "0"], "--max-len 0 is not allowed"),
    (["translate", "RUN", "--text", ""], "--text must not be empty"),
    (["translate", "RUN", "--text", "a", "--file", "x.txt"], "not both"),
    (["translate", "RUN", "--file", "/no/such/lines.txt"], "/no/such/lines.txt"),
    (["translate", "RUN"], "nothing to translate"),
    (["translate", "/no/such/run", "--text", "a"], "does not exist"),
    (["translate", "RUN", "--beam", "wide"], "invalid int value"),
    (["train", "bible-en-es", "data.source=pairs"], "needs data.path"),
    (["train", "bible-en-es", "data.path=/no/such/pairs.tsv"], "/no/such/pairs.tsv"),
    (["train", "bible-en-es", "data.synthetic_task=sort"], "data.synthetic_task"),
    (["train", "bible-en-es", "data.sword_root=/no/such/sword"], "apt-get install -y sword-text-kjv sword-text-sparv"),
])
def test_bad_input_is_one_line_and_exit_2(trained, args, fragment, capsys, monkeypatch, tmp_path):
    # The CLI's own main(), in this process (a subprocess each would cost seconds of imports).
    from selfattn.cli import main

    monkeypatch.chdir(tmp_path)  # a failure must not leave a runs/ folder behind: check below
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    args = [str(trained) if a == "RUN" else a for a in args]
    assert main(args) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert out.out == "" and not any(tmp_path.iterdir())


def test_missing_debian_packages_is_one_line_from_a_real_process(tmp_path):
    r = cli("train", "bible-en-es", "data.sword_root=/no/such/sword", "--run-dir", str(tmp_path / "run"), check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and not (tmp_path / "run").exists(), r.stderr
    assert "install it with: apt-get install -y sword-text-kjv sword-text-sparv" in r.stderr
