"""DistributedDataParallel through the real CLI: `torchrun --nproc_per_node=2 -m selfattn train ...`
on CPU (gloo). 2 ranks x batch B follow the loss curve of 1 process x batch 2B (train.batch_size is
the global batch: the same value in both runs), only rank 0 writes, and a DDP run resumes exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TORCHRUN = Path(sys.executable).parent / "torchrun"
TEXT = "\n".join(f"SPEAKER {i % 3}:\nthe cat sat on the mat and the dog sat on the log {i % 11}.\n" for i in range(120))
STEPS = 12
ARGS = ["train.compile=false", "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "model.dropout=0.0",
        "train.batch_size=8", "train.grad_accum=2", "train.eval_every=6", "train.eval_batches=2",
        "train.checkpoint_every=4", "train.warmup_steps=3", "train.lr=3e-3", "train.log_every=1",
        "train.dtype=float32", "train.threads=1", "train.progress=false", "sample.max_new_tokens=5"]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-4000:]}"
    return r


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    return _run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "selfattn", *args])


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not TORCHRUN.is_file():
        pytest.skip(f"torchrun is not installed beside {sys.executable}")
    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "corpus.txt").write_text(TEXT)
    common = ["train", "shakespeare-char", f"data.path={tmp / 'corpus.txt'}", f"data.cache_dir={tmp / 'cache'}",
              f"train.max_steps={STEPS}", *ARGS]
    ddp = _torchrun(*common, "--run-dir", str(tmp / "ddp"))
    single = _run([sys.executable, "-m", "selfattn", *common, "--run-dir", str(tmp / "single")])
    return tmp, ddp, single


def test_two_ranks_follow_the_single_process_curve(runs):
    tmp, _, _ = runs
    a, b = _records(tmp / "ddp"), _records(tmp / "single")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    train_a = [r["loss"] for r in a if "loss" in r]
    train_b = [r["loss"] for r in b if "loss" in r]
    assert len(train_a) == STEPS and train_b[-1] < train_b[0]
    worst = max(abs(x - y) for x, y in zip(train_a, train_b))
    assert worst < 1e-5, f"2 ranks x 4 rows vs 1 process x 8 rows: largest loss difference {worst:.2e}"
    vals_a = [r["val_loss"] for r in a if "val_loss" in r]
    vals_b = [r["val_loss"] for r in b if "val_loss" in r]
    assert len(vals_a) == 2 and max(abs(x - y) for x, y in zip(vals_a, vals_b)) < 1e-5


def test_only_rank_0_writes(runs):
    tmp, ddp, _ = runs
    # one writer: every metric line once, the same files as a single process, one sample printed
    steps = [r["step"] for r in _records(tmp / "ddp") if "loss" in r]
    assert steps == list(range(1, STEPS + 1))
    assert _files(tmp / "ddp") == _files(tmp / "single")
    assert ddp.stderr.count("--- sample") == 1 and ddp.stderr.count("best validation loss") == 1


def test_resume_under_ddp_is_exact(runs):
    tmp, _, _ = runs
    run = tmp / "ddp"
    final = run / "checkpoints" / f"step-{STEPS:08d}"
    want = _sha(final / "model.safetensors")
    curve = [(r["step"], r.get("loss"), r.get("val_loss")) for r in _records(run)]
    shutil.rmtree(final)  # as if the run had been stopped after the step-8 checkpoint
    _torchrun("train", "--resume", str(run))
    assert _sha(final / "model.safetensors") == want
    assert [(r["step"], r.get("loss"), r.get("val_loss")) for r in _records(run)] == curve


def test_time_budget_stops_every_rank_together(runs):
    """train.max_steps=0 fits the schedule to max_minutes on rank 0's timing; the time-based stop
    is decided collectively, so no rank is left waiting in an all-reduce (the run would hang)."""
    tmp, _, _ = runs
    run = tmp / "timed"
    args = [a for a in ARGS if not a.startswith("train.warmup_steps")]
    _torchrun("train", "shakespeare-char", f"data.path={tmp / 'corpus.txt'}", f"data.cache_dir={tmp / 'cache'}",
              "train.max_steps=0", "train.max_minutes=0.1", "train.warmup_steps=10", *args, "--run-dir", str(run))
    steps = [r["step"] for r in _records(run) if "loss" in r]
    assert steps and steps == sorted(set(steps)) and steps[-1] > 10
    assert (run / "checkpoints" / f"step-{steps[-1]:08d}" / "manifest.json").is_file()


# ---- FSDP (train.parallel=fsdp: fully_shard over gloo on CPU) -------------------------------------
@pytest.fixture(scope="module")
def fsdp_run(runs):
    tmp, _, _ = runs
    _torchrun("train", "shakespeare-char", f"data.path={tmp / 'corpus.txt'}", f"data.cache_dir={tmp / 'cache'}",
              f"train.max_steps={STEPS}", *ARGS, "train.parallel=fsdp", "--run-dir", str(tmp / "fsdp"))
    return tmp / "fsdp"


def test_fsdp_follows_the_single_process_curve(runs, fsdp_run):
    tmp, _, _ = runs
    a, b = _records(fsdp_run), _records(tmp / "single")
    train_a = [r["loss"] for r in a if "loss" in r]
    train_b = [r["loss"] for r in b if "loss" in r]
    assert len(train_a) == STEPS
    worst = max(abs(x - y) for x, y in zip(train_a, train_b))
    assert worst < 1e-5, f"FSDP 2 ranks vs 1 process: largest loss difference {worst:.2e}"
    assert _files(fsdp_run) == _files(tmp / "single")


def test_fsdp_checkpoint_is_a_plain_checkpoint(runs, fsdp_run):
    """The gathered weights load into one process (same names, tied weights stored once) and are
    the single-process run's weights up to reduction-order rounding."""
    from safetensors.torch import load_file

    tmp, _, _ = runs
    name = f"checkpoints/step-{STEPS:08d}/model.safetensors"
    a, b = load_file(str(fsdp_run / name)), load_file(str(tmp / "single" / name))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, f"FSDP vs single-process weights differ by {worst:.2e}"


def test_fsdp_resume_is_exact_and_needs_the_same_setting(runs, fsdp_run):
    tmp, _, _ = runs
    final = fsdp_run / "checkpoints" / f"step-{STEPS:08d}"
    want = _sha(final / "model.safetensors")
    curve = [(r["step"], r.get("loss"), r.get("val_loss")) for r in _records(fsdp_run)]
    shutil.rmtree(final)
    _torchrun("train", "--resume", str(fsdp_run))
    assert _sha(final / "model.safetensors") == want
    assert [(r["step"], r.get("loss"), r.get("val_loss")) for r in _records(fsdp_run)] == curve
    # a sharded optimizer state cannot silently feed a single-process resume
    r = subprocess.run([sys.executable, "-m", "selfattn", "train", "--resume", str(fsdp_run)],
                       capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 2 and "with train.parallel=fsdp" in r.stderr and "Traceback" not in r.stderr
