"""GPT-2 124M on one GPU: training MFU (bf16, torch.compile, torch's flash attention), generation
speed, and our attention against torch's SDPA, in one short table (a few minutes on one H100).

    bash benchmarks/gpu.sh                      # needs a CUDA device; exits 2 with one line if none
    bash benchmarks/gpu.sh --peak-tflops 989    # the dense bf16 peak MFU is measured against
    bash benchmarks/gpu.sh --dry-run            # the same code path on CPU, tiny config, seconds
    bash benchmarks/gpu.sh --parts train --attn-backend triton   # training MFU on our Triton kernels

1. Training: our GPT at GPT-2 124M's shape (12 layers, 12 heads, width 768, context 1024; vocab
   padded from 50257 to 50304, a multiple of 64, as nanoGPT does), ``attn_backend="torch"`` (torch's
   ``F.scaled_dot_product_attention``, whose flash kernel serves causal bf16 on CUDA), fp32
   weights under bf16 autocast, fused AdamW, ``torch.compile(model)``. MFU = model FLOPs per
   second (``GPT.flops_per_token``: 6 per weight plus attention, per trained token) / the peak
   given by ``--peak-tflops`` (default 989: H100 SXM dense bf16; use 756 for H100 PCIe).
   Issue 10's goal: MFU >= 45%.
2. Generation: batch 1, 128-token prompt + 128 new tokens, bf16 weights, random weights, greedy,
   through ``selfattn.generate.generate`` (eager), against transformers' ``generate`` with its
   cache when transformers is installed.
3. Attention: ``backend="auto"`` against ``F.scaled_dot_product_attention``, bf16, causal,
   B=8, H=12, head size 64, forward and forward+backward; likewise ``backend="triton"`` (our own
   kernels, opt-in) when triton is installed, with its error against fp32 next to SDPA's.

Writes ``benchmarks/results/gpu_<gpu>_<date>.md`` (with ``--dry-run``: ``runs/gpu-dry-run/``,
numbers meaningless). ``--budget-s`` stops starting new parts once that many seconds have passed.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, write_results  # noqa: E402
from selfattn.attention import BACKENDS, make_request, scaled_dot_product_attention  # noqa: E402
from selfattn.generate import generate  # noqa: E402
from selfattn.models import GPT, GPTConfig  # noqa: E402
from selfattn.train import weight_decay_groups  # noqa: E402

H100_SXM_BF16_TFLOPS = 989.0  # dense (no sparsity), NVIDIA's H100 SXM datasheet
DRY_OUT = Path("runs") / "gpu-dry-run"


@dataclass(frozen=True)
class Plan:
    """Every size the script uses; the real one and the dry run differ only here."""
    model: GPTConfig
    batch: int
    steps: int
    warmup: int
    prompt: int
    new: int
    attn_shape: tuple[int, int, int]  # B, H, head size
    attn_lengths: tuple[int, ...]
    repeats: int


def real_plan(batch: int, steps: int) -> Plan:
    cfg = GPTConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                    attn_backend="torch", dropout=0.0)
    return Plan(cfg, batch=batch, steps=steps, warmup=3, prompt=128, new=128, attn_shape=(8, 12, 64),
                attn_lengths=(1024, 4096), repeats=5)


def dry_plan() -> Plan:
    cfg = GPTConfig(vocab_size=128, block_size=64, n_layer=2, n_head=2, n_embd=64, attn_backend="torch", dropout=0.0)
    return Plan(cfg, batch=2, steps=2, warmup=1, prompt=8, new=8, attn_shape=(1, 2, 16), attn_lengths=(64,), repeats=2)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall seconds of ``fn`` after one warm-up call, the device synchronised around each."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------------------------- training
def train_part(plan: Plan, device: torch.device, compile_model: bool, peak_flops: float) -> tuple[list[list[str]], list[str]]:
    cfg, B, T = plan.model, plan.batch, plan.model.block_size
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(weight_decay_groups(model, 0.1), lr=6e-4, weight_decay=0.1, fused=True)
    forward = torch.compile(model) if compile_model else model
    x = torch.randint(0, cfg.vocab_size, (B, T), device=device)
    y = torch.randint(0, cfg.vocab_size, (B, T), device=device)
    notes = []

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            _, loss = forward(x, targets=y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()  # compiles when compiling
    sync(device)
    first = time.perf_counter() - t0
    notes.append(f"training: first step {first:.1f} s" + (" (torch.compile included)" if compile_model else ""))
    for _ in range(plan.warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(plan.steps):
        step()
    sync(device)
    per_step = (time.perf_counter() - t0) / plan.steps
    tokens_s = B * T / per_step
    mfu = tokens_s * model.flops_per_token(T, training=True) / peak_flops
    mem = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else "—"
    attn = {"torch": "SDPA", "triton": "our Triton kernels"}.get(cfg.attn_backend, cfg.attn_backend)
    what = f"GPT-2 124M shape, batch {B}×{T}, bf16 autocast, {'compiled' if compile_model else 'eager'}, {attn}"
    rows = [["train", what, "ms/step", f"{per_step * 1e3:.1f}", "—"],
            ["train", what, "tokens/s", f"{tokens_s:,.0f}", "—"],
            ["train", what, f"MFU vs {peak_flops / 1e12:.0f} TFLOP/s", f"{100 * mfu:.1f}%", "≥ 45%"],
            ["train", what, "peak memory allocated", mem, "—"]]
    notes.append(f"training: mean of {plan.steps} steps after {plan.warmup} warm-up steps; "
                 f"{model.flops_per_token(T, training=True) / 1e9:.2f} GFLOP per token")
    return rows, notes


# ----------------------------------------------------------------------------------- generation
def generation_part(plan: Plan, device: torch.device) -> tuple[list[list[str]], list[str]]:
    cfg = plan.model
    torch.manual_seed(0)
    ours = GPT(cfg).to(device=device, dtype=torch.bfloat16).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, plan.prompt), device=device)
    sides = {"selfattn": (lambda: generate(ours, ids, 1, temperature=0),
                          lambda: generate(ours, ids, plan.new, temperature=0))}
    notes = []
    try:
        from transformers import GPT2Config, GPT2LMHeadModel

        hf = GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_layer=cfg.n_layer,
                                        n_head=cfg.n_head, n_embd=cfg.n_embd)).to(device=device, dtype=torch.bfloat16).eval()
        kw = dict(do_sample=False, use_cache=True, pad_token_id=0)
        sides["transformers"] = (lambda: hf.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw),
                                 lambda: hf.generate(ids, max_new_tokens=plan.new, min_new_tokens=plan.new, **kw))
    except ImportError as e:
        notes.append(f"generation: transformers not importable ({e}); ours only")
    rows, speeds = [], {}
    for name, (first, full) in sides.items():
        ttft = median_time(first, device, plan.repeats)
        total = median_time(full, device, plan.repeats)
        per_tok = max(total - ttft, 1e-9) / (plan.new - 1)
        speeds[name] = 1 / per_tok
        what = f"{name}, batch 1, {plan.prompt} + {plan.new} tokens, bf16"
        rows += [["generate", what, "first token ms", f"{ttft * 1e3:.1f}", "—"],
                 ["generate", what, "tokens/s after first", f"{1 / per_tok:,.0f}", "—"]]
    if "transformers" in speeds:
        rows.append(["generate", "selfattn vs transformers", "decode speed ratio",
                     f"{speeds['selfattn'] / speeds['transformers']:.2f}×", "—"])
    notes.append(f"generation: medians of {plan.repeats} runs after a warm-up; eager decoding (no compile)")
    return rows, notes


# ------------------------------------------------------------------------------------ attention
def attention_part(plan: Plan, device: torch.device) -> tuple[list[list[str]], list[str]]:
    """auto and our Triton kernels (when they can run here) against torch's SDPA; and the Triton
    kernels' error against an fp32 reference next to SDPA's own, since they have not run on a GPU
    before this script."""
    B, H, D = plan.attn_shape
    rows, notes = [], [f"attention: medians of {plan.repeats} runs after a warm-up"]
    for L in plan.attn_lengths:
        torch.manual_seed(0)
        q, k, v = (torch.randn(B, H, L, D, device=device, dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        dout = torch.randn(B, H, L, D, device=device, dtype=torch.bfloat16)
        fns = {"auto": lambda: scaled_dot_product_attention(q, k, v, is_causal=True, backend="auto"),
               "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)}
        why = BACKENDS["triton"].unsupported(make_request(q, k, v, is_causal=True))
        if why is None:
            fns["triton"] = lambda: scaled_dot_product_attention(q, k, v, is_causal=True, backend="triton")
            rows.append(triton_error_row(q, k, v, dout, L))
        elif L == plan.attn_lengths[0]:
            notes.append(f"attention: backend='triton' not run: {why}")
        for mode in ("fwd", "fwd+bwd"):
            t = {}
            for name, fn in fns.items():
                if mode == "fwd":
                    def call(fn=fn):
                        with torch.no_grad():
                            fn()
                else:
                    def call(fn=fn):
                        fn().backward(dout)
                t[name] = median_time(call, device, plan.repeats)
            shape = f"L={L}, bf16 causal, B={B} H={H} d={D}"
            for name, goal in (("auto", "≥ 0.95×"), ("triton", "— (opt-in)")):
                if name in t:
                    rows.append(["attention", f"{name} vs SDPA, {shape}", f"{mode} ms ({name} / sdpa)",
                                 f"{t[name] * 1e3:.2f} / {t['sdpa'] * 1e3:.2f} = {t['sdpa'] / t[name]:.2f}×", goal])
    return rows, notes


def triton_error_row(q, k, v, dout, L: int) -> list[str]:
    """Max |error| of the output and dq against the same call in fp32, for Triton and for SDPA."""
    def out_and_dq(fn, *args):
        args = [a.detach().requires_grad_() for a in args]
        out = fn(*args)
        out.backward(dout.to(out.dtype))
        return out.float(), args[0].grad.float()

    def sdpa(a, b, c):
        return F.scaled_dot_product_attention(a, b, c, is_causal=True)

    def ours(a, b, c):
        return scaled_dot_product_attention(a, b, c, is_causal=True, backend="triton")

    ref = out_and_dq(sdpa, q.float(), k.float(), v.float())
    err = {}
    for name, fn in (("triton", ours), ("sdpa", sdpa)):
        got = out_and_dq(fn, q, k, v)
        err[name] = [(g - r).abs().max().item() for g, r in zip(got, ref)]
    ok = all(t <= 2 * s + 1e-3 for t, s in zip(err["triton"], err["sdpa"]))
    return ["attention", f"triton vs fp32, L={L}, bf16 causal", "max abs error of out, dq (triton / sdpa)",
            f"{err['triton'][0]:.1e} / {err['sdpa'][0]:.1e}, {err['triton'][1]:.1e} / {err['sdpa'][1]:.1e}"
            + ("" if ok else " (too large)"), "≤ 2× sdpa's"]


# ------------------------------------------------------------------------------------------ main
def gpu_tag(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu-dry-run"
    return "-".join(re.findall(r"[a-z0-9]+", torch.cuda.get_device_name(device).lower())[:4])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/gpu.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="the same code path on CPU with a tiny config (seconds)")
    p.add_argument("--peak-tflops", type=float, default=H100_SXM_BF16_TFLOPS,
                   help="dense bf16 peak of the GPU in TFLOP/s, for MFU (H100 SXM 989, H100 PCIe 756, H200 989)")
    p.add_argument("--batch", type=int, default=16, help="training batch (sequences of 1024 tokens)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the training model (default: on; off with --dry-run)")
    p.add_argument("--attn-backend", choices=["torch", "triton"], default="torch",
                   help="the training model's attention: torch's SDPA (flash) or our Triton kernels")
    p.add_argument("--parts", nargs="+", choices=["train", "generate", "attention"],
                   default=["train", "generate", "attention"])
    p.add_argument("--budget-s", type=float, default=420.0, help="start no new part after this many seconds")
    p.add_argument("--out-dir", type=Path, default=None,
                   help=f"where the results file goes (default benchmarks/results; {DRY_OUT} with --dry-run)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, value in (("--peak-tflops", args.peak_tflops), ("--batch", args.batch), ("--steps", args.steps),
                        ("--budget-s", args.budget_s)):
        if value <= 0:
            print(f"gpu.py: {flag} must be > 0; got {value}", file=sys.stderr)
            return 2
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu.py: no CUDA device here; run it on a GPU machine, or pass --dry-run for the CPU check", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    plan = dry_plan() if args.dry_run else real_plan(args.batch, args.steps)
    plan = dataclasses.replace(plan, model=dataclasses.replace(plan.model, attn_backend=args.attn_backend))
    compile_model = (not args.dry_run) if args.compile is None else args.compile
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (optimizer, loss) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    t_start = time.perf_counter()
    rows: list[list[str]] = []
    notes: list[str] = []
    parts = {"train": lambda: train_part(plan, device, compile_model, args.peak_tflops * 1e12),
             "generate": lambda: generation_part(plan, device),
             "attention": lambda: attention_part(plan, device)}
    for name in args.parts:
        elapsed = time.perf_counter() - t_start
        if elapsed > args.budget_s:
            notes.append(f"{name}: not run, {elapsed:.0f} s had passed (--budget-s {args.budget_s:.0f})")
            continue
        t0 = time.perf_counter()
        try:
            r, n = parts[name]()
        except Exception as e:  # noqa: BLE001 - one part failing must not lose the others' numbers
            if args.dry_run:
                raise  # the dry run is the test: a failure there is a bug to see
            r, n = [[name, "failed", "—", "—", "—"]], [f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"]
        rows += r
        notes += n + [f"{name}: {time.perf_counter() - t0:.0f} s"]
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    table = markdown_table(["part", "what", "measure", "value", "goal"], rows)
    print(table)
    head = [f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU (dry run: numbers mean nothing)'}",
            f"cuda: {torch.version.cuda}", f"command: bash benchmarks/gpu.sh {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip(),
            f"total {time.perf_counter() - t_start:.0f} s", *notes]
    out_dir = args.out_dir or (DRY_OUT if args.dry_run else None)
    path = write_results("gpu", table, title="GPT-2 124M on one GPU: training MFU, generation, attention",
                         notes=head, out_dir=out_dir, machine=gpu_tag(device))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
