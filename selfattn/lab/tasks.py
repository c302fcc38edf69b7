"""Synthetic tasks for the claims lab: each one isolates one thing a sequence model must do.

Every task draws ``(x, y)`` with ``x`` (B, T) token ids and ``y`` (B, T) targets, ``IGNORE``
(-100) where there is nothing to predict; a model maps x to logits (B, T, C) and is scored on
the non-ignored positions only. Draws are a pure function of the ``torch.Generator`` passed in,
so a seed fixes the data. Token 0 is the blank (filler) token, token 1 the "go"/query marker;
the symbols that carry information come after them.

- ``CopyTask``: k symbols, a gap of ``distance`` blanks, a go marker: reproduce the k symbols.
- ``SelectiveCopyTask``: k symbols scattered in a span of ``distance`` blanks: reproduce them in order.
- ``AssociativeRecallTask``: key-value pairs, ``distance`` blanks, a key: answer its value.
- ``OrderTask``: "dog bites man": a noun, a verb, a noun among fillers: who does the biting (the
  first noun)? Swapping the nouns changes the answer but not the bag of tokens.
- ``DelayedEchoTask``: y_t = x_{t-lag}; defined at every length (for length extrapolation).
- ``TwoRelationsTask``: y_t = (x_{t-a}, x_{t-b}) as one class: two different relations at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100
BLANK, GO = 0, 1
N_SPECIAL = 2


def _check_int(name: str, value, lo: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{name}={value!r} is not allowed; give an int >= {lo}")


def _symbols(n: int, shape, g: torch.Generator, offset: int = N_SPECIAL) -> torch.Tensor:
    return torch.randint(0, n, shape, generator=g) + offset


class _Task:
    """What every task shares: the classes to predict are the tokens themselves, unless a task
    says otherwise (``TwoRelationsTask``)."""

    @property
    def n_classes(self) -> int:
        return self.vocab_size


@dataclass(frozen=True)
class CopyTask(_Task):
    distance: int
    n_symbols: int = 8
    k: int = 4

    def __post_init__(self):
        _check_int("distance", self.distance, 1)
        _check_int("n_symbols", self.n_symbols, 2)
        _check_int("k", self.k, 1)

    name = "copy"

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + self.n_symbols

    @property
    def length(self) -> int:
        return 2 * self.k + self.distance

    def sample(self, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        k, T = self.k, self.length
        sym = _symbols(self.n_symbols, (batch, k), g)  # (B, k)
        x = torch.full((batch, T), BLANK, dtype=torch.long)
        x[:, :k] = sym
        x[:, k + self.distance] = GO
        y = torch.full((batch, T), IGNORE, dtype=torch.long)
        y[:, T - k:] = sym  # from the go marker on, one symbol per position
        return x, y


@dataclass(frozen=True)
class SelectiveCopyTask(_Task):
    distance: int  # length of the span the symbols are scattered in
    n_symbols: int = 8
    k: int = 4

    def __post_init__(self):
        _check_int("n_symbols", self.n_symbols, 2)
        _check_int("k", self.k, 1)
        _check_int("distance", self.distance, self.k)

    name = "selective-copy"

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + self.n_symbols

    @property
    def length(self) -> int:
        return self.distance + self.k

    def sample(self, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        k, D, T = self.k, self.distance, self.length
        sym = _symbols(self.n_symbols, (batch, k), g)  # (B, k)
        # k distinct slots in the span, kept in increasing order so "in order" is well defined
        slots = torch.rand(batch, D, generator=g).argsort(dim=1)[:, :k].sort(dim=1).values  # (B, k)
        x = torch.full((batch, T), BLANK, dtype=torch.long)
        x.scatter_(1, slots, sym)
        x[:, D] = GO
        y = torch.full((batch, T), IGNORE, dtype=torch.long)
        y[:, D:] = sym
        return x, y


@dataclass(frozen=True)
class AssociativeRecallTask(_Task):
    distance: int  # blanks between the last pair and the query
    n_pairs: int = 4
    n_keys: int = 8
    n_values: int = 8

    def __post_init__(self):
        _check_int("distance", self.distance, 0)
        _check_int("n_pairs", self.n_pairs, 1)
        _check_int("n_keys", self.n_keys, self.n_pairs)
        _check_int("n_values", self.n_values, 2)

    name = "associative-recall"

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + self.n_keys + self.n_values

    @property
    def length(self) -> int:
        return 2 * self.n_pairs + self.distance + 1

    def sample(self, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        P, T = self.n_pairs, self.length
        keys = torch.rand(batch, self.n_keys, generator=g).argsort(dim=1)[:, :P] + N_SPECIAL  # distinct (B, P)
        values = _symbols(self.n_values, (batch, P), g, offset=N_SPECIAL + self.n_keys)  # (B, P)
        x = torch.full((batch, T), BLANK, dtype=torch.long)
        x[:, 0:2 * P:2] = keys
        x[:, 1:2 * P:2] = values
        which = torch.randint(0, P, (batch, 1), generator=g)
        x[:, -1] = keys.gather(1, which)[:, 0]
        y = torch.full((batch, T), IGNORE, dtype=torch.long)
        y[:, -1] = values.gather(1, which)[:, 0]
        return x, y


@dataclass(frozen=True)
class OrderTask(_Task):
    """[fillers] noun_a VERB noun_b [fillers]: the answer (at the last position) is noun_a, the
    agent. "man bites dog" has the same tokens as "dog bites man" and the other answer, so a
    model that sees a set (no positions, no causal mask) can do no better than 50%."""

    length: int = 8
    n_nouns: int = 6
    n_fillers: int = 6

    def __post_init__(self):
        _check_int("length", self.length, 3)
        _check_int("n_nouns", self.n_nouns, 2)
        _check_int("n_fillers", self.n_fillers, 1)

    name = "order"

    @property
    def verb(self) -> int:
        return N_SPECIAL

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + 1 + self.n_nouns + self.n_fillers

    def sample(self, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        T, first_noun = self.length, N_SPECIAL + 1
        x = _symbols(self.n_fillers, (batch, T), g, offset=first_noun + self.n_nouns)
        nouns = torch.rand(batch, self.n_nouns, generator=g).argsort(dim=1)[:, :2] + first_noun  # distinct (B, 2)
        start = torch.randint(0, T - 2, (batch,), generator=g)
        rows = torch.arange(batch)
        x[rows, start] = nouns[:, 0]
        x[rows, start + 1] = self.verb
        x[rows, start + 2] = nouns[:, 1]
        y = torch.full((batch, T), IGNORE, dtype=torch.long)
        y[:, -1] = nouns[:, 0]
        return x, y


@dataclass(frozen=True)
class DelayedEchoTask(_Task):
    """y_t = x_{t-lag} for t >= lag: the same rule at every length, so a model trained at one
    length can be tested at any other."""

    length: int
    lag: int = 2
    n_symbols: int = 8

    def __post_init__(self):
        _check_int("lag", self.lag, 1)
        _check_int("length", self.length, self.lag + 1)
        _check_int("n_symbols", self.n_symbols, 2)

    name = "delayed-echo"

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + self.n_symbols

    def at_length(self, length: int) -> "DelayedEchoTask":
        return DelayedEchoTask(length, self.lag, self.n_symbols)

    def sample(self, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = _symbols(self.n_symbols, (batch, self.length), g)
        y = torch.full_like(x, IGNORE)
        y[:, self.lag:] = x[:, :-self.lag]
        return x, y


@dataclass(frozen=True)
class TwoRelationsTask(_Task):
    """y_t = V·s(x_{t-a}) + s(x_{t-b}) (s = symbol index): the answer needs the token a places
    back *and* the token b places back, two relations at once (V² classes)."""

    length: int = 16
    a: int = 1
    b: int = 3
    n_symbols: int = 6

    def __post_init__(self):
        _check_int("a", self.a, 1)
        _check_int("b", self.b, 1)
        if self.a == self.b:
            raise ValueError(f"a={self.a} and b={self.b} must differ (two different relations)")
        _check_int("length", self.length, max(self.a, self.b) + 1)
        _check_int("n_symbols", self.n_symbols, 2)

    name = "two-relations"

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + self.n_symbols

    @property
    def n_classes(self) -> int:
        return self.n_symbols ** 2

    def sample(self, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = _symbols(self.n_symbols, (batch, self.length), g)
        s = x - N_SPECIAL
        y = torch.full_like(x, IGNORE)
        m = max(self.a, self.b)
        T = self.length
        y[:, m:] = self.n_symbols * s[:, m - self.a:T - self.a] + s[:, m - self.b:T - self.b]
        return x, y


def generator(seed: int, stream: str) -> torch.Generator:
    """A generator for one seed and one stream ("train", "eval", ...): the same pair, the same data."""
    return torch.Generator().manual_seed((seed * 1_000_003 + sum(map(ord, stream)) * 7919) % (2**63 - 1))
