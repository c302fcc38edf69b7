"""Sentiment from scratch: a small encoder with its own WordPiece vocabulary on the IMDB train
reviews, sized for about 15 minutes on 2 CPU cores. ``train_mlm_steps=N`` pretrains it with
masked-language modelling on the same reviews first.
"""

from ..models.encoder import EncoderConfig
from ..sentiment import SentimentDataConfig, SentimentRunConfig, run_sentiment_recipe
from ..train import TrainConfig

NAME = "imdb-sentiment"
DESCRIPTION = "small encoder from scratch on IMDB reviews, own WordPiece vocabulary (~15 min on 2 CPU cores)"


def default_config() -> SentimentRunConfig:
    return SentimentRunConfig(
        recipe=NAME,
        mode="encoder",
        init="scratch",
        model=EncoderConfig(vocab_size=8192, max_position=256, type_vocab_size=0, n_layer=2, n_head=4,
                            n_embd=128, ffn_hidden=512, prenorm=True, dropout=0.1, pooling="mean",
                            n_classes=2, norm_eps=1e-5),
        data=SentimentDataConfig(source="imdb", max_len=256, truncate="head_tail", tokenizer="wordpiece",
                                 vocab_size=8192),
        train=TrainConfig(max_steps=0, batch_size=32, lr=1e-3, min_lr=5e-5, warmup_steps=100,
                          weight_decay=0.05, beta2=0.98, eval_every=200, eval_batches=20,
                          checkpoint_every=400, max_minutes=14.0, dtype="auto"),
    )


def run(cfg: SentimentRunConfig, run_dir, resume: bool = False) -> dict:
    return run_sentiment_recipe(cfg, run_dir, resume=resume)
