"""Models built from the shared blocks: each one readable top to bottom."""

from .encoder import Encoder, EncoderConfig
from .gpt import GPT, GPTConfig
from .seq2seq import Seq2Seq, Seq2SeqConfig
from .vit import ViT, ViTConfig

__all__ = ["GPT", "GPTConfig", "Encoder", "EncoderConfig", "Seq2Seq", "Seq2SeqConfig", "ViT", "ViTConfig"]
