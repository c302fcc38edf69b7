"""The Trainer: model-agnostic. A task gives batches by position and a loss; the Trainer owns the
optimizer, the schedule, precision, accumulation, clipping, evaluation, checkpoints, logging and
(under ``torchrun``) DistributedDataParallel.

Exact resume rests on one rule: nothing depends on history that is not in the checkpoint. The
batch for micro-step i is a pure function of (seed, i); the learning rate is a function of the
step; the RNG states, optimizer state and step are saved; so a run resumed from step s repeats
bit for bit what the uninterrupted run did after step s (same torch, threads and platform).
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from contextlib import nullcontext
from typing import Any, Callable, Protocol

import torch
import torch.distributed as dist

from .checkpoint import (CheckpointError, clean_temporaries, complete_checkpoints, load_state, load_weights,
                         pause_for_tests, write_checkpoint)
from .config import ConfigError, check_choice, check_range

DTYPES = ("auto", "float32", "bfloat16")
PARALLEL = ("ddp", "fsdp")


@dataclass
class TrainConfig:
    max_steps: int = 2000  # 0 = as many as fit in max_minutes (measured on the first steps)
    batch_size: int = 32  # sequences per optimizer step, summed over processes and accumulation
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 = off
    eval_every: int = 250
    eval_batches: int = 20
    checkpoint_every: int = 500
    keep_last: int = 2
    max_minutes: float = 0.0  # stop (and save) after this much training time; 0 = no limit
    seed: int = 1337
    dtype: str = "auto"  # auto = bf16 autocast where the CPU/GPU supports it
    compile: bool = False
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    log_every: int = 10
    on_nan: str = "stop"  # stop | skip
    progress: bool = True
    parallel: str = "ddp"  # under torchrun: ddp (replicated weights) | fsdp (sharded, fully_shard)

    def __post_init__(self):
        check_range("train.max_steps", self.max_steps, 0)
        if self.max_steps == 0 and (self.max_minutes <= 0 or self.warmup_steps < 10):
            raise ConfigError("train.max_steps=0 (fit the schedule to the time budget) needs "
                              "train.max_minutes > 0 and train.warmup_steps >= 10")
        for name in ("batch_size", "grad_accum", "eval_every", "eval_batches",
                     "checkpoint_every", "keep_last", "log_every"):
            check_range(f"train.{name}", getattr(self, name), 1)
        check_range("train.lr", self.lr, 0.0, lo_open=True)
        check_range("train.min_lr", self.min_lr, 0.0)
        check_range("train.warmup_steps", self.warmup_steps, 0)
        check_range("train.weight_decay", self.weight_decay, 0.0)
        check_range("train.beta1", self.beta1, 0.0, 1.0, hi_open=True)
        check_range("train.beta2", self.beta2, 0.0, 1.0, hi_open=True)
        check_range("train.grad_clip", self.grad_clip, 0.0)
        check_range("train.max_minutes", self.max_minutes, 0.0)
        check_range("train.threads", self.threads, 0)
        check_choice("train.dtype", self.dtype, DTYPES)
        check_choice("train.on_nan", self.on_nan, ("stop", "skip"))
        check_choice("train.parallel", self.parallel, PARALLEL)
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"train.batch_size={self.batch_size} must be divisible by "
                             f"train.grad_accum={self.grad_accum}")


class Task(Protocol):
    """What the Trainer needs from a recipe."""

    def batch(self, split: str, index: int, size: int, rows: slice | None = None) -> Any: ...

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor: ...

    def tokens(self, batch: Any) -> int: ...


class TrainingError(RuntimeError):
    pass


def cpu_supports_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: matrices (linear and conv weights, embeddings) decay; biases, norm gains and
    the parameters a model lists by name prefix in ``no_weight_decay`` (e.g. a ViT's positions and
    class token) do not."""
    skip_prefixes = tuple(getattr(model, "no_weight_decay", ()))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            skip = p.dim() < 2 or (skip_prefixes and name.startswith(skip_prefixes))
            (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def describe_best_val(best_val: float) -> str:
    """"best validation loss 1.2345", or why there is none: a run stopped (time out, Ctrl-C)
    before its first evaluation has no validation loss, and "inf" would read like a divergence."""
    if math.isfinite(best_val):
        return f"best validation loss {best_val:.4f}"
    return "no validation loss yet (stopped before the first evaluation)"


def lr_at(step: int, cfg: TrainConfig, total_steps: int | None = None) -> float:
    """Linear warm-up to lr, then cosine decay to min_lr at total_steps (default max_steps)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, (total_steps or cfg.max_steps) - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def environment() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version()}


def truncate_metrics(path: Path, step: int) -> int:
    """Keep only the records of ``metrics.jsonl`` up to ``step`` (the step a resume starts from).

    A run killed after step s but resumed from its checkpoint at step c < s logged steps c+1..s
    twice otherwise. The resumed run rewrites them, so the file always reads as one uninterrupted
    run. A torn last line (a kill in the middle of a write) is dropped too. Returns lines dropped.
    """
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            ok = int(rec["step"]) <= step
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            keep.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)
    return dropped


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(_flatten_py_random(random.getstate()))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _flatten_py_random(s):
    version, internal, gauss = s
    return [version, *internal, -1 if gauss is None else gauss]


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    gauss = py[-1]
    random.setstate((int(py[0]), tuple(int(x) for x in py[1:-1]), None if gauss == -1 else gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    def __init__(self, model: torch.nn.Module, task: Task, cfg: TrainConfig, run_dir: str | Path, *,
                 save_files: Callable[[Path], None] | None = None, device: str | None = None):
        self.cfg, self.task, self.run_dir = cfg, task, Path(run_dir)
        self.save_files = save_files
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if device is None:
            device = f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        per_rank = cfg.batch_size // cfg.grad_accum
        if per_rank % self.world:
            raise ValueError(f"train.batch_size/grad_accum={per_rank} must be divisible by the "
                             f"{self.world} processes")
        self.micro = per_rank  # rows per micro-step over all ranks
        self.model = model.to(self.device)
        self.amp_dtype = resolve_dtype(cfg.dtype, self.device)
        self.fsdp = self.world > 1 and cfg.parallel == "fsdp"
        if self.fsdp:
            # Sharding replaces parameters by DTensors, so it comes before the optimizer is built.
            shard_model(model)
        groups = weight_decay_groups(model, cfg.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                           fused=self.device.type in ("cpu", "cuda") and not self.fsdp)
        self.step = 0
        # The schedule's length: max_steps, or (max_steps=0) fitted to max_minutes once the first
        # steps have been timed; saved in the checkpoint so a resume follows the same schedule.
        self.total_steps: int | None = cfg.max_steps or None
        self._step_times: list[float] = []
        self.best_val = math.inf
        self.skipped = 0
        self.train_seconds = 0.0
        self.wrapped = model
        self._saved_step = -1  # the step of the newest checkpoint this process saved or resumed
        if self.world > 1 and not self.fsdp:
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)
        self.forward_model = torch.compile(self.wrapped) if cfg.compile else self.wrapped
        self._compile_checked = not cfg.compile
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.is_main = self.rank == 0

    # ---- checkpoints -------------------------------------------------------------------------
    def _state(self, optimizer_state: dict) -> dict:
        return {"step": self.step, "total_steps": self.total_steps or 0,
                "optimizer": optimizer_state, "optimizer_format": "fsdp-full" if self.fsdp else "torch",
                "rng": rng_state(), "best_val": self.best_val, "skipped": self.skipped,
                "train_seconds": self.train_seconds, "env": json.dumps(environment())}

    def save(self, *, best: bool = False) -> Path | None:
        """Write a checkpoint (rank 0). Under FSDP every rank must call this: the full weights and
        optimizer state are gathered from the shards collectively before rank 0 writes them."""
        tensors = optimizer_state = None
        if self.fsdp:
            tensors, optimizer_state = gather_full_state(self.model, self.optimizer, with_optimizer=not best)
        if not best:
            self._saved_step = self.step
        if not self.is_main:
            return None
        if optimizer_state is None and not best:
            optimizer_state = self.optimizer.state_dict()
        meta = {"step": self.step, "best_val": self.best_val,
                "optimizer_format": "fsdp-full" if self.fsdp else "torch", **environment()}
        target = self.ckpt_dir / ("best" if best else f"step-{self.step:08d}")
        path = write_checkpoint(target, self.model, state=None if best else self._state(optimizer_state),
                                extra_files=self.save_files, meta=meta, tensors=tensors)
        if not best:
            for old in complete_checkpoints(self.ckpt_dir)[:-self.cfg.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def last_checkpoint(self) -> Path | None:
        done = complete_checkpoints(self.ckpt_dir)
        return done[-1] if done else None

    def resume(self) -> None:
        """Continue from the newest complete checkpoint of ``run_dir``."""
        clean_temporaries(self.ckpt_dir)
        done = complete_checkpoints(self.ckpt_dir)
        if not done:
            raise CheckpointError(f"{self.run_dir} has no complete checkpoint to resume from")
        newest = done[-1]
        fallback = done[-2] if len(done) > 1 else None
        state = load_state(newest)
        saved_format = state.get("optimizer_format", "torch")
        if saved_format != ("fsdp-full" if self.fsdp else "torch"):
            raise CheckpointError(f"{newest} was written with train.parallel="
                                  f"{'fsdp' if saved_format == 'fsdp-full' else 'ddp (or one process)'}; "
                                  "resume it with the same setting")
        if self.fsdp:
            load_full_state(newest, fallback, self.model, self.optimizer, state["optimizer"])
        else:
            load_weights(newest, self.model, fallback)
            self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self._saved_step = self.step
        self.total_steps = int(state.get("total_steps", 0)) or self.cfg.max_steps or None
        self.best_val = float(state["best_val"])
        self.skipped = int(state["skipped"])
        self.train_seconds = float(state["train_seconds"])
        saved_env = json.loads(state["env"])
        now = environment()
        diff = {k: (saved_env.get(k), v) for k, v in now.items() if saved_env.get(k) != v}
        if diff and self.is_main:
            warnings.warn(f"resuming on a different environment {diff}: the continuation may not be "
                          "bit-identical to an uninterrupted run", stacklevel=2)

    # ---- the loop ----------------------------------------------------------------------------
    def _fit_schedule_to_time(self, dt: float, bar) -> None:
        """max_steps=0: time the first steps (inside the warm-up, whose learning rates do not
        depend on the schedule's length), then fix the number of steps that fits max_minutes."""
        self._step_times.append(dt)
        calibrate = min(self.cfg.warmup_steps, 20)
        if self.step < calibrate:
            return
        per_step = sorted(self._step_times[2:])[len(self._step_times[2:]) // 2]  # median, warm-up excluded
        self._set_total(self._steps_that_fit(per_step), bar, "schedule fitted to")

    def _refit_schedule(self, bar) -> None:
        """max_steps=0, at each evaluation: if steps have become slower or faster than the first
        ones (another job on the machine, longer batches), refit the remaining schedule to the time
        left, so the learning rate still reaches its end when the time does. Only changes of more
        than 5% are applied."""
        del self._step_times[:-100]
        if self.total_steps is None or self.step >= self.total_steps:
            return
        want = self._steps_that_fit(sorted(self._step_times)[len(self._step_times) // 2])
        if abs(want - self.total_steps) > 0.05 * max(1, self.total_steps - self.step):
            self._set_total(want, bar, "schedule refitted to")

    def _steps_that_fit(self, per_step: float) -> int:
        """The schedule's length if the remaining time goes at per_step seconds a step; under DDP
        rank 0's answer, so every rank follows the same schedule (all ranks must call this)."""
        left = self.cfg.max_minutes * 60 - self.train_seconds
        total = self.step + max(1, int(0.98 * left / per_step))
        if self.world > 1:
            t = torch.tensor([total], device=self.device)
            dist.broadcast(t, 0)
            total = int(t)
        return max(total, self.cfg.warmup_steps + 1, self.step + 1)

    def _set_total(self, total: int, bar, what: str) -> None:
        per_step = (self.cfg.max_minutes * 60 - self.train_seconds) / max(1, total - self.step)
        self.total_steps = total
        if bar is not None:
            bar.total = self.total_steps
            bar.write(f"{what} {self.cfg.max_minutes:g} min: {self.total_steps} steps "
                      f"({per_step * 1000:.0f} ms/step)")

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype != torch.float32)

    def _rows(self) -> slice | None:
        if self.world == 1:
            return None
        per = self.micro // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> float:
        self.model.eval()
        losses = []
        for i in range(self.cfg.eval_batches):
            batch = self.task.batch(split, i, self.micro, rows=self._rows())
            with self._autocast():
                losses.append(float(self.task.loss(self.model, batch)))
        self.model.train()
        mean = sum(losses) / len(losses)
        if self.world > 1:
            t = torch.tensor([mean], device=self.device)
            dist.all_reduce(t)
            mean = float(t) / self.world
        return mean

    def train_step(self) -> tuple[float, int]:
        """One optimizer step (grad_accum micro-steps); returns (loss, tokens) of this step."""
        if not self._compile_checked:
            # torch.compile needs a working C++ toolchain: if the first compiled step fails, say so
            # and train eagerly (same maths) rather than lose the run.
            self._compile_checked = True
            try:
                return self._train_step()
            except Exception as e:  # noqa: BLE001 - any compiler failure
                warnings.warn(f"train.compile=true failed ({type(e).__name__}: {str(e)[:200]}); "
                              "training without torch.compile", stacklevel=2)
                self.forward_model = self.wrapped
        return self._train_step()

    def _train_step(self) -> tuple[float, int]:
        cfg = self.cfg
        lr = lr_at(self.step, cfg, self.total_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total, tokens = 0.0, 0
        for micro in range(cfg.grad_accum):
            index = self.step * cfg.grad_accum + micro  # the data position: a pure function of the step
            batch = self.task.batch("train", index, self.micro, rows=self._rows())
            sync = micro == cfg.grad_accum - 1
            if self.fsdp:
                self.model.set_requires_gradient_sync(sync)
            ctx = self.wrapped.no_sync() if (self.world > 1 and not self.fsdp and not sync) else nullcontext()
            with ctx:
                with self._autocast():
                    loss = self.task.loss(self.forward_model, batch) / cfg.grad_accum
                loss.backward()
            total += float(loss.detach())
            tokens += self.task.tokens(batch) * self.world
            if not sync:
                pause_for_tests("accum", self.step)
        if self.world > 1:
            # Each rank saw its own rows: the step's loss is the mean over ranks (what 1 process with
            # the whole batch would report), and every rank then takes the same NaN decision below.
            t = torch.tensor([total], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            total = float(t) / self.world
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip if cfg.grad_clip
                                                   else float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        if not (math.isfinite(total) and math.isfinite(float(grad_norm))):
            what = "loss" if not math.isfinite(total) else "gradient norm"
            if cfg.on_nan == "skip":
                self.optimizer.zero_grad(set_to_none=True)
                self.skipped += 1
                return total, tokens
            last = self.last_checkpoint()
            raise TrainingError(f"non-finite {what} at step {self.step}; the last good checkpoint is "
                                f"{last if last else 'none'} (train.on_nan=skip skips such steps)")
        self.optimizer.step()
        return total, tokens

    def fit(self, *, resume: bool = False, on_eval: Callable[[int, float], None] | None = None) -> dict:
        cfg = self.cfg
        if resume:
            self.resume()
        else:
            torch.manual_seed(cfg.seed)
            random.seed(cfg.seed)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            clean_temporaries(self.ckpt_dir)
            if resume:
                truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        if not resume and (self.is_main or self.fsdp):
            self.save()  # step 0: a kill at any later moment still leaves a readable checkpoint
        metrics_file = open(self.run_dir / "metrics.jsonl", "a") if self.is_main else None
        bar = None
        if self.is_main and cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                       file=sys.stderr, mininterval=1.0)
        stop_reason = "max_steps"
        stop_signal = {"hit": False}
        previous = signal.getsignal(signal.SIGTERM)
        if self.is_main:
            signal.signal(signal.SIGTERM, lambda *_: stop_signal.update(hit=True))
        self.model.train()
        tokens_window, time_window = 0, 0.0
        try:
            while self.total_steps is None or self.step < self.total_steps:
                t0 = time.perf_counter()
                loss, tokens = self.train_step()
                dt = time.perf_counter() - t0
                self.train_seconds += dt
                self.step += 1
                if not cfg.max_steps:
                    if self.total_steps is None:
                        self._fit_schedule_to_time(dt, bar)
                    else:
                        self._step_times.append(dt)
                tokens_window += tokens
                time_window += dt
                if self.is_main and (self.step % cfg.log_every == 0 or self.step == self.total_steps):
                    rate = tokens_window / max(time_window, 1e-9)
                    rec = {"step": self.step, "loss": loss, "lr": lr_at(self.step - 1, cfg, self.total_steps),
                           "tokens_per_s": rate, "train_seconds": self.train_seconds}
                    metrics_file.write(json.dumps(rec) + "\n")
                    metrics_file.flush()
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{rate:,.0f}")
                    tokens_window, time_window = 0, 0.0
                if bar is not None:
                    bar.update(1)
                if self.step % cfg.eval_every == 0 or self.step == self.total_steps:
                    val = self.evaluate()
                    if self.is_main:
                        metrics_file.write(json.dumps({"step": self.step, "val_loss": val,
                                                       "train_seconds": self.train_seconds}) + "\n")
                        metrics_file.flush()
                        if bar is not None:
                            bar.write(f"step {self.step}: val loss {val:.4f}")
                        if on_eval:
                            on_eval(self.step, val)
                    if val < self.best_val:  # val is the same on every rank (all-reduced)
                        self.best_val = val
                        self.save(best=True)
                    if not cfg.max_steps and cfg.max_minutes:
                        self._refit_schedule(bar)
                if self.step % cfg.checkpoint_every == 0:
                    self.save()
                reason = None
                if cfg.max_minutes and self.train_seconds >= cfg.max_minutes * 60:
                    reason = "max_minutes"
                elif stop_signal["hit"]:
                    reason = "SIGTERM"
                if self.world > 1:
                    # under DDP every rank must leave the loop at the same step, or the others
                    # would wait for it in the next all-reduce: stop when any rank wants to
                    t = torch.tensor([int(reason is not None)], device=self.device)
                    dist.all_reduce(t, op=dist.ReduceOp.MAX)
                    reason = reason or ("max_minutes" if int(t) else None)
                if reason is not None:
                    stop_reason = reason
                    break
        except KeyboardInterrupt:
            stop_reason = "interrupted"
            raise
        finally:
            if bar is not None:
                bar.close()
            if self.is_main:
                signal.signal(signal.SIGTERM, previous)
            # the final checkpoint; under FSDP every rank takes part in gathering it
            if self._saved_step != self.step and (self.is_main or self.fsdp):
                try:
                    self.save()
                except CheckpointError as e:  # non-finite weights: keep the last good one
                    print(f"selfattn: {e}", file=sys.stderr)
            if metrics_file is not None:
                metrics_file.close()
        return {"steps": self.step, "stop_reason": stop_reason, "best_val": self.best_val,
                "train_seconds": self.train_seconds, "skipped": self.skipped}


# ---- FSDP (torch.distributed.fsdp.fully_shard) ----------------------------------------------------
def shard_model(model: torch.nn.Module) -> None:
    """Shard each transformer block, then the rest (embeddings, final norm, head) at the root: a
    block's weights are gathered just before it runs and freed after, so a rank holds one block's
    full weights at a time plus its 1/world share of everything."""
    from torch.distributed.fsdp import fully_shard

    from .block import TransformerBlock

    for module in model.modules():
        if isinstance(module, TransformerBlock):
            fully_shard(module)
    fully_shard(model)


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def gather_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                      with_optimizer: bool) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Collective: every rank calls it; rank 0 gets the full (unsharded) weights, with tied
    weights stored once as in a single-process checkpoint, and the optimizer state keyed by name."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    full = get_model_state_dict(model, options=_full_options())
    tied = tied_names(model)
    tensors = {k: v.contiguous() for k, v in full.items() if k not in tied}
    optim = None
    if with_optimizer:
        # Before the first step the optimizer has no state, and asking torch for it would create it
        # by taking a zero-gradient step, which shifts Adam's bias correction by one step.
        optim = get_optimizer_state_dict(model, optimizer, options=_full_options()) if optimizer.state else {}
    return tensors, optim


def tied_names(model: torch.nn.Module) -> set[str]:
    """Names of parameters that repeat an earlier one (e.g. a language-model head tied to the
    token embedding)."""
    seen, tied = set(), set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.add(name)
        seen.add(id(p))
    return tied


def load_full_state(folder: Path, fallback: Path | None, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, optimizer_state: dict) -> None:
    """Every rank reads the checkpoint's full weights and keeps its own shard of them."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    from .checkpoint import WEIGHTS, verify

    verify(folder, fallback)
    tensors = load_file(str(Path(folder) / WEIGHTS))
    tied = tied_names(model)
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    missing = sorted(names - set(tensors) - tied)
    unexpected = sorted(set(tensors) - names)
    if missing or unexpected:
        raise CheckpointError(f"{folder / WEIGHTS} does not fit the model: missing {missing}, "
                              f"unexpected {unexpected}")
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, tensors, options=options)
    if optimizer_state:  # empty: saved before the first step
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
