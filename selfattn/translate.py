"""Decoding an encoder–decoder model: greedy and beam search, batched, on the KV cache.

Both run the encoder once per batch, and project the cross-attention keys/values of its output
once (on the first step, into the cache's ``cross`` slot); every step after that feeds one token
per row through the decoder, reusing the cached self-attention keys/values.

Output format (both): a (B, L) tensor of generated ids, *without* the leading BOS, each row ending
with EOS (unless ``max_len`` ran out first) and filled with ``pad_id`` after it; L is the longest
row. ``tokens_to_lists`` turns it into Python lists without EOS and padding.

Beam search ranks finished hypotheses by log-probability divided by the length penalty of GNMT
(Wu et al. 2016): lp(n) = ((5 + n) / 6) ** alpha, n = generated tokens including EOS; alpha = 0 is
the plain sum of log-probabilities, larger alpha favours longer outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models.seq2seq import Seq2Seq


def length_penalty_gnmt(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


def _check(model, src_ids, src_mask, max_len: int, beam_size: int = 1, length_penalty: float = 0.0):
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"model must be a selfattn Seq2Seq; got {type(model).__name__}")
    if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1:
        raise ValueError(f"max_len={max_len!r} is not allowed; it must be an int >= 1")
    c = model.config
    if c.position == "learned" and max_len > c.max_len:
        raise ValueError(f"max_len={max_len} is longer than the model's learned positions (model.max_len={c.max_len})")
    if not isinstance(beam_size, int) or isinstance(beam_size, bool) or beam_size < 1:
        raise ValueError(f"beam_size={beam_size!r} is not allowed; it must be an int >= 1")
    if not length_penalty >= 0.0:
        raise ValueError(f"length_penalty={length_penalty!r} is not allowed; it must be >= 0")
    model._check_ids("src_ids", src_ids, c.src_vocab)
    return model._source_mask(src_ids, src_mask)


class _EvalMode:
    """Decode without dropout, then put the model back the way it was."""

    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


@torch.no_grad()
def greedy_decode(model: Seq2Seq, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None,
                  max_len: int = 64) -> torch.Tensor:
    """src_ids (B, S) -> (B, L) ids: the most likely token at every step (see the module doc)."""
    src_mask = _check(model, src_ids, src_mask, max_len)
    c = model.config
    B = src_ids.shape[0]
    with _EvalMode(model):
        memory = model.encode(src_ids, src_mask)  # (B, S, D), once
        cache = model.make_cache(B, max_len)
        last = torch.full((B,), c.bos_id, dtype=torch.long, device=src_ids.device)
        finished = torch.zeros(B, dtype=torch.bool, device=src_ids.device)
        out = []
        for _ in range(max_len):
            logits = model.decode_step(last, memory, src_mask, cache)  # (B, V)
            nxt = logits.argmax(-1).masked_fill(finished, c.pad_id)  # finished rows only pad
            out.append(nxt)
            finished |= nxt == c.eos_id
            if bool(finished.all()):
                break
            last = nxt
    return torch.stack(out, dim=1)


@torch.no_grad()
def beam_search(model: Seq2Seq, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None,
                beam_size: int = 4, max_len: int = 64, length_penalty: float = 1.0,
                return_scores: bool = False):
    """src_ids (B, S) -> (B, L) ids of the best hypothesis per row [and its (B,) score].

    Each step extends every live beam by every token and keeps the 2K best candidates: those among
    the K best that end in EOS join the row's finished set (scored by log-prob / lp(length)), the
    K best not ending in EOS stay alive. A row stops once K hypotheses have ended with EOS (early stopping); the batch stops
    when every row has. At ``max_len`` the live beams are scored as they are. With K = 1 this is
    exactly greedy decoding.
    """
    src_mask = _check(model, src_ids, src_mask, max_len, beam_size, length_penalty)
    c = model.config
    K, B, dev = beam_size, src_ids.shape[0], src_ids.device
    NEG = float("-inf")
    with _EvalMode(model):
        memory = model.encode(src_ids, src_mask)  # (B, S, D), once per sequence
        memory = memory.repeat_interleave(K, dim=0)  # (B*K, S, D): row b*K + k is beam k of example b
        beam_mask = src_mask.repeat_interleave(K, dim=0)  # (B*K, S)
        cache = model.make_cache(B * K, max_len)

        alive_scores = torch.full((B, K), NEG, device=dev)
        alive_scores[:, 0] = 0.0  # all beams start identical: let only the first one expand
        alive_seq = torch.empty(B, K, 0, dtype=torch.long, device=dev)
        fin_scores = torch.full((B, K), NEG, device=dev)
        fin_seq = torch.full((B, K, max_len), c.pad_id, dtype=torch.long, device=dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        last = torch.full((B * K,), c.bos_id, dtype=torch.long, device=dev)
        rows = torch.arange(B, device=dev)[:, None] * K  # (B, 1)

        for t in range(max_len):
            logits = model.decode_step(last, memory, beam_mask, cache)  # (B*K, V)
            logp = F.log_softmax(logits.float(), dim=-1)
            V = logp.shape[-1]
            cand = (alive_scores[..., None] + logp.view(B, K, V)).view(B, K * V)
            top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=1)  # (B, 2K)
            src_beam, tok = top_idx // V, top_idx % V
            seqs = torch.cat([alive_seq.gather(1, src_beam[..., None].expand(-1, -1, t)), tok[..., None]],
                             dim=-1)  # (B, 2K, t+1)

            # Candidates ending in EOS among the K best compete with the finished set (rows already
            # done are frozen). An EOS ranked below K would not have survived a beam of K: letting
            # it finish would end rows early on hypotheses the beam never held.
            is_eos = tok == c.eos_id
            in_beam = torch.arange(top_scores.shape[1], device=dev) < K  # (2K,) topk is sorted
            joins = is_eos & in_beam & torch.isfinite(top_scores) & ~done[:, None]
            new_fin = torch.where(joins, top_scores / length_penalty_gnmt(t + 1, length_penalty),
                                  torch.full_like(top_scores, NEG))
            fin_scores, fin_seq = _keep_best(fin_scores, fin_seq, new_fin, seqs, K, c.pad_id)

            # The K best candidates not ending in EOS live on (each beam has one EOS candidate,
            # so at least K of the 2K are not EOS).
            alive_scores, keep = top_scores.masked_fill(is_eos, NEG).topk(K, dim=1)  # (B, K)
            alive_seq = seqs.gather(1, keep[..., None].expand(-1, -1, t + 1))
            last = tok.gather(1, keep).reshape(-1)

            done |= torch.isfinite(fin_scores).all(dim=1)  # K hypotheses ended with EOS
            if bool(done.all()) or t == max_len - 1:
                break
            # Beams of one example share its cross-attention keys/values: keep them as they are
            # instead of letting reorder() copy them.
            cross = list(cache.cross)
            cache.reorder((rows + src_beam.gather(1, keep)).reshape(-1))
            cache.cross = cross

        if not bool(done.all()):
            # max_len ran out: unfinished rows also consider their live beams, as they stand.
            live = torch.where(done[:, None], torch.full_like(alive_scores, NEG),
                               alive_scores / length_penalty_gnmt(alive_seq.shape[-1], length_penalty))
            fin_scores, fin_seq = _keep_best(fin_scores, fin_seq, live, alive_seq, K, c.pad_id)

    best, scores = fin_seq[:, 0], fin_scores[:, 0]  # (B, max_len), (B,)
    length = int(_lengths(best, c.eos_id).max())
    best = best[:, :length]
    return (best, scores) if return_scores else best


def _keep_best(fin_scores, fin_seq, new_scores, new_seq, K: int, pad_id: int):
    """Merge candidates (B, N) with sequences (B, N, t) into the finished set (B, K) / (B, K, L)."""
    B, N, t = new_seq.shape
    padded = torch.full((B, N, fin_seq.shape[-1]), pad_id, dtype=fin_seq.dtype, device=fin_seq.device)
    padded[..., :t] = new_seq
    scores = torch.cat([fin_scores, new_scores], dim=1)  # (B, K + N)
    seqs = torch.cat([fin_seq, padded], dim=1)
    best, idx = scores.topk(K, dim=1)
    return best, seqs.gather(1, idx[..., None].expand(-1, -1, seqs.shape[-1]))


def _lengths(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, L) -> (B,) tokens up to and including the first EOS; L where there is none (only a
    hypothesis that ran out of max_len lacks EOS, and it is max_len long)."""
    L = tokens.shape[1]
    idx = torch.arange(L, device=tokens.device)
    eos_at = torch.where(tokens == eos_id, idx, L).amin(dim=1)
    return torch.where(eos_at < L, eos_at + 1, L)


def tokens_to_lists(tokens: torch.Tensor, eos_id: int, pad_id: int | None = None) -> list[list[int]]:
    """(B, L) decoded ids -> one list per row, cut before the first EOS (and without padding)."""
    out = []
    for row in tokens.tolist():
        if eos_id in row:
            row = row[: row.index(eos_id)]
        out.append([t for t in row if t != pad_id])
    return out
