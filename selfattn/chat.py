"""Chatting with a pretrained model: render the conversation in the model's chat format, decode
with ``selfattn.generate.generate`` (the one decode loop of the package) and stream each printable
piece of the answer as it is made.

    model, bundle = load_gguf("smollm2")
    chat_once(model, bundle, "What is the capital of France?", temperature=0)  # greedy, one turn

    session = ChatSession(model, bundle, temperature=0.7, seed=0)
    session.ask("Name a French city.", stream=print)
    session.ask("And another one?")  # sees the first turn
    session.reset()                   # forgets it
"""

from __future__ import annotations

from typing import Callable

import torch

from .generate import _check_sampling, generate
from .interop.gguf import TokenizerBundle
from .models.gpt import GPT


class PieceStreamer:
    """Turns the answer's ids into text pieces. Byte-level BPE can split one UTF-8 character over
    several tokens, so the answer is re-decoded and a piece is released only once it ends on a
    whole character (a trailing U+FFFD means the character's other bytes are still to come)."""

    def __init__(self, bundle: TokenizerBundle, callback: Callable[[str], None] | None):
        self.bundle, self.callback = bundle, callback
        self.sent = 0  # characters already released

    def update(self, answer_ids: list[int]) -> None:
        text = self.bundle.decode(answer_ids)
        if text.endswith("\ufffd") or len(text) <= self.sent:
            return
        if self.callback is not None:
            self.callback(text[self.sent:])
        self.sent = len(text)


def _check_chat_args(max_new_tokens, temperature, top_k, top_p, seed) -> None:
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TypeError(f"seed must be None or an int; got {seed!r}")


def answer_ids(model: GPT, bundle: TokenizerBundle, prompt_ids: list[int], max_new_tokens: int = 256, *,
               temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
               seed: int | None = None, stream: Callable[[str], None] | None = None) -> list[int]:
    """The ids of the answer that follows ``prompt_ids`` (a rendered chat), stop token excluded.
    max_new_tokens is capped by the room left in the model's context."""
    if not prompt_ids:
        raise ValueError("prompt_ids is empty; render a conversation with bundle.render_chat first")
    room = model.config.block_size - len(prompt_ids)
    if room < 1:
        raise ValueError(f"the conversation ({len(prompt_ids)} tokens) fills the model's context of "
                         f"{model.config.block_size} tokens; reset it or shorten the message")
    stops = set(bundle.stop_ids)
    T = len(prompt_ids)
    streamer = PieceStreamer(bundle, stream)

    def on_token(ids: torch.Tensor) -> None:  # ids (1, T + n)
        new = ids[0, T:].tolist()
        if new and new[-1] in stops:
            new = new[:-1]
        streamer.update(new)

    out = generate(model, torch.tensor([prompt_ids]), min(max_new_tokens, room), temperature=temperature,
                   top_k=top_k or None, top_p=top_p, seed=seed, eos_id=sorted(stops) or None,
                   on_token=on_token if stream is not None else None)
    new = out[0, T:].tolist()
    return new[:-1] if new and new[-1] in stops else new


def chat_once(model: GPT, bundle: TokenizerBundle, prompt: str, max_new_tokens: int = 256,
              temperature: float = 0.0, *, top_k: int | None = None, top_p: float | None = None,
              system: str | None = None, stream: Callable[[str], None] | None = None,
              seed: int | None = None) -> str:
    """The model's answer to one user message (its stop token excluded).

    temperature 0 is greedy; top_k / top_p filter before sampling; system overrides the template's
    default system prompt; stream(piece) is called with each new piece of text.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty string; got {prompt!r}")
    _check_chat_args(max_new_tokens, temperature, top_k, top_p, seed)
    ids = bundle.chat_ids(prompt, system=system)
    total = len(ids) + max_new_tokens
    if total > model.config.block_size:
        raise ValueError(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) = {total} exceeds the "
                         f"model's context of {model.config.block_size} tokens")
    new = answer_ids(model, bundle, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                     seed=seed, stream=stream)
    return bundle.decode(new)


class ChatSession:
    """A multi-turn conversation: each ``ask`` renders the whole history in the model's chat format
    and answers the last message. When the history no longer leaves room for an answer of
    ``min_answer_tokens``, the oldest turns are dropped (the system prompt stays)."""

    def __init__(self, model: GPT, bundle: TokenizerBundle, *, system: str | None = None,
                 max_new_tokens: int = 256, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, min_answer_tokens: int = 64):
        _check_chat_args(max_new_tokens, temperature, top_k, top_p, seed)
        if system is not None and not isinstance(system, str):
            raise TypeError(f"system must be None or a string; got {type(system).__name__}")
        self.model, self.bundle, self.system = model, bundle, system
        self.max_new_tokens, self.temperature, self.top_k, self.top_p = max_new_tokens, temperature, top_k, top_p
        self.seed = seed
        self.min_answer_tokens = min(min_answer_tokens, max_new_tokens)
        self.history: list[dict[str, str]] = []  # user/assistant messages, oldest first
        self.turns = 0  # answers given: each turn samples with seed + turn, so turns differ

    def reset(self) -> None:
        self.history.clear()

    def prompt_ids(self, message: str) -> list[int]:
        """The rendered conversation with ``message`` appended, oldest turns dropped to fit."""
        head = [{"role": "system", "content": self.system}] if self.system is not None else []
        turns = self.history + [{"role": "user", "content": message}]
        limit = self.model.config.block_size - self.min_answer_tokens
        while True:
            ids = self.bundle.encode(self.bundle.render_chat(head + turns))
            if len(ids) <= limit or len(turns) == 1:
                break
            turns = turns[2:]  # one user message and its answer
        if len(ids) > limit:
            raise ValueError(f"message is too long: {len(ids)} tokens with the chat format; the model's context "
                             f"is {self.model.config.block_size} tokens")
        self.history = turns[:-1]
        return ids

    def ask(self, message: str, stream: Callable[[str], None] | None = None) -> str:
        if not isinstance(message, str) or not message.strip():
            raise ValueError(f"message must be a non-empty string; got {message!r}")
        ids = self.prompt_ids(message)
        seed = None if self.seed is None else self.seed + self.turns
        new = answer_ids(self.model, self.bundle, ids, self.max_new_tokens, temperature=self.temperature,
                         top_k=self.top_k, top_p=self.top_p, seed=seed, stream=stream)
        answer = self.bundle.decode(new)
        self.history += [{"role": "user", "content": message}, {"role": "assistant", "content": answer}]
        self.turns += 1
        return answer
