"""Translation end to end: parallel text -> joint byte-level BPE -> Seq2Seq -> Trainer -> BLEU.

Data sources (``data.source``):

* ``bible``: King James English -> Reina-Valera 1909 Spanish verse pairs (``selfattn.data.bible``),
  split by whole chapters with a fixed seed; test = the 40 held-out chapters.
* ``pairs``: any (source, target) pairs from a TSV or JSONL file (``selfattn.data.pairs``), split
  at random (seed ``data.split_seed``) into train / validation / test by ``data.val_fraction`` and
  ``data.test_fraction``.
* ``synthetic``: strings of letters to copy or reverse (``data.synthetic_task``): a task small
  enough that a tiny model learns it exactly in seconds, for tests.

After training, the best checkpoint translates the test split greedily and with beam search
(BLEU by ``sacrebleu`` for both), and the run folder gets results.json, samples.txt, loss.png and
cross_attention.png (which source tokens each target token looked at).
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .config import ConfigError, check_choice, check_range, from_dict, save_json
from .models.seq2seq import Seq2Seq, Seq2SeqConfig
from .train import TrainConfig, Trainer, describe_best_val

SOURCES = ("bible", "pairs", "synthetic")
SYNTHETIC_TASKS = ("copy", "reverse")
# Special tokens first, so their ids are those Seq2SeqConfig expects by default (pad 0, bos 1, eos 2).
SPECIALS = ("<pad>", "<s>", "</s>")
SPLITS = ("train", "val", "test")


@dataclass
class TranslationDataConfig:
    source: str = "bible"  # bible | pairs (data.path) | synthetic
    path: str | None = None  # TSV or JSONL of (source, target) pairs; setting it selects source=pairs
    source_key: str = "source"  # JSONL keys (or TSV header names)
    target_key: str = "target"
    sword_root: str = "/usr/share/sword"  # where the Debian sword-text-* packages put the modules
    split_seed: int = 0
    val_fraction: float = 0.05  # pairs/synthetic only; the Bible split is by chapter
    test_fraction: float = 0.05
    max_len: int = 128  # training pairs longer than this (tokens, either side) are left out
    vocab_size: int = 8000  # joint BPE over source + target training text
    synthetic_task: str = "reverse"
    synthetic_pairs: int = 3000
    synthetic_symbols: int = 10  # letters a, b, c, ...
    synthetic_max_symbols: int = 8  # sequence length drawn from [2, this]

    def __post_init__(self):
        if self.path is not None and self.source == "bible":
            self.source = "pairs"
        check_choice("data.source", self.source, SOURCES)
        check_choice("data.synthetic_task", self.synthetic_task, SYNTHETIC_TASKS)
        check_range("data.max_len", self.max_len, 4)
        check_range("data.vocab_size", self.vocab_size, 256 + len(SPECIALS))
        check_range("data.val_fraction", self.val_fraction, 0.0, 0.5, lo_open=True)
        check_range("data.test_fraction", self.test_fraction, 0.0, 0.5, lo_open=True)
        check_range("data.synthetic_pairs", self.synthetic_pairs, 20)
        check_range("data.synthetic_symbols", self.synthetic_symbols, 2, 26)
        check_range("data.synthetic_max_symbols", self.synthetic_max_symbols, 2)
        if self.source == "pairs":
            if not self.path:
                raise ConfigError("data.source='pairs' needs data.path=/path/to/pairs.tsv (or .jsonl)")
            if not Path(self.path).expanduser().is_file():
                raise ConfigError(f"data.path={self.path!r} is not a file; give a TSV or JSONL file of pairs")

    def check_available(self) -> None:
        """Called by `selfattn train` before any work: missing Debian packages -> what to install."""
        check_data(self)


@dataclass
class DecodeConfig:
    beam_size: int = 5
    length_penalty: float = 0.6  # GNMT alpha: 0 = raw log-probability, larger favours longer output
    max_len: int = 256  # hard cap on generated tokens; each batch also stops at 1.5 x source + 10
    batch_size: int = 32  # sentences per decoding batch
    test_sentences: int = 0  # translate only the first N test pairs (0 = all)
    samples: int = 5

    def __post_init__(self):
        check_range("decode.beam_size", self.beam_size, 1)
        check_range("decode.length_penalty", self.length_penalty, 0.0)
        check_range("decode.max_len", self.max_len, 1)
        check_range("decode.batch_size", self.batch_size, 1)
        check_range("decode.test_sentences", self.test_sentences, 0)
        check_range("decode.samples", self.samples, 0)


@dataclass
class TranslationRunConfig:
    recipe: str = "custom"
    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    data: TranslationDataConfig = field(default_factory=TranslationDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


# ---------------------------------------------------------------------------------------------- data


def synthetic_pairs(task: str, n: int, symbols: int, max_symbols: int, seed: int) -> list[tuple[str, str]]:
    """n pairs of space-separated letters: the target copies or reverses the source."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"[:symbols]
    out = []
    for _ in range(n):
        words = [rng.choice(letters) for _ in range(rng.randint(2, max_symbols))]
        out.append((" ".join(words), " ".join(words[::-1] if task == "reverse" else words)))
    return out


def _random_split(pairs: list[tuple[str, str]], val: float, test: float, seed: int) -> dict[str, list]:
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_test, n_val = max(1, round(test * len(pairs))), max(1, round(val * len(pairs)))
    if n_test + n_val >= len(pairs):
        raise ValueError(f"{len(pairs)} pairs are too few to hold out {n_val} for validation and {n_test} "
                         "for test and still train; give more pairs or smaller data.*_fraction")
    pick = lambda idx: [pairs[i] for i in sorted(idx)]  # noqa: E731  (keep file order in each split)
    return {"test": pick(order[:n_test]), "val": pick(order[n_test:n_test + n_val]),
            "train": pick(order[n_test + n_val:])}


def check_data(cfg: TranslationDataConfig) -> None:
    """Cheap check that the data can be read, before any work: the Bible needs two Debian packages
    (FileNotFoundError naming them); a pairs file must exist."""
    if cfg.source == "bible":
        from .data.bible import KJV_MODULE, RV1909_MODULE, find_module

        for module in (KJV_MODULE, RV1909_MODULE):
            find_module(module, cfg.sword_root)
    elif cfg.source == "pairs" and not Path(cfg.path).expanduser().is_file():
        raise FileNotFoundError(f"data.path={cfg.path!r} is not a file; give a TSV or JSONL file of pairs")


def text_splits(cfg: TranslationDataConfig) -> dict[str, list[tuple[str, str]]]:
    """{"train"|"val"|"test": [(source text, target text), ...]} for the configured source."""
    if cfg.source == "bible":
        from .data.bible import kjv_rv1909_pairs, split_by_chapter

        split = split_by_chapter(kjv_rv1909_pairs(cfg.sword_root), seed=cfg.split_seed)
        return {"train": [(p.en, p.es) for p in split["train"]],
                "val": [(p.en, p.es) for p in split["validation"]],
                "test": [(p.en, p.es) for p in split["test"]]}
    if cfg.source == "pairs":
        from .data.pairs import read_pairs

        pairs = read_pairs(Path(cfg.path).expanduser(), cfg.source_key, cfg.target_key)
    else:
        pairs = synthetic_pairs(cfg.synthetic_task, cfg.synthetic_pairs, cfg.synthetic_symbols,
                                cfg.synthetic_max_symbols, cfg.split_seed)
    return _random_split(pairs, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)


def train_joint_bpe(texts: list[str], vocab_size: int):
    """One byte-level BPE for both languages (so embeddings can be shared), specials at ids 0, 1, 2."""
    from .tokenizers import ByteBPETokenizer

    base = ByteBPETokenizer.train(texts, vocab_size, special_tokens=SPECIALS)
    ids = [base.token_to_id(s) for s in SPECIALS]
    if ids != [0, 1, 2]:  # the tokenizers package puts special tokens first; make sure of it
        raise RuntimeError(f"special tokens {SPECIALS} got ids {ids}, expected [0, 1, 2]")
    return ByteBPETokenizer(base.hf, pad_id=0, bos_id=1, eos_id=2)


class TranslationTask:
    """Padded (src, tgt_in, labels) batches, a pure function of (seed, split, index).

    Each split is encoded once and ordered by length (with a little fixed noise so that batches
    vary between epochs of the same length); batch ``index`` is a window of ``size`` neighbours in
    that order starting at a position drawn from (seed, split, index). Neighbours have similar
    lengths, so little of each batch is padding.
    """

    def __init__(self, encoded: dict[str, list[tuple[list[int], list[int]]]], *, seed: int,
                 pad_id: int = 0, bos_id: int = 1, eos_id: int = 2):
        self.seed, self.pad_id, self.bos_id, self.eos_id = seed, pad_id, bos_id, eos_id
        self.splits = {}
        for split, pairs in encoded.items():
            if not pairs:
                continue
            noise = random.Random(f"{seed}-{split}-order")
            self.splits[split] = sorted(pairs, key=lambda p: len(p[0]) + len(p[1]) + noise.random() * 4)

    def batch(self, split: str, index: int, size: int, rows: slice | None = None):
        if split not in self.splits:
            raise ValueError(f"split={split!r} has no pairs; available: {sorted(self.splits)}")
        data = self.splits[split]
        size = min(size, len(data))
        start = random.Random(f"{self.seed}-{split}-{index}").randrange(len(data) - size + 1)
        chosen = data[start:start + size]
        if rows is not None:
            chosen = chosen[rows]
        return self.collate(chosen)

    def collate(self, pairs: list[tuple[list[int], list[int]]]):
        """[(src ids, tgt ids)] -> src (B, S), tgt_in (B, T) = BOS + tgt, labels (B, T) = tgt + EOS."""
        B = len(pairs)
        S = max(len(s) for s, _ in pairs)
        T = max(len(t) for _, t in pairs) + 1
        src = torch.full((B, S), self.pad_id, dtype=torch.long)
        tgt_in = torch.full((B, T), self.pad_id, dtype=torch.long)
        labels = torch.full((B, T), self.pad_id, dtype=torch.long)
        for i, (s, t) in enumerate(pairs):
            src[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            tgt_in[i, :len(t) + 1] = torch.tensor([self.bos_id, *t], dtype=torch.long)
            labels[i, :len(t) + 1] = torch.tensor([*t, self.eos_id], dtype=torch.long)
        return src, tgt_in, labels

    def loss(self, model, batch):
        dev = next(model.parameters()).device
        src, tgt_in, labels = (x.to(dev) for x in batch)
        return model(src, tgt_in, labels=labels)[1]

    def tokens(self, batch) -> int:
        src, _, labels = batch
        return int((src != self.pad_id).sum() + (labels != self.pad_id).sum())


def build_data(cfg: TranslationDataConfig):
    """-> (tokenizer, text splits, encoded splits); training pairs over data.max_len are dropped."""
    texts = text_splits(cfg)
    tok = train_joint_bpe([s for s, _ in texts["train"]] + [t for _, t in texts["train"]], cfg.vocab_size)
    encoded = {}
    for split, pairs in texts.items():
        src = tok.encode_batch([s for s, _ in pairs])
        tgt = tok.encode_batch([t for _, t in pairs])
        both = list(zip(src, tgt))
        if split != "test":
            # the test split is translated in full from its text; train/val keep what fits
            both = [(s, t) for s, t in both if 0 < len(s) <= cfg.max_len and 0 < len(t) < cfg.max_len]
        encoded[split] = both
    if not encoded["train"]:
        raise ValueError(f"no training pair fits data.max_len={cfg.max_len} tokens; raise data.max_len")
    return tok, texts, encoded


# ---------------------------------------------------------------------------------------------- training


def save_run_files(run_cfg: TranslationRunConfig, tokenizer):
    def write(folder: Path) -> None:
        save_json(run_cfg, folder / "config.json")
        tokenizer.save(folder / "tokenizer")

    return write


def train_translation(cfg: TranslationRunConfig, run_dir: Path, *, resume: bool = False):
    """Train; returns (Trainer result, tokenizer, text splits, task)."""
    run_dir = Path(run_dir)
    if resume:
        cfg = from_dict(TranslationRunConfig, json.loads((run_dir / "config.json").read_text()))
    tok, texts, encoded = build_data(cfg.data)
    model_cfg = replace(cfg.model, vocab_size=tok.vocab_size, src_vocab_size=None, tgt_vocab_size=None,
                        pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id)
    cfg = replace(cfg, model=model_cfg)
    torch.manual_seed(cfg.train.seed)
    model = Seq2Seq(model_cfg)
    task = TranslationTask(encoded, seed=cfg.train.seed, pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id)
    trainer = Trainer(model, task, cfg.train, run_dir, save_files=save_run_files(cfg, tok))
    if trainer.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_json(cfg, run_dir / "config.json")
        tok.save(run_dir / "tokenizer")
        n = {k: len(v) for k, v in encoded.items()}
        print(f"model: {model.num_params() / 1e6:.2f} M parameters; joint BPE {tok.vocab_size} tokens; pairs: "
              f"train {n['train']:,} (of {len(texts['train']):,} within {cfg.data.max_len} tokens), "
              f"val {n['val']:,}, test {n['test']:,}; precision {trainer.amp_dtype}", file=sys.stderr)
    result = trainer.fit(resume=resume)
    result["params"] = model.num_params()
    return result, tok, texts, task


def load_translator(run_or_checkpoint: str | Path, *, which: str = "best"):
    """A trained translator from a run folder (best, else newest checkpoint) or a checkpoint folder.
    Returns (model in eval mode, tokenizer, run config)."""
    from .checkpoint import complete_checkpoints, load_weights
    from .tokenizers import load_tokenizer

    path = Path(run_or_checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a run folder or a checkpoint folder)")
    if (path / "manifest.json").is_file():
        ckpt = path
    else:
        best = path / "checkpoints" / "best"
        steps = complete_checkpoints(path / "checkpoints") if (path / "checkpoints").is_dir() else []
        if which == "best" and (best / "manifest.json").is_file():
            ckpt = best
        elif steps:
            ckpt = steps[-1]
        else:
            raise FileNotFoundError(f"{path} is not a run folder with a complete checkpoint "
                                    "(no checkpoints/*/manifest.json)")
    saved = json.loads((ckpt / "config.json").read_text())
    if "decode" not in saved or "model" not in saved or "n_encoder_layers" not in saved.get("model", {}):
        raise ValueError(f"{ckpt} is not a translation run (its config.json has no seq2seq model/decode sections)")
    cfg = from_dict(TranslationRunConfig, saved)
    model = Seq2Seq(cfg.model)
    load_weights(ckpt, model)
    model.eval()
    return model, load_tokenizer(ckpt / "tokenizer"), cfg


# ---------------------------------------------------------------------------------------------- decoding


@torch.no_grad()
def translate(model: Seq2Seq, tokenizer, texts: list[str], *, beam_size: int = 1, length_penalty: float = 0.6,
              max_len: int = 256, batch_size: int = 32) -> list[str]:
    """Translate ``texts`` (greedy when beam_size == 1), batched by similar length; order kept."""
    from .translate import beam_search, greedy_decode, tokens_to_lists

    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of str")
    for name, value, lo in (("beam_size", beam_size, 1), ("max_len", max_len, 1), ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise ValueError(f"{name}={value!r} is not allowed; it must be an int >= {lo}")
    if not length_penalty >= 0:
        raise ValueError(f"length_penalty={length_penalty!r} is not allowed; it must be >= 0")
    c = model.config
    dev = next(model.parameters()).device
    encoded = [tokenizer.encode(t) or [c.eos_id] for t in texts]  # an empty line still decodes
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        S = max(len(encoded[i]) for i in idx)
        src = torch.full((len(idx), S), c.pad_id, dtype=torch.long)
        for r, i in enumerate(idx):
            src[r, :len(encoded[i])] = torch.tensor(encoded[i])
        limit = min(max_len, int(1.5 * S) + 10)
        if c.position == "learned":
            limit = min(limit, c.max_len)
        src = src.to(dev)
        if beam_size == 1:
            ids = greedy_decode(model, src, max_len=limit)
        else:
            ids = beam_search(model, src, beam_size=beam_size, max_len=limit, length_penalty=length_penalty)
        for i, row in zip(idx, tokens_to_lists(ids, c.eos_id, c.pad_id)):
            out[i] = tokenizer.decode(row).strip()
    return out


def cross_attention(model: Seq2Seq, src_ids: list[int], tgt_ids: list[int], layer: int = -1) -> torch.Tensor:
    """Cross-attention weights (H, T, S) of decoder ``layer`` when the decoder reads BOS + tgt_ids
    (row t: the step that predicts target token t, or EOS after the last)."""
    c = model.config
    crosses = [[m for m in block.modules() if getattr(m, "cross", False) and hasattr(m, "record_weights")]
               for block in model.decoder]
    mods = [m for group in crosses for m in group]
    if len(mods) != len(model.decoder):
        raise RuntimeError(f"expected one cross-attention module per decoder block, found {len(mods)}")
    target = mods[layer]
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    target.record_weights = True
    try:
        with torch.no_grad():
            model(torch.tensor([src_ids], device=dev), torch.tensor([[c.bos_id, *tgt_ids]], device=dev))
        w = target.last_weights[0]  # (H, T, S)
    finally:
        target.record_weights = False
        target.last_weights = None
        model.train(was)
    return w


def plot_cross_attention(weights: torch.Tensor, src_tokens: list[str], tgt_tokens: list[str], out: str | Path,
                         title: str = "") -> Path:
    """weights (H, T, S) -> the head average (large) and each head: source tokens across, target down."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    H, T, S = weights.shape
    if (T, S) != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(f"weights of shape {tuple(weights.shape)} do not match {len(tgt_tokens)} target and "
                         f"{len(src_tokens)} source tokens")
    clean = lambda toks: [t.replace("\n", "⏎").strip() or "␣" for t in toks]  # noqa: E731
    xs, ys = clean(src_tokens), clean(tgt_tokens)
    w = weights.float().cpu()
    cols = min(H, 4)
    rows = math.ceil(H / cols)
    cell = 0.22
    big = (max(4.0, cell * S + 1.5), max(3.5, cell * T + 1.5))
    fig = plt.figure(figsize=(big[0] + cols * 2.6, max(big[1], rows * 2.6)))
    grid = fig.add_gridspec(rows, cols + 2)
    ax = fig.add_subplot(grid[:, :2])
    im = ax.imshow(w.mean(0).numpy(), cmap="viridis", vmin=0.0, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    ax.set_xticks(range(S), xs, rotation=90, fontsize=7)
    ax.set_yticks(range(T), ys, fontsize=7)
    ax.set_xlabel("source token (attended to)")
    ax.set_ylabel("target token being predicted")
    ax.set_title("mean over heads", fontsize=9)
    for h in range(H):
        a = fig.add_subplot(grid[h // cols, 2 + h % cols])
        a.imshow(w[h].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        a.set_title(f"head {h}", fontsize=8)
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def write_cross_attention_png(model: Seq2Seq, tokenizer, source: str, out: str | Path, max_len: int = 64) -> str:
    """Translate ``source`` greedily and draw the last decoder layer's cross-attention for it."""
    from .translate import greedy_decode, tokens_to_lists

    c = model.config
    src = tokenizer.encode(source)[:max_len] or [c.eos_id]
    ids = greedy_decode(model, torch.tensor([src], device=next(model.parameters()).device),
                        max_len=min(max_len, int(1.5 * len(src)) + 10))
    tgt = tokens_to_lists(ids, c.eos_id, c.pad_id)[0]
    w = cross_attention(model, src, tgt)  # (H, len(tgt) + 1, len(src))
    tgt_labels = [tokenizer.decode([i]) for i in tgt] + ["</s>"]
    plot_cross_attention(w, [tokenizer.decode([i]) for i in src], tgt_labels, out,
                         title=f"cross-attention, last decoder layer ({len(model.decoder)} of {len(model.decoder)})")
    return tokenizer.decode(tgt)


# ---------------------------------------------------------------------------------------------- the recipe


def bleu(hypotheses: list[str], references: list[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def evaluate_test(model, tok, pairs: list[tuple[str, str]], d: DecodeConfig) -> dict:
    """Greedy and beam BLEU on ``pairs`` (sacrebleu, default 13a tokenisation), with timings."""
    sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
    out = {"test_sentences": len(pairs)}
    hyps = {}
    for name, beam in (("greedy", 1), ("beam", d.beam_size)):
        t0 = time.perf_counter()
        hyps[name] = translate(model, tok, sources, beam_size=beam, length_penalty=d.length_penalty,
                               max_len=d.max_len, batch_size=d.batch_size if beam == 1 else max(1, d.batch_size // 2))
        out[f"{name}_seconds"] = round(time.perf_counter() - t0, 2)
        out[f"bleu_{name}"] = round(bleu(hyps[name], refs), 2)
        out[f"exact_match_{name}"] = round(sum(h == r.strip() for h, r in zip(hyps[name], refs)) / len(refs), 4)
    out["beam_size"], out["length_penalty"] = d.beam_size, d.length_penalty
    step = max(1, len(pairs) // max(1, d.samples))
    out["samples"] = [{"source": sources[i], "reference": refs[i], "greedy": hyps["greedy"][i],
                       "beam": hyps["beam"][i]} for i in range(0, len(pairs), step)][: d.samples]
    return out


@torch.no_grad()
def validation_loss(model, task: TranslationTask, batches: int, size: int) -> float:
    was = model.training
    model.eval()
    try:
        return sum(float(task.loss(model, task.batch("val", i, size))) for i in range(batches)) / batches
    finally:
        model.train(was)


def choose_checkpoint(run_dir: Path, task: TranslationTask) -> Path:
    """The best checkpoint, unless training stopped (max_minutes) after it with no evaluation of
    the final weights: then whichever of the two has the lower validation loss."""
    from .checkpoint import complete_checkpoints

    best = run_dir / "checkpoints" / "best"
    steps = complete_checkpoints(run_dir / "checkpoints")
    if not steps:
        return best
    if not (best / "manifest.json").is_file():
        return steps[-1]
    best_step = json.loads((best / "manifest.json").read_text()).get("meta", {}).get("step")
    if best_step is not None and int(steps[-1].name.split("-")[1]) <= int(best_step):
        return best
    cfg = load_translator(best)[2].train
    losses = {p: validation_loss(load_translator(p)[0], task, cfg.eval_batches, cfg.batch_size) for p in (best, steps[-1])}
    return min(losses, key=losses.get)


def run_translation_recipe(cfg: TranslationRunConfig, run_dir: Path, *, resume: bool = False) -> dict:
    """Train, reload the best checkpoint, score the test split (greedy and beam BLEU), write
    results.json, samples.txt, loss.png and cross_attention.png into the run folder."""
    import os

    from .viz import plot_loss

    run_dir = Path(run_dir)
    result, tok, texts, task = train_translation(cfg, run_dir, resume=resume)
    if int(os.environ.get("RANK", 0)) != 0:
        return result
    ckpt = choose_checkpoint(run_dir, task)
    model, tok, saved = load_translator(ckpt)
    result["checkpoint"] = str(ckpt)
    d = saved.decode
    test = texts["test"][: d.test_sentences or None]
    print(f"translating {len(test)} test pairs (greedy, then beam {d.beam_size})", file=sys.stderr)
    scores = evaluate_test(model, tok, test, d)
    result.update(scores)
    plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png", title=f"{saved.recipe}: loss")
    example = min(test, key=lambda p: abs(len(p[0]) - 60))[0] if test else "hello"
    write_cross_attention_png(model, tok, example, run_dir / "cross_attention.png")
    result.update(run_dir=str(run_dir), recipe=saved.recipe, attention_sentence=example)
    (run_dir / "results.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    lines = []
    for s in scores["samples"]:
        lines += [f"source:    {s['source']}", f"reference: {s['reference']}", f"greedy:    {s['greedy']}",
                  f"beam:      {s['beam']}", ""]
    (run_dir / "samples.txt").write_text("\n".join(lines))
    print("\n".join(lines), file=sys.stderr)
    print(f"test BLEU: greedy {scores['bleu_greedy']:.2f}, beam {d.beam_size} {scores['bleu_beam']:.2f} "
          f"({len(test)} pairs); {describe_best_val(result['best_val'])} after {result['steps']} steps "
          f"({result['train_seconds'] / 60:.1f} min of training); run folder: {run_dir} "
          "(results.json, samples.txt, loss.png, cross_attention.png, checkpoints/)", file=sys.stderr)
    return result
