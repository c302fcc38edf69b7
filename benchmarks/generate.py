"""Generation speed of our GPT against transformers' `generate`, same config, same run.

    python benchmarks/generate.py [--quick] [--prompt 128] [--new 128] [--batch 1 8] [--no-compile]

GPT-2 124M configuration with random weights (``--quick``: 4 layers, width 256, 32 + 16 tokens,
batch 1, no no-cache contender). Reported separately: time to first token (the prompt pass) and
per-token latency after it, for our KV-cache decoding in fp32 and bf16 (weights cast), bf16 with
oneDNN-prepacked linears, our decoding without a cache (a full forward per token), and
transformers' `generate` with its cache on (greedy, fixed length). Unless ``--quick`` or
``--no-compile``, also our bf16 model under ``torch.compile(dynamic=True)`` passed to the
unchanged ``selfattn.generate.generate`` (no library hook needed: the compiled module forwards
``config`` and ``make_cache``); its first generation (compile included) goes into the notes, and
a failure drops it with a note.
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

from benchmarks.common import markdown_table, summary_row, write_results, write_summary  # noqa: E402
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


def hf_contender(h, ids, new):
    """(first, full) callables: transformers' greedy `generate` with its cache on, 1 and ``new`` tokens."""
    kw = dict(do_sample=False, use_cache=True, pad_token_id=0)
    return (lambda: h.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw),
            lambda: h.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw))


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


def measure(contenders: dict, new: int, repeats: int) -> dict[str, tuple[float, float]]:
    """{name: (time to first token, per-token latency after it)} from medians of runs in which the
    contenders take turns (the order reversed every other round), after one warm-up each."""
    for first, full in contenders.values():
        first(), full()
    firsts: dict[str, list[float]] = {name: [] for name in contenders}
    fulls: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(repeats):
        for name in (list(contenders) if r % 2 == 0 else list(contenders)[::-1]):
            first, full = contenders[name]
            firsts[name].append(timed(first))
            fulls[name].append(timed(full))
    out = {}
    for name in contenders:
        ttft, total = statistics.median(firsts[name]), statistics.median(fulls[name])
        out[name] = (ttft, max(total - ttft, 1e-9) / (new - 1))
    return out


def compiled_contender(m, ids, new, notes: list[str]):
    """(first, full) callables for torch.compile(m) through our generate loop, or None if compiling fails."""
    t0 = time.perf_counter()
    try:
        cm = torch.compile(m, dynamic=True)
        generate(cm, ids, min(new, 4), temperature=0)  # prefill and decode graphs
    except Exception as e:  # noqa: BLE001 - any compiler failure: report it, keep the eager contenders
        notes.append(f"torch.compile of the bf16 model failed ({type(e).__name__}: "
                     f"{str(e).splitlines()[0][:160] if str(e) else ''}); not timed")
        return None
    notes.append(f"selfattn cache bf16 compiled: first generation {time.perf_counter() - t0:.1f} s "
                 "(compile included; torch.compile(model, dynamic=True), default mode)")
    return (lambda: generate(cm, ids, 1, temperature=0), lambda: generate(cm, ids, new, temperature=0))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small model, 32 + 16 tokens, batch 1, no no-cache contender")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-nocache", action="store_true", help="skip the (slow) no-cache contender")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also time our bf16 model under torch.compile (default: on, off with --quick)")
    p.add_argument("--out-dir", type=Path, default=None, help="where to write the results table")
    p.add_argument("--summary-json", type=Path, default=None, help="also write the runner's JSON summary here")
    args = p.parse_args(argv)
    cfg = GPTConfig()  # GPT-2 124M
    prompt, new, batches = args.prompt, args.new, args.batch
    if args.quick:
        cfg = GPTConfig(n_layer=4, n_embd=256, n_head=4)
        prompt, new, batches = 32, 16, [1]
        args.no_nocache = True
    for flag, value in (("--prompt", prompt), ("--repeats", args.repeats), *(("--batch", b) for b in batches)):
        if value < 1:
            p.error(f"{flag} must be >= 1; got {value}")
    if new < 2:
        p.error(f"--new must be >= 2 (per-token latency is measured after the first token); got {new}")
    if prompt + new > cfg.block_size:
        p.error(f"--prompt + --new must fit the context of {cfg.block_size} tokens; got {prompt + new}")
    if args.compile is None:
        args.compile = not args.quick
    rows, summary, notes = [], [], []
    for B in batches:
        ids = torch.randint(0, cfg.vocab_size, (B, prompt))
        contenders = {}
        for dtype, tag in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            m = ours(cfg, dtype)
            contenders[f"selfattn cache {tag}"] = (
                lambda m=m: generate(m, ids, 1, temperature=0),
                lambda m=m: generate(m, ids, new, temperature=0))
            contenders[f"transformers cache {tag}"] = hf_contender(hf(cfg, dtype), ids, new)
            if dtype == torch.bfloat16 and can_pack(m) is None:
                mp = ours(cfg, dtype)
                pack_linears(mp)  # weights prepacked for oneDNN (selfattn.inference)
                contenders["selfattn cache bf16 packed"] = (
                    lambda m=mp: generate(m, ids, 1, temperature=0),
                    lambda m=mp: generate(m, ids, new, temperature=0))
            if dtype == torch.bfloat16 and args.compile:
                pair = compiled_contender(ours(cfg, dtype), ids, new, notes)
                if pair is not None:
                    contenders["selfattn cache bf16 compiled"] = pair
        if not args.no_nocache and B == 1:
            m = ours(cfg, torch.float32)
            contenders["selfattn no cache fp32"] = (lambda m=m: no_cache(m, ids, 1), lambda m=m: no_cache(m, ids, new))
        results = measure(contenders, new, args.repeats)
        print(f"B={B}: measured {len(contenders)} contenders", file=sys.stderr)
        peer = min((k for k in results if k.startswith("transformers")), key=lambda k: results[k][1])
        best = min((k for k in results if k.startswith("selfattn")), key=lambda k: results[k][1])
        hf_best = results[peer][1]
        for name, (ttft, per_tok) in results.items():
            rows.append([str(B), name, f"{ttft * 1e3:.0f}", f"{per_tok * 1e3:.1f}", f"{B / per_tok:.1f}",
                         f"{hf_best / per_tok:.2f}"])
        summary.append(summary_row(f"batch {B}", "decode tokens/s after the first token", best, peer,
                                   hf_best / results[best][1], "x", goal=3.0 if B == 1 else None))
        first_best = min((k for k in results if k.startswith("selfattn")), key=lambda k: results[k][0])
        first_peer = min((k for k in results if k.startswith("transformers")), key=lambda k: results[k][0])
        summary.append(summary_row(f"batch {B}", "time to first token", first_best, first_peer,
                                   results[first_peer][0] / results[first_best][0], "x"))
    header = ["batch", "contender", "first token ms", "ms/token after", "tokens/s after first",
              "× best transformers"]
    table = markdown_table(header, rows)
    print(table)
    notes = [f"config: {cfg.n_layer} layers, width {cfg.n_embd}, {cfg.n_head} heads, vocab {cfg.vocab_size}; "
             f"prompt {prompt} + {new} new tokens, greedy; random weights",
             f"medians of {args.repeats} runs per contender, contenders alternating, after a warm-up; "
             "bf16 = weights cast to bfloat16",
             *notes]
    path = write_results("generate", table, title="Generation speed vs transformers generate", notes=notes,
                         out_dir=args.out_dir)
    write_summary(args.summary_json, "generate", summary, results=path)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
