"""Training throughput of our GPT against transformers' GPT2LMHeadModel, same config, same run.

    python benchmarks/train_gpt.py [--quick] [--sizes small char] [--repeats 5] [--steps 1]
                                   [--dtypes fp32 bf16] [--compile | --no-compile]

Each contender takes full optimizer steps (forward, backward, fused AdamW) on the same random
batch; contenders take turns and the median of ``--repeats`` samples of ``--steps`` steps each is
reported after ``--warmup`` untimed samples. Contenders: each side eager in fp32 and in bf16
autocast, and (unless ``--no-compile``; off by default with ``--quick``) each side under
``torch.compile`` in the same dtypes, whose compile time (the first step, compile included) goes
into the notes; a side whose compile fails keeps its eager contenders and the failure is noted.
"× best transformers" divides the best transformers contender's time by each one's, so both sides
are compared at their best settings, whichever those turn out to be in this run.

Model FLOPs utilisation (MFU) = model FLOPs per second / the matmul peak of the same dtype
measured in the same run (a 2048² matmul). Sizes follow nanoGPT's configurations: "small" = its
README CPU config (4 layers, 4 heads, width 128, context 64, batch 12) and "char" = its
shakespeare-char config (6 layers, 6 heads, width 384, context 256, batch 64; one step takes
seconds on 2 cores, so ``--sizes char --repeats 5`` takes minutes, most of it compiling).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    alternating_medians, markdown_table, summary_row, write_results, write_summary,
)
from selfattn.models import GPT, GPTConfig  # noqa: E402
from selfattn.train import weight_decay_groups  # noqa: E402

SIZES = {  # name: (n_layer, n_head, n_embd, block_size, batch)
    "small": (4, 4, 128, 64, 12),
    "char": (6, 6, 384, 256, 64),
}
VOCAB = 65
RATIO_GOAL = 1.5  # issue 10: at least 1.5x transformers at both sizes


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    t = alternating_medians({"mm": lambda: a @ b}, repeats=repeats)["mm"]
    return 2 * n**3 / t


DTYPES = ("fp32", "bf16")


def our_model(size: str) -> torch.nn.Module:
    L, H, D, T, _ = SIZES[size]
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=T, n_layer=L, n_head=H, n_embd=D))


def hf_model(size: str) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    L, H, D, T, _ = SIZES[size]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=T, n_layer=L, n_head=H, n_embd=D,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    return model.train()


def make_step(side: str, size: str, dtype: str, compiled: bool) -> Callable[[], None]:
    """One full optimizer step of ``side`` ("selfattn" or "transformers") on a fixed random batch."""
    _, _, _, T, B = SIZES[size]
    model = our_model(size) if side == "selfattn" else hf_model(size)
    params = weight_decay_groups(model, 0.1) if side == "selfattn" else model.parameters()
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, fused=True)
    forward = torch.compile(model) if compiled else model
    amp = dtype == "bf16"
    x = torch.randint(0, VOCAB, (B, T))

    def loss_of():
        if side == "selfattn":
            return forward(x, targets=x)[1]
        return forward(x, labels=x).loss

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = loss_of()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def build_contenders(size: str, dtypes: list[str], compile_too: bool, notes: list[str]) -> dict[str, Callable[[], None]]:
    """Eager contenders for both sides and dtypes; compiled ones too, primed here (their compile
    time goes into ``notes``) and dropped with a note if compiling fails."""
    contenders: dict[str, Callable[[], None]] = {}
    for compiled in ((False, True) if compile_too else (False,)):
        for dtype in dtypes:
            for side in ("selfattn", "transformers"):
                name = f"{side} {dtype}" + (" compiled" if compiled else "")
                if not compiled:
                    contenders[name] = make_step(side, size, dtype, compiled)
                    continue
                t0 = time.perf_counter()
                try:
                    step = make_step(side, size, dtype, compiled)
                    step()  # compiles forward and backward
                except Exception as e:  # noqa: BLE001 - any compiler failure: keep the eager contender
                    notes.append(f"{size}: torch.compile failed for {name} ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:160] if str(e) else ''}); eager only")
                    continue
                notes.append(f"{size}: {name}: first step {time.perf_counter() - t0:.1f} s (compile included)")
                contenders[name] = step
    return contenders


def repeated(step: Callable[[], None], steps: int) -> Callable[[], None]:
    def run():
        for _ in range(steps):
            step()
    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small size only, 3 repeats, no compile")
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=None)
    p.add_argument("--repeats", type=int, default=None, help="timed samples per contender (median; default 5, 3 with --quick)")
    p.add_argument("--steps", type=int, default=1, help="optimizer steps per timed sample")
    p.add_argument("--warmup", type=int, default=1, help="untimed samples per contender before timing")
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also time torch.compile'd contenders (default: on, off with --quick)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--out-dir", type=Path, default=None, help="where to write the results table")
    p.add_argument("--summary-json", type=Path, default=None, help="also write the runner's JSON summary here")
    args = p.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    for flag, value, lo in (("--repeats", repeats, 1), ("--steps", args.steps, 1), ("--warmup", args.warmup, 0),
                            ("--threads", args.threads, 0)):
        if value < lo:
            p.error(f"{flag} must be >= {lo}; got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    compile_too = (not args.quick) if args.compile is None else args.compile
    sizes = args.sizes or (["small"] if args.quick else ["small", "char"])
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows, summary, notes = [], [], []
    for size in sizes:
        L, H, D, T, B = SIZES[size]
        flops = our_model(size).flops_per_token(T, training=True)
        tokens = B * T * args.steps
        t0 = time.perf_counter()
        contenders = build_contenders(size, args.dtypes, compile_too, notes)
        med = alternating_medians({k: repeated(f, args.steps) for k, f in contenders.items()},
                                  repeats=repeats, warmup=args.warmup)
        ours = min((k for k in med if k.startswith("selfattn")), key=med.get)
        peer = min((k for k in med if k.startswith("transformers")), key=med.get)
        mfu = lambda name: 100 * tokens / med[name] * flops / peaks[name.split()[1]]  # noqa: E731
        for name, sec in med.items():
            rows.append([size, name, f"{sec / args.steps * 1e3:.1f}", f"{tokens / sec:,.0f}",
                         f"{med[peer] / sec:.2f}", f"{mfu(name):.0f}%"])
        summary.append(summary_row(size, "training tokens/s", ours, peer, med[peer] / med[ours], "x", goal=RATIO_GOAL))
        # MFU of our best contender in each dtype: fp32 and bf16 have different peaks, so the fastest
        # contender is not always the one closest to its own peak
        for dtype in args.dtypes:
            best = min((k for k in med if k.startswith(f"selfattn {dtype}")), key=med.get)
            summary.append(summary_row(size, "MFU (same-dtype matmul peak)", best, f"{dtype} matmul peak",
                                       mfu(best), "% of peak", goal=50))
        # what the ratio goal asks of the hardware: the peer's MFU times the goal, in the peer's dtype
        need = RATIO_GOAL * mfu(peer)
        summary.append(summary_row(size, "MFU the ratio goal would take", f"{RATIO_GOAL}× {peer}",
                                   f"{peer.split()[1]} matmul peak", need, "% of peak"))
        notes.append(f"{size}: {RATIO_GOAL}× the best transformers contender ({peer}, {mfu(peer):.0f}% of its "
                     f"peak) would take {need:.0f}% of the {peer.split()[1]} matmul peak"
                     + (" (more than the peak: out of reach)" if need > 100 else ""))
        print(f"{size}: built, compiled and measured in {time.perf_counter() - t0:.0f} s; best: {ours} vs {peer}", file=sys.stderr)
    header = ["size", "contender", "ms/step", "tokens/s", "× best transformers", "MFU (same-dtype peak)"]
    table = markdown_table(header, rows)
    print(table)
    notes = [f"matmul peak measured in this run: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
             f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s (2048² matmul)",
             f"medians of {repeats} alternating samples of {args.steps} full optimizer step(s) (fused AdamW) "
             f"after {args.warmup} warm-up sample(s)",
             "bf16 = torch.autocast(cpu, bfloat16) on both sides; same random batch; vocab 65; "
             "compiled = torch.compile(model) (default mode), optimizer eager",
             *([] if compile_too else ["torch.compile contenders not run (--quick or --no-compile)"]),
             *notes]
    path = write_results("train-gpt", table, title="GPT training throughput vs transformers GPT2LMHeadModel",
                         notes=notes, out_dir=args.out_dir)
    write_summary(args.summary_json, "train_gpt", summary, results=path)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
