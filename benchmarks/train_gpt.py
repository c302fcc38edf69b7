"""Training throughput of our GPT against transformers' GPT2LMHeadModel, same config, same run.

    python benchmarks/train_gpt.py [--quick] [--sizes small char] [--repeats 5]

Each contender takes full optimizer steps (forward, backward, fused AdamW) on the same random
batch; steps alternate between contenders and the median of ``--repeats`` is reported after a
warm-up step. Model FLOPs utilisation (MFU) = model FLOPs per second / the matmul peak of the
same dtype measured in the same run (a 2048² matmul). Sizes follow nanoGPT's configurations:
"small" = its README CPU config (4 layers, 4 heads, width 128, context 64, batch 12) and "char" =
its shakespeare-char config (6 layers, 6 heads, width 384, context 256, batch 64).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import alternating_medians, markdown_table, write_results  # noqa: E402
from selfattn.models import GPT, GPTConfig  # noqa: E402
from selfattn.train import weight_decay_groups  # noqa: E402

SIZES = {  # name: (n_layer, n_head, n_embd, block_size, batch)
    "small": (4, 4, 128, 64, 12),
    "char": (6, 6, 384, 256, 64),
}
VOCAB = 65


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    t = alternating_medians({"mm": lambda: a @ b}, repeats=repeats)["mm"]
    return 2 * n**3 / t


def our_step(size: str, amp: bool):
    L, H, D, T, B = SIZES[size]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=T, n_layer=L, n_head=H, n_embd=D))
    opt = torch.optim.AdamW(weight_decay_groups(model, 0.1), lr=1e-3, fused=True)
    x = torch.randint(0, VOCAB, (B, T))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            _, loss = model(x, targets=x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, model.flops_per_token(T, training=True), B * T


def hf_step(size: str, amp: bool):
    from transformers import GPT2Config, GPT2LMHeadModel

    L, H, D, T, B = SIZES[size]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=T, n_layer=L, n_head=H, n_embd=D,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
    x = torch.randint(0, VOCAB, (B, T))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small size only, 3 repeats")
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--out-dir", type=Path, default=None, help="where to write the results table")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.sizes or (["small"] if args.quick else ["small", "char"])
    repeats = 3 if args.quick else args.repeats
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    for size in sizes:
        contenders, flops, tokens = {}, None, None
        for amp, tag in ((False, "fp32"), (True, "bf16")):
            step, flops, tokens = our_step(size, amp)
            contenders[f"selfattn {tag}"] = step
            contenders[f"transformers {tag}"] = hf_step(size, amp)
        t0 = time.perf_counter()
        med = alternating_medians(contenders, repeats=repeats)
        best_hf = min(v for k, v in med.items() if k.startswith("transformers"))
        for name, sec in med.items():
            tag = name.split()[-1]
            tps = tokens / sec
            rows.append([size, name, f"{sec * 1e3:.1f}", f"{tps:,.0f}", f"{best_hf / sec:.2f}",
                         f"{100 * tps * flops / peaks[tag]:.0f}%"])
        print(f"{size}: measured in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    header = ["size", "contender", "ms/step", "tokens/s", "× best transformers", "MFU (same-dtype peak)"]
    table = markdown_table(header, rows)
    print(table)
    notes = [f"matmul peak measured in this run: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
             f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s (2048² matmul)",
             f"medians of {repeats} alternating full optimizer steps (fused AdamW) after one warm-up",
             "bf16 = torch.autocast(cpu, bfloat16) on both sides; same random batch; vocab 65"]
    path = write_results("train-gpt", table, title="GPT training throughput vs transformers GPT2LMHeadModel",
                         notes=notes,
                         out_dir=args.out_dir)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
