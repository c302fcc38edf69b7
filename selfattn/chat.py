"""One chat turn with a pretrained model: render the prompt in the model's chat format, then decode
token by token with the KV cache, streaming each printable piece as it is made.

    model, bundle = load_gguf(resolve_model("smollm2"))
    chat_once(model, bundle, "What is the capital of France?", temperature=0)  # greedy

The decode loop here is deliberately small (prompt once, then one token per forward); the general
sampler lives in ``selfattn.generate``.
"""

from __future__ import annotations

from typing import Callable

import torch

from .interop.gguf import TokenizerBundle
from .models.gpt import GPT


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, generator) -> int:
    """logits (V,) -> one token id: argmax at temperature 0, else a sample from softmax(logits / T)."""
    if temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class _PieceStreamer:
    """Turns ids into text pieces. Byte-level BPE can split one UTF-8 character over several
    tokens, so the text is re-decoded and a piece is released only once it ends cleanly."""

    def __init__(self, bundle: TokenizerBundle, callback: Callable[[str], None] | None):
        self.bundle, self.callback = bundle, callback
        self.ids: list[int] = []
        self.sent = 0  # characters already released

    def push(self, token: int) -> None:
        self.ids.append(token)
        text = self.bundle.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for its other bytes
            return
        if self.callback is not None and len(text) > self.sent:
            self.callback(text[self.sent:])
        self.sent = len(text)

    def text(self) -> str:
        return self.bundle.decode(self.ids)


@torch.inference_mode()
def chat_once(model: GPT, bundle: TokenizerBundle, prompt: str, max_new_tokens: int = 256,
              temperature: float = 0.0, *, top_k: int | None = None, system: str | None = None,
              stream: Callable[[str], None] | None = None, seed: int | None = None) -> str:
    """The model's answer to one user message (its stop token excluded).

    temperature 0 is greedy; top_k keeps the k likeliest tokens before sampling; system overrides
    the template's default system prompt; stream(piece) is called with each new piece of text.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty string; got {prompt!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy); got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1; got {top_k!r}")
    ids = bundle.chat_ids(prompt, system=system)
    total = len(ids) + max_new_tokens
    if total > model.config.block_size:
        raise ValueError(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) = {total} exceeds the "
                         f"model's context of {model.config.block_size} tokens")
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    stops = set(bundle.stop_ids)
    cache = model.make_cache(1, total)
    logits = model(torch.tensor([ids], device=device), cache=cache, last_only=True)  # (1, 1, V)
    out = _PieceStreamer(bundle, stream)
    for step in range(max_new_tokens):
        token = _pick(logits[0, -1], float(temperature), top_k, generator)
        if token in stops:
            break
        out.push(token)
        if step + 1 < max_new_tokens:
            logits = model(torch.tensor([[token]], device=device), cache=cache, last_only=True)
    return out.text()
