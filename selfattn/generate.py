"""Text generation: greedy and sampled decoding on the KV cache.

One forward over the prompt fills the cache (prefill); then each step feeds one token and reads
one row of logits. Prompts of different lengths are left-padded so every row ends at the same
place; padding is masked and positions count real tokens only, so a prompt's output does not
depend on what else is in the batch. Row i samples from its own generator seeded ``seed + i``:
a prompt generated alone with seed s equals the same prompt at row i of a batch with seed s - i.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch


def _check_sampling(max_new_tokens, temperature, top_k, top_p) -> None:
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1; got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or math.isnan(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a float >= 0 (0 = greedy); got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be an int >= 0 (0 or None = off); got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not (0.0 < top_p <= 1.0)):
        raise ValueError(f"top_p must be in (0, 1]; got {top_p!r}")


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """(B, V) logits -> (B, V) fp32 logits with temperature applied and filtered entries at -inf."""
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens strictly before it already hold top_p of the mass
        drop = (probs.cumsum(-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> (ids (B, T), attention_mask (B, T)) padded on the left."""
    if len(prompts) == 0:
        raise ValueError("prompts is empty; give at least one prompt")
    T = max(len(p) for p in prompts)
    if T == 0 or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token; got an empty prompt")
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, T - len(p):] = 1
    return ids, mask


def _stop_ids(eos_id) -> torch.Tensor | None:
    """None, an int or a non-empty collection of ints -> None or a 1-D LongTensor."""
    if eos_id is None:
        return None
    ids = [eos_id] if isinstance(eos_id, int) and not isinstance(eos_id, bool) else eos_id
    try:
        ids = list(ids)
    except TypeError:
        ids = None
    if not ids or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in ids):
        raise ValueError(f"eos_id must be None, a token id >= 0 or a non-empty collection of them; got {eos_id!r}")
    return torch.tensor(sorted(set(ids)), dtype=torch.long)


@torch.inference_mode()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int = 100, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             attention_mask: torch.Tensor | None = None, eos_id: int | Sequence[int] | None = None,
             stop: Callable[[torch.Tensor], bool] | None = None,
             on_token: Callable[[torch.Tensor], None] | None = None,
             sliding_window: bool = False) -> torch.Tensor:
    """input_ids (B, T) -> (B, T + new) LongTensor, prompt included (temperature 0 = greedy).

    Prompt + max_new_tokens must fit the model's context (block_size), unless
    ``sliding_window=True``: then, whenever the context is full, the model restarts from the last
    half of it (a fresh cache over those tokens, positions from 0), so text can run on for ever
    at the cost of one prompt pass every block_size/2 tokens. The prompt itself must still fit.

    attention_mask (B, T): 1 for real tokens, 0 for left padding. eos_id: one stop id or several
    (chat models end a turn with their own token as well as the file's eos); a row that produces
    one keeps repeating it (so rows stay aligned) and generation stops when every row has.
    on_token(ids_so_far (B, n)) is called after every step (for streaming); stop(ids_so_far) -> True
    ends early.
    """
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.numel() == 0:
        raise ValueError(f"input_ids must be a (batch, tokens) tensor with at least one token; got "
                         f"{getattr(input_ids, 'shape', type(input_ids).__name__)}")
    B, T = input_ids.shape
    ctx = model.config.block_size
    if T > ctx or (T + max_new_tokens > ctx and not sliding_window):
        raise ValueError(
            f"prompt ({T} tokens) + max_new_tokens ({max_new_tokens}) = {T + max_new_tokens} exceeds the "
            f"model's context of {ctx} tokens; shorten the prompt, lower max_new_tokens, or pass "
            "sliding_window=True (--sliding-window)"
        )
    stop_ids = _stop_ids(eos_id)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if stop_ids is not None:
        stop_ids = stop_ids.to(device)
    gens = None
    if temperature > 0:
        base = seed if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        gens = [torch.Generator(device=device).manual_seed(base + i) for i in range(B)]
    cache = model.make_cache(B, min(T + max_new_tokens, ctx))
    step_mask = None if attention_mask is None else attention_mask.to(device)
    logits = model(input_ids, attention_mask=step_mask, cache=cache, last_only=True)[:, -1]  # (B, V)
    out = torch.empty(B, T + max_new_tokens, dtype=torch.long, device=device)
    out[:, :T] = input_ids
    real = None  # (B, T + new) which tokens are real, for re-prefilling a window of padded rows
    if step_mask is not None and sliding_window:
        real = torch.ones(B, T + max_new_tokens, dtype=torch.long, device=device)
        real[:, :T] = step_mask
    done = torch.zeros(B, dtype=torch.bool, device=device)
    ones = None if attention_mask is None else torch.ones(B, 1, dtype=torch.long, device=device)
    n = T
    for _ in range(max_new_tokens):
        if gens is None:
            nxt = logits.argmax(-1)  # (B,)
        else:
            probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
            nxt = torch.cat([torch.multinomial(probs[i:i + 1], 1, generator=g)[0] for i, g in enumerate(gens)])
        if stop_ids is not None:
            nxt = torch.where(done, out[:, n - 1], nxt)  # a finished row repeats its stop id
            done |= torch.isin(nxt, stop_ids)
        out[:, n] = nxt
        n += 1
        if on_token is not None:
            on_token(out[:, :n])
        if (stop_ids is not None and bool(done.all())) or (stop is not None and stop(out[:, :n])) \
                or n == T + max_new_tokens:
            break
        if cache.length == cache.max_len:  # only with sliding_window: restart from the last half
            keep = ctx // 2
            cache = model.make_cache(B, ctx)
            window_mask = None if real is None else real[:, n - keep:n]
            logits = model(out[:, n - keep:n], attention_mask=window_mask, cache=cache, last_only=True)[:, -1]
            continue
        logits = model(nxt[:, None], attention_mask=ones, cache=cache, last_only=True)[:, -1]
    if was_training:
        model.train()
    return out[:, :n]


def generate_text(model, tokenizer, prompt: str | Sequence[str], max_new_tokens: int = 200, *,
                  temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                  seed: int | None = None, stop_strings: Sequence[str] = (),
                  stream: Callable[[str], None] | None = None, sliding_window: bool = False) -> str | list[str]:
    """Prompt text(s) -> generated text(s) (continuation only). ``stream`` receives text pieces of
    the first row as they are made; generation stops at any of ``stop_strings`` (cut before it)."""
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    if any(not isinstance(p, str) or p == "" for p in prompts):
        raise ValueError("prompt must be a non-empty string (or a list of them)")
    encoded = [tokenizer.encode(p) for p in prompts]
    ids, mask = left_pad(encoded)
    eos = getattr(tokenizer, "eos_id", None)
    T = ids.shape[1]
    emitted = [""]

    def text_of(row_ids) -> str:
        return tokenizer.decode([int(t) for t in row_ids if eos is None or int(t) != eos])

    def on_token(cur: torch.Tensor) -> None:
        full = text_of(cur[0, T:])
        piece = full[len(emitted[0]):]
        if piece and not piece.endswith("\ufffd"):  # wait until a UTF-8 character is whole
            stream(piece)
            emitted[0] = full

    def stop(cur: torch.Tensor) -> bool:
        return all(any(s in text_of(r[T:]) for s in stop_strings) for r in cur)

    out = generate(model, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   seed=seed, attention_mask=None if bool(mask.all()) else mask, eos_id=eos,
                   stop=stop if stop_strings else None, on_token=on_token if stream else None,
                   sliding_window=sliding_window)
    texts = []
    for r in out:
        t = text_of(r[T:])
        for s in stop_strings:
            if s in t:
                t = t[: t.index(s)]
        texts.append(t)
    return texts[0] if single else texts
