"""Generation speed of our GPT against transformers' `generate`, same config, same run.

    python benchmarks/generate.py [--quick] [--prompt 128] [--new 128] [--batch 1 8]

GPT-2 124M configuration with random weights (``--quick``: 4 layers, width 256, 32 + 32 tokens).
Reported separately: time to first token (the prompt pass) and per-token latency after it, for
our KV-cache decoding in fp32 and bf16 (weights cast), our decoding without a cache (a full
forward per token), and transformers' `generate` with its cache on (greedy, fixed length).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, write_results  # noqa: E402
from selfattn.generate import generate  # noqa: E402
from selfattn.inference import can_pack, pack_linears  # noqa: E402
from selfattn.models import GPT, GPTConfig  # noqa: E402


def ours(cfg: GPTConfig, dtype: torch.dtype):
    torch.manual_seed(0)
    return GPT(cfg).to(dtype).eval()


def hf(cfg: GPTConfig, dtype: torch.dtype):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size,
                                      n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd)).to(dtype).eval()


@torch.inference_mode()
def no_cache(model, ids, new):
    for _ in range(new):
        nxt = model(ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    return ids


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(name, first, full, new, repeats):
    """(time to first token, per-token latency after it) from medians of alternating-free runs."""
    firsts = [timed(first) for _ in range(repeats)]
    fulls = [timed(full) for _ in range(repeats)]
    ttft, total = statistics.median(firsts), statistics.median(fulls)
    return ttft, max(total - ttft, 1e-9) / (new - 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-nocache", action="store_true", help="skip the (slow) no-cache contender")
    p.add_argument("--out-dir", type=Path, default=None, help="where to write the results table")
    args = p.parse_args(argv)
    cfg = GPTConfig()  # GPT-2 124M
    prompt, new, batches = args.prompt, args.new, args.batch
    if args.quick:
        cfg = GPTConfig(n_layer=4, n_embd=256, n_head=4)
        prompt, new, batches = 32, 32, [1]
    rows = []
    for B in batches:
        ids = torch.randint(0, cfg.vocab_size, (B, prompt))
        contenders = {}
        for dtype, tag in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            m = ours(cfg, dtype)
            contenders[f"selfattn cache {tag}"] = (
                lambda m=m: generate(m, ids, 1, temperature=0),
                lambda m=m: generate(m, ids, new, temperature=0))
            h = hf(cfg, dtype)
            kw = dict(do_sample=False, use_cache=True, pad_token_id=0)
            contenders[f"transformers cache {tag}"] = (
                lambda h=h: h.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw),
                lambda h=h: h.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw))
            if dtype == torch.bfloat16 and can_pack(m) is None:
                mp = ours(cfg, dtype)
                pack_linears(mp)  # weights prepacked for oneDNN (selfattn.inference)
                contenders["selfattn cache bf16 packed"] = (
                    lambda m=mp: generate(m, ids, 1, temperature=0),
                    lambda m=mp: generate(m, ids, new, temperature=0))
        if not args.no_nocache and B == 1:
            m = ours(cfg, torch.float32)
            contenders["selfattn no cache fp32"] = (lambda m=m: no_cache(m, ids, 1), lambda m=m: no_cache(m, ids, new))
        results = {}
        for name, (first, full) in contenders.items():
            first(), full()  # warm-up
            results[name] = measure(name, first, full, new, args.repeats)
            print(f"B={B} {name}: done", file=sys.stderr)
        hf_best = min(v[1] for k, v in results.items() if k.startswith("transformers"))
        for name, (ttft, per_tok) in results.items():
            rows.append([str(B), name, f"{ttft * 1e3:.0f}", f"{per_tok * 1e3:.1f}", f"{B / per_tok:.1f}",
                         f"{hf_best / per_tok:.2f}"])
    header = ["batch", "contender", "first token ms", "ms/token after", "tokens/s after first",
              "× best transformers"]
    table = markdown_table(header, rows)
    print(table)
    notes = [f"config: {cfg.n_layer} layers, width {cfg.n_embd}, {cfg.n_head} heads, vocab {cfg.vocab_size}; "
             f"prompt {prompt} + {new} new tokens, greedy; random weights",
             f"medians of {args.repeats} runs per contender after a warm-up; bf16 = weights cast to bfloat16"]
    path = write_results("generate", table, title="Generation speed vs transformers generate", notes=notes,
                         out_dir=args.out_dir)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
