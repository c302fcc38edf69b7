"""A real `kill -9` of `selfattn train` at random steps, then `selfattn train --resume`: the run ends
with the same weights (SHA-256 of model.safetensors) and the same per-step losses as a run that was
never interrupted. Kills land between two micro-steps of gradient accumulation, inside a checkpoint
save, and at an epoch boundary of the "epoch" sampler; a SIGTERM stops the run with a complete
checkpoint at the current step.

To kill at a precise point the runs set SELFATTN_TEST_PAUSE (see checkpoint.pause_for_tests): the
trainer logs "accum 7" / "save 9" to a file and sleeps there, and the test sends SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfattn.checkpoint import complete_checkpoints, verify
from selfattn.data.text import epoch_windows, text_file_splits

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i % 7}.\n" for i in range(40))
BLOCK, BATCH, ACCUM, STEPS = 16, 8, 2, 30
ARGS = ["train.compile=false", "data.sampling=epoch", "model.n_layer=1", "model.n_head=2", "model.n_embd=16", f"model.block_size={BLOCK}",
        f"train.batch_size={BATCH}", f"train.grad_accum={ACCUM}", "train.eval_every=10", "train.eval_batches=2",
        "train.checkpoint_every=3", "train.keep_last=2", "train.warmup_steps=2", "train.log_every=1",
        "train.dtype=float32", "train.threads=1", "train.progress=false", "sample.max_new_tokens=5"]


def _env(**extra) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd(), **extra)


def _train_args(tmp: Path, run: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "selfattn", "train", "shakespeare-char", f"data.path={tmp / 'corpus.txt'}",
            f"data.cache_dir={tmp / 'cache'}", f"train.max_steps={steps}", *ARGS, "--run-dir", str(run)]


def _run(args, env=None) -> subprocess.CompletedProcess:
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env or _env())
    assert r.returncode == 0, f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written right now
            pass
    return out


def _curve(run: Path) -> list[tuple]:
    """What must match bit for bit: (step, train loss, lr) and (step, val loss), in file order."""
    return [(r["step"], r["loss"], r["lr"]) if "loss" in r else (r["step"], r["val_loss"]) for r in _metrics(run)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (status {proc.returncode}) before {what}:\n{proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def _start(args, tmp: Path, pause: str | None, seconds: float = 30) -> tuple[subprocess.Popen, Path]:
    log = tmp / f"pause-{time.monotonic_ns()}.log"
    env = _env(SELFATTN_TEST_PAUSE=pause or "", SELFATTN_TEST_PAUSE_LOG=str(log),
               SELFATTN_TEST_PAUSE_SECONDS=str(seconds))
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    return proc, log


def _stop_at(args, tmp: Path, where: str, step: int, sig=signal.SIGKILL, seconds: float = 30) -> subprocess.Popen:
    """Start ``args``, wait until the trainer sleeps at (where, step), and send ``sig`` there."""
    proc, log = _start(args, tmp, f"{where}:{step}", seconds)
    _wait_for(lambda: log.is_file() and f"{where} {step}" in log.read_text(), proc, f"{where} at step {step}")
    proc.send_signal(sig)
    proc.wait(120)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    return proc


def _kill_randomly(args, tmp: Path, run: Path, step: int, rng: random.Random) -> None:
    """SIGKILL at a random moment of step ``step`` (each step slowed to >= 0.1 s so polling can aim)."""
    proc, _ = _start(args, tmp, "accum", seconds=0.1)
    _wait_for(lambda: any(r.get("step", 0) >= step for r in _metrics(run)), proc, f"step {step}")
    time.sleep(rng.uniform(0, 0.12))
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kill")
    (tmp / "corpus.txt").write_text(TEXT)
    straight = tmp / "straight"
    _run(_train_args(tmp, straight, STEPS))
    return tmp, straight


def _epoch_boundary_step() -> int:
    """The optimizer step whose micro-batches cross from epoch 0 into epoch 1."""
    train, _ = text_file_splits_of(TEXT)
    micro = BATCH // ACCUM
    first_in_epoch_1 = epoch_windows(len(train), BLOCK) // micro  # micro-step holding row n
    return first_in_epoch_1 // ACCUM


def text_file_splits_of(text: str):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(text)
    try:
        return text_file_splits(f.name, 0.1)  # the recipe's default val_fraction
    finally:
        os.unlink(f.name)


def _assert_same_run(run: Path, straight: Path) -> None:
    steps = [r["step"] for r in _metrics(run) if "loss" in r]
    assert steps == list(range(1, STEPS + 1)), "metrics.jsonl must hold each step once, in order"
    assert _curve(run) == _curve(straight)
    final = f"checkpoints/step-{STEPS:08d}/model.safetensors"
    assert _sha(run / final) == _sha(straight / final)


def _seeded() -> tuple[random.Random, str]:
    seed = int(os.environ.get("SELFATTN_KILL_SEED", "0")) or random.randrange(1 << 30)
    return random.Random(seed), f"(rerun with SELFATTN_KILL_SEED={seed})"


def test_sigkill_anywhere_then_resume_is_bit_identical(corpus):
    tmp, straight = corpus
    rng, note = _seeded()
    run = tmp / "killed"
    start, resume = _train_args(tmp, run, STEPS), [sys.executable, "-m", "selfattn", "train", "--resume", str(run)]
    boundary = _epoch_boundary_step()
    assert 12 < boundary < 18, boundary  # the sizes above put the epoch change mid-run

    # 1. inside a checkpoint save (files written, manifest missing): a temporary folder is left,
    #    and the newest complete checkpoint is the one before
    k1 = rng.choice([3, 6, 9, 12])
    _stop_at(start, tmp, "save", k1)
    leftovers = [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]
    assert leftovers, f"the kill during the save of step {k1} should leave a temporary folder {note}"
    assert complete_checkpoints(run / "checkpoints")[-1].name == f"step-{k1 - 3:08d}", note
    # 2. between the two micro-steps of the gradient-accumulation step that crosses the epoch
    #    boundary (random mid-accumulation steps: the slow test)
    _stop_at(resume, tmp, "accum", boundary)
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name], "temporaries not cleaned"
    # 3. SIGTERM while step k4 + 1 is being computed: the trainer finishes that step, writes a
    #    complete checkpoint there and exits 0 (the pause lasts 2 s, then the step goes on)
    k4 = rng.randint(boundary + 2, STEPS - 3)
    proc = _stop_at(resume, tmp, "accum", k4, signal.SIGTERM, seconds=2)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    last_logged = max(r["step"] for r in _metrics(run))
    newest = complete_checkpoints(run / "checkpoints")[-1]
    assert last_logged == k4 + 1 and newest.name == f"step-{k4 + 1:08d}", (newest, last_logged, note)
    assert verify(newest)["meta"]["step"] == k4 + 1
    # 4. to the end
    _run(resume)
    _assert_same_run(run, straight)


def test_metrics_are_truncated_to_the_resumed_step(corpus):
    # A kill after step 5 with the newest checkpoint at step 3: steps 4-5 are logged again on
    # resume, and must not appear twice.
    from selfattn.train import truncate_metrics

    tmp, straight = corpus
    path = tmp / "m.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 6)] + ['{"step": 6, "lo']
    path.write_text("\n".join(lines))
    assert truncate_metrics(path, 3) == 3
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]


@pytest.mark.slow
def test_twenty_random_kills(corpus):
    """20 SIGKILLs, each at a random step and place (mid-accumulation, mid-save, or a random moment
    of a step), each followed by a resume; the finished run equals the uninterrupted one."""
    import shutil

    tmp, straight = corpus
    rng, note = _seeded()
    run = tmp / "killed20"
    start, resume = _train_args(tmp, run, STEPS), [sys.executable, "-m", "selfattn", "train", "--resume", str(run)]
    for _ in range(20):
        done = complete_checkpoints(run / "checkpoints")
        args = resume if done else start
        if not done and run.exists():  # killed before the step-0 checkpoint: start over
            shutil.rmtree(run)
        c = int(done[-1].name.split("-")[1]) if done else 0
        target = rng.randint(c + 1, min(STEPS - 1, c + 6)) if c < STEPS - 1 else STEPS - 1
        kind = rng.choice(["accum", "save", "random"])
        if kind == "save":
            target = (target + 2) // 3 * 3  # a checkpoint step after the resume point
            kind = "save" if target < STEPS else "accum"
            target = min(target, STEPS - 1)
        if kind == "random":
            _kill_randomly(args, tmp, run, target, rng)
        else:
            _stop_at(args, tmp, kind, target)
    _run(resume if complete_checkpoints(run / "checkpoints") else start)
    _assert_same_run(run, straight)
