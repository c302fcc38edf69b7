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
