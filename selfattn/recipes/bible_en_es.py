"""English -> Spanish translation with the original encoder-decoder transformer, sized for about
30 minutes of training on 2 CPU cores.

Data: King James Version -> Reina-Valera 1909 verse pairs (Debian packages ``sword-text-kjv`` and
``sword-text-sparv``), split by whole chapters (seed 0): 40 test chapters (1,107 pairs), 30
validation chapters, the rest for training. A joint byte-level BPE of 8,000 tokens lets source
and target share one embedding table, which is also the output layer.

``data.path=pairs.tsv`` (or .jsonl) trains the same pipeline on your own pairs;
``data.source=synthetic`` on a copy/reverse toy task (for tests).
"""

from ..models.seq2seq import Seq2SeqConfig
from ..train import TrainConfig
from ..translation import DecodeConfig, TranslationDataConfig, TranslationRunConfig, run_translation_recipe

NAME = "bible-en-es"
DESCRIPTION = "encoder-decoder transformer, English -> Spanish Bible verses, greedy + beam BLEU (30 min on 2 CPU cores)"


def default_config() -> TranslationRunConfig:
    return TranslationRunConfig(
        recipe=NAME,
        model=Seq2SeqConfig(vocab_size=8000, share_embeddings=True, tie_output=True, d_model=256, n_head=4,
                            n_encoder_layers=3, n_decoder_layers=3, ffn_hidden=1024, activation="relu",
                            dropout=0.1, position="sinusoidal", prenorm=True, label_smoothing=0.1),
        data=TranslationDataConfig(source="bible", split_seed=0, max_len=128, vocab_size=8000),
        train=TrainConfig(max_steps=0, batch_size=64, lr=1e-3, min_lr=5e-5, warmup_steps=150,
                          weight_decay=0.01, beta2=0.98, eval_every=250, eval_batches=10,
                          checkpoint_every=500, max_minutes=30.0, dtype="auto"),
        decode=DecodeConfig(beam_size=5, length_penalty=0.6, max_len=256, batch_size=32),
    )


def run(cfg: TranslationRunConfig, run_dir, resume: bool = False) -> dict:
    return run_translation_recipe(cfg, run_dir, resume=resume)

