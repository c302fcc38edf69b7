"""Attention backends against torch's SDPA: time and peak live memory, forward and forward+backward.

    python benchmarks/attention.py            # 256 ... 8192 tokens (long: tens of minutes on 2 cores)
    python benchmarks/attention.py --quick    # 256 and 1024 tokens, auto against SDPA only, 3 repeats, no memory

One row per backend x sequence length x dtype x causal, B=1, H=8, head size 64. Times are the
median of ``--repeats`` runs after a warm-up, the contenders taking turns (see
benchmarks/common.py); "x SDPA" is SDPA's time divided by the backend's (above 1 = faster than
torch's ``F.scaled_dot_product_attention``, measured in the same run). Peak memory is the peak of
live tensor bytes (not RSS) created by the call, inputs excluded. "math" is skipped where its
(L, L) score matrices would pass ``--math-limit-gib``. The table goes to
``benchmarks/results/attention_<machine>_<date>.md``; ``--summary-json`` adds, for the runner,
auto's worst ratio to SDPA over the configurations measured (goal of issue 10: >= 0.95).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    alternating_medians, fmt_bytes, fmt_ms, markdown_table, peak_live_bytes, summary_row, write_results,
    write_summary,
)
from selfattn.attention import _auto_reasons, make_request, scaled_dot_product_attention  # noqa: E402

BATCH, HEADS, HEAD_DIM = 1, 8, 64
BACKENDS = ("auto", "chunked", "blocked", "math")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def math_bytes_estimate(length: int) -> int:
    """Rough fp32 bytes math needs for forward+backward: ~5 (L, L) matrices per head."""
    return 5 * BATCH * HEADS * length * length * 4


def make_call(backend: str, q, k, v, causal: bool, grad: bool, dout):
    def call():
        if grad:
            for t in (q, k, v):
                t.grad = None
        if backend == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        else:
            out = scaled_dot_product_attention(q, k, v, is_causal=causal, backend=backend)
        if grad:
            out.backward(dout)
    if grad:
        return call

    def no_grad_call():
        with torch.no_grad():
            call()
    return no_grad_call


def measure(length: int, dtype: torch.dtype, causal: bool, backends, repeats: int, math_limit: int, memory: bool):
    """{backend: {"fwd": s, "fwdbwd": s, "mem_fwd": bytes, "mem_fwdbwd": bytes}} for one configuration."""
    torch.manual_seed(0)
    shape = (BATCH, HEADS, length, HEAD_DIM)
    q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(3))
    dout = torch.randn(shape, dtype=dtype)
    names = ["sdpa"] + [b for b in backends if not (b == "math" and math_bytes_estimate(length) > math_limit)]
    res: dict[str, dict[str, float]] = {n: {} for n in names}
    for mode, grad in (("fwd", False), ("fwdbwd", True)):
        calls = {n: make_call(n, q, k, v, causal, grad, dout) for n in names}
        # samples of >= 50 ms: a call of 1-4 ms timed once swung by up to 1.6x between two runs of
        # the same kernel (auto = torch) in the 2026-11-28 full run
        for n, t in alternating_medians(calls, repeats=repeats, min_sample_s=0.05).items():
            res[n][mode] = t
        if memory:
            for n, fn in calls.items():
                res[n]["mem_" + mode] = peak_live_bytes(fn)
    return res


def auto_choice(length: int, dtype: torch.dtype, causal: bool, grad: bool) -> str:
    q = torch.empty(BATCH, HEADS, length, HEAD_DIM, dtype=dtype, requires_grad=grad)
    return _auto_reasons(make_request(q, q, q, is_causal=causal))[0]


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="only 256 and 1024 tokens, auto against SDPA (unless --backends), 3 repeats, no memory")
    ap.add_argument("--lengths", type=int, nargs="+", help="sequence lengths (default 256 ... 8192)")
    ap.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    ap.add_argument("--causal", nargs="+", choices=["no", "yes"], default=["no", "yes"])
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=None, help=f"default: {' '.join(BACKENDS)}")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed runs per contender (median), >= 5 for reports (default 5, 3 with --quick)")
    ap.add_argument("--math-limit-gib", type=float, default=8.0)
    ap.add_argument("--no-memory", action="store_true", help="skip the live-memory measurement")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--summary-json", type=Path, default=None, help="also write the runner's JSON summary here")
    ap.add_argument("--shape", type=int, nargs=3, metavar=("B", "H", "D"), default=None,
                    help="batch, heads, head size (default 1 8 64; a training shape: 32 4 48)")
    args = ap.parse_args(argv)
    if args.backends is None:
        args.backends = ["auto"] if args.quick else list(BACKENDS)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1; got {args.repeats}")
    if args.quick:
        args.no_memory = True
    global BATCH, HEADS, HEAD_DIM
    if args.shape:
        BATCH, HEADS, HEAD_DIM = args.shape
    if args.threads is not None:
        if args.threads < 1:
            ap.error(f"--threads must be >= 1; got {args.threads}")
        torch.set_num_threads(args.threads)
    lengths = args.lengths or ([256, 1024] if args.quick else [256, 512, 1024, 2048, 4096, 8192])
    if any(n < 1 for n in lengths):
        ap.error(f"--lengths must be positive; got {lengths}")
    math_limit = int(args.math_limit_gib * 2**30)

    header = ["L", "dtype", "causal", "backend", "fwd ms", "fwd x SDPA", "fwd+bwd ms", "fwd+bwd x SDPA",
              "peak fwd", "peak fwd+bwd"]
    rows: list[list[str]] = []
    skipped: list[str] = []
    auto_ratios: dict[str, list[tuple[float, str]]] = {"fwd": [], "fwdbwd": []}  # (sdpa / auto, config)
    for length in lengths:
        for dname in args.dtypes:
            for causal in (c == "yes" for c in args.causal):
                res = measure(length, DTYPES[dname], causal, args.backends, args.repeats, math_limit, not args.no_memory)
                if "math" in args.backends and "math" not in res:
                    skipped.append(f"math skipped at L={length} (~{math_bytes_estimate(length) / 2**30:.1f} GiB estimated)")
                base = res["sdpa"]
                if "auto" in res:
                    where = f"L={length} {dname} {'causal' if causal else 'non-causal'}"
                    for m in auto_ratios:
                        auto_ratios[m].append((base[m] / res["auto"][m], where))
                for name, r in res.items():
                    label = name
                    if name == "auto":
                        picks = {auto_choice(length, DTYPES[dname], causal, g) for g in (False, True)}
                        label = f"auto ({'/'.join(sorted(picks))})"
                    ratio = lambda m: "—" if name == "sdpa" else f"{base[m] / r[m]:.2f}"  # noqa: E731
                    row = [str(length), dname, "yes" if causal else "no", label,
                           fmt_ms(r["fwd"]), ratio("fwd"), fmt_ms(r["fwdbwd"]), ratio("fwdbwd"),
                           fmt_bytes(r.get("mem_fwd")), fmt_bytes(r.get("mem_fwdbwd"))]
                    rows.append(row)
                    print(" | ".join(row), flush=True)
    table = markdown_table(header, rows)
    notes = [
        f"B={BATCH}, H={HEADS}, head size {HEAD_DIM}; medians of {args.repeats} alternating runs after a warm-up",
        "x SDPA = SDPA time / backend time (above 1: faster than torch's F.scaled_dot_product_attention)",
        "peak = live tensor bytes created by the call (inputs excluded), not RSS",
        "auto (x): the backend auto picks for this configuration (forward-only / with gradients)",
        *sorted(set(skipped)),
    ]
    path = write_results("attention", table, title="Attention backends vs torch SDPA", notes=notes, out_dir=args.out_dir)
    summary = []
    for mode, label in (("fwd", "forward"), ("fwdbwd", "forward+backward")):
        if auto_ratios[mode]:
            worst, where = min(auto_ratios[mode])
            summary.append(summary_row(f"worst of {len(auto_ratios[mode])}: {where}", f"{label} time", "auto",
                                       "torch SDPA", worst, "x", goal=0.95))
    write_summary(args.summary_json, "attention", summary, results=path)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
