"""parallel: time per forward pass and per training step against sequence length, for attention
and an LSTM of the same width and depth and a dilated causal CNN of the same width (with enough
layers, ~log2 T, to see the whole sequence), with the sequential operations each needs
(attention: one per layer; LSTM: one per token per layer; CNN: one per layer).

Seed's claim: attention processes all positions at once (like a CNN), an RNN one after another;
attention's cost grows with T² but that term only wins at long sequences. Timings are wall-clock
medians on this machine (shared machines make them noisy; the shape of the curves is the point).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from .baselines import DilatedCausalCNN, RNNTagger, cnn_layers_for, gpt_tagger
from .common import Finding, Settings, errorbar, figure, mean_std, pm, save, seeded, token_loss

NAME = "parallel"
TITLE = "Parallelism: time per step against sequence length"
CLAIM = "attention needs O(1) sequential steps per layer, an RNN O(T)"
FAMILIES = ("attention", "lstm", "cnn")


def _build(fam: str, width: int, n_layer: int, T: int, vocab: int):
    if fam == "attention":
        return gpt_tagger(vocab, vocab, width, n_layer, 4, position="sinusoidal", block_size=T)
    if fam == "lstm":
        return RNNTagger(vocab, vocab, width, n_layer, "lstm")
    return DilatedCausalCNN(vocab, vocab, width, max(n_layer, cnn_layers_for(T)))


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def run(settings: Settings, out: Path) -> Finding:
    lengths = settings.pick((32, 64, 128, 256, 512, 1024, 2048), (32, 128, 512, 1024), (8, 16))
    width, n_layer, batch, vocab = settings.pick(128, 64, 16), 2, settings.pick(8, 8, 2), 16
    repeats = settings.pick(5, 3, 1)
    fwd: dict[tuple[str, int], list[float]] = {}
    step: dict[tuple[str, int], list[float]] = {}
    seq: dict[tuple[str, int], int] = {}
    for T in lengths:
        for fam in FAMILIES:
            for seed in settings.seed_list:
                seeded(seed)
                model = _build(fam, width, n_layer, T, vocab)
                x = torch.randint(0, vocab, (batch, T), generator=torch.Generator().manual_seed(seed))
                opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

                def forward():
                    with torch.no_grad():
                        model(x)

                def train_step():
                    loss = token_loss(model(x), x)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                fwd.setdefault((fam, T), []).append(_median_ms(forward, repeats))
                step.setdefault((fam, T), []).append(_median_ms(train_step, repeats))
                seq[(fam, T)] = model.sequential_ops(T)

    headers = ["T", *[f"{f} fwd ms" for f in FAMILIES], *[f"{f} step ms" for f in FAMILIES],
               *[f"{f} seq ops" for f in FAMILIES]]
    rows = [[str(T), *[pm(fwd[(f, T)], "{:.1f}") for f in FAMILIES], *[pm(step[(f, T)], "{:.1f}") for f in FAMILIES],
             *[str(seq[(f, T)]) for f in FAMILIES]] for T in lengths]
    fig, axes = figure(3, width=4.2)
    for f in FAMILIES:
        errorbar(axes[0], list(lengths), [fwd[(f, T)] for T in lengths], f)
        errorbar(axes[1], list(lengths), [step[(f, T)] for T in lengths], f)
        axes[2].plot(lengths, [seq[(f, T)] for T in lengths], marker="o", label=f)
    for ax, title in zip(axes, ("forward pass", "training step", "sequential operations")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ms (median)")
    axes[0].legend()
    png = save(fig, out / f"{NAME}.png")

    m = {k: mean_std(v)[0] for k, v in step.items()}
    faster = [T for T in lengths if m[("attention", T)] < m[("lstm", T)]]
    # where attention stops being faster than the LSTM, if it does (the T² term winning)
    crossover = next((T for T in lengths if faster and T > faster[0] and T not in faster), None)
    growth_att = m[("attention", lengths[-1])] / m[("attention", lengths[0])]
    growth_lstm = m[("lstm", lengths[-1])] / m[("lstm", lengths[0])]
    agrees = len(faster) > len(lengths) / 2
    where = (f"up to T={max(faster)}" if faster else "at no length measured")
    cross = f"; the LSTM is faster again from T={crossover} (attention's T² term)" if crossover else ""
    sentence = (f"A training step of attention is faster than the LSTM's {where} ({len(faster)}/{len(lengths)} "
                f"lengths){cross}; from T={lengths[0]} to T={lengths[-1]} attention's step time grows "
                f"{growth_att:.1f}x and the LSTM's {growth_lstm:.1f}x, while their sequential operations stay "
                f"{n_layer} vs grow to {seq[('lstm', lengths[-1])]} (on {torch.get_num_threads()} CPU thread(s): "
                f"little parallel hardware for attention to use).")
    data = {"lengths": list(lengths), "forward_ms": {f"{f}|{T}": v for (f, T), v in fwd.items()},
            "step_ms": {f"{f}|{T}": v for (f, T), v in step.items()},
            "sequential_ops": {f"{f}|{T}": v for (f, T), v in seq.items()}, "width": width, "batch": batch,
            "threads": torch.get_num_threads()}
    return Finding(NAME, TITLE, CLAIM, headers, rows, png, sentence, agrees, data=data)
