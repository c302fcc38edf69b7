"""The benchmark scripts are not tests, but they must keep running: a dry run of each at the
smallest size, on a tiny config, checking that it writes its results table."""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("script, args", [
    ("benchmarks/train_gpt.py", ["--quick", "--repeats", "1"]),
    ("benchmarks/generate.py", ["--quick", "--repeats", "1", "--no-nocache"]),
])
def test_benchmark_script_runs_and_writes_a_table(tmp_path, script, args):
    r = subprocess.run([sys.executable, script, *args, "--out-dir", str(tmp_path)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| contender |" in r.stdout.replace("| size | contender |", "| contender |").replace(
        "| batch | contender |", "| contender |")
    written = list(tmp_path.glob("*.md"))
    assert len(written) == 1 and "selfattn" in written[0].read_text()
