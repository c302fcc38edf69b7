"""Models built from the shared blocks: each one readable top to bottom."""

from .gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
