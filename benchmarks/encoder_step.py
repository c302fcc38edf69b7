"""What dropout on the attention weights costs one fine-tuning step of a MiniLM-shaped encoder.

    python benchmarks/encoder_step.py [--repeats 5] [--batch 16] [--seq 256] [--quick]

The encoder has all-MiniLM-L6-v2's shape (6 post-norm layers, width 384, 12 heads, vocabulary
30,522; random weights, so no package is needed) with a two-class head, bf16 autocast and fused
AdamW, as `selfattn train imdb-minilm` runs it. Two contenders, alternated, medians after a
warm-up: hidden dropout 0.1 with attention dropout 0.1 (BERT's recipe) and with attention dropout
0 (the imdb-minilm recipe). Any attention dropout sends torch's SDPA to its unfused math path and
draws a (B, H, T, T) random mask per layer; a profile of one step of the first contender gives
the share of the time spent drawing random masks (``aten::bernoulli_``, hidden dropout included).
Writes benchmarks/results/encoder-step_<machine>_<date>.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import profile

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import alternating_medians, markdown_table, write_results  # noqa: E402
from selfattn.models import Encoder, EncoderConfig  # noqa: E402

MINILM_SHAPE = dict(vocab_size=30522, max_position=512, n_layer=6, n_head=12, n_embd=384, ffn_hidden=1536,
                    pooling="mean", n_classes=2, dropout=0.1)


def make_step(attn_dropout: float, batch: int, seq: int):
    torch.manual_seed(0)
    model = Encoder(EncoderConfig(**MINILM_SHAPE, attn_dropout=attn_dropout)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    ids = torch.randint(1000, 20000, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    labels = torch.randint(0, 2, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def mask_drawing_share(step) -> float:
    """Fraction of one step's CPU time spent in aten::bernoulli_ (drawing dropout masks)."""
    with profile() as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key == "aten::bernoulli_") / total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="batch 2, 64 tokens, 2 repeats")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out-dir", type=Path, default=None, help="where to write the results table")
    args = p.parse_args(argv)
    batch, seq, repeats = (2, 64, 2) if args.quick else (args.batch, args.seq, args.repeats)
    for flag, value in (("--batch", batch), ("--seq", seq), ("--repeats", repeats)):
        if value < 1:
            p.error(f"{flag} must be >= 1; got {value}")
    contenders = {"attention dropout 0.1": make_step(0.1, batch, seq),
                  "attention dropout 0": make_step(0.0, batch, seq)}
    med = alternating_medians(contenders, repeats=repeats)
    share = mask_drawing_share(contenders["attention dropout 0.1"])
    base = med["attention dropout 0.1"]
    rows = [[name, f"{sec:.3f}", f"{batch * seq / sec:,.0f}", f"{base / sec:.2f}"] for name, sec in med.items()]
    table = markdown_table(["contender", "s/step", "tokens/s", "× attention dropout 0.1"], rows)
    print(table)
    notes = [f"MiniLM-L6 shape, random weights, hidden dropout 0.1, bf16 autocast, fused AdamW; batch {batch} × "
             f"{seq} tokens; medians of {repeats} alternating steps after one warm-up",
             f"with attention dropout 0.1, drawing dropout masks (aten::bernoulli_) took {100 * share:.0f}% of "
             f"one profiled step's CPU time"]
    path = write_results("encoder-step", table, title="Encoder fine-tuning step: the cost of attention dropout",
                         notes=notes, out_dir=args.out_dir)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
