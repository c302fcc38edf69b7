"""Models built from the shared blocks: each one readable top to bottom."""

from .gpt import GPT, GPTConfig
from .encoder import Encoder, EncoderConfig

__all__ = ["GPT", "GPTConfig"]
__all__ += ["Encoder", "EncoderConfig"]
