"""Attention in blocks with an online softmax: memory linear in sequence length, forward AND backward.

The math backend holds the whole (Lq, Lk) score matrix, and autograd keeps it for the backward
pass. Here the queries are cut into blocks of ``block_q`` rows and the keys into blocks of
``block_k`` columns; for each query block the keys are streamed block by block while a running
row maximum ``m``, a running sum ``l`` of exp(score - m) and an fp32 accumulator of the weighted
values are kept (the "online softmax": when the maximum grows, what was summed so far is rescaled
by exp(m_old - m_new)). At the end ``out = acc / l`` and the per-row log-sum-exp ``lse = m + log l``
is kept.

The backward pass is a custom :class:`torch.autograd.Function` that saves only q, k, v, the output
and ``lse`` and recomputes each block of weights as ``exp(score - lse)``; with
``D_i = sum_j dO_i . O_i`` the score gradient is ``dS = P * (dO V^T - D)``. Nothing of size
(Lq, Lk) is ever stored, so memory is O(N) in both passes (what the benchmark measures).

Numerics:
- scores and the softmax are fp32 for fp32/bf16/fp16 inputs (fp64 for fp64, so gradcheck works);
  bf16 inputs keep their matmuls in bf16 (fp32 range, the fast CPU path) and fp16 ones are
  upcast to fp32 first, so no score can overflow fp16's range;
- boolean and causal masks become -inf only in the fp32 scores; float masks are added in fp32;
- causal masks are built per block from indices (never a full (Lq, Lk) tensor) and key blocks
  entirely in a query block's future are skipped;
- a query row with no visible key has l = 0: its output is 0 and lse = -inf, which the backward
  pass turns into weights of exactly 0, hence zero (finite) gradients;
- dropout is exact across forward and backward: the keep-mask of each (query block, key block)
  pair is drawn from its own generator seeded from one number drawn from torch's global RNG,
  and regenerated in the backward pass (so ``torch.manual_seed`` makes a call reproducible; the
  random stream differs from torch's, so values differ from other backends' dropout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .request import AttentionRequest

#: Default block sizes. Query blocks of 128 rows keep each step's score block small enough to
#: stay in cache-friendly sizes; key blocks of 1024 columns mean sequences up to 1k tokens need no
#: online rescaling at all, and longer ones still use O(block_q * block_k) scratch per step.
DEFAULT_BLOCK_Q = 128
DEFAULT_BLOCK_K = 1024


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the matmuls: bf16 stays bf16 (fp32 exponent range), fp16 goes to fp32, fp64 stays."""
    if dtype in (torch.bfloat16, torch.float64):
        return dtype
    return torch.float32


@dataclass(frozen=True)
class _Plan:
    """Everything about a call that is not a tensor: block sizes, causal offset, dropout."""

    lq: int
    lk: int
    block_q: int
    block_k: int
    scale: float
    causal_offset: int | None  # None: not causal; else query i sees keys j <= i + offset
    dropout_p: float
    seed: int
    acc_dtype: torch.dtype
    compute_dtype: torch.dtype

    def query_blocks(self):
        for i0 in range(0, self.lq, self.block_q):
            yield i0, min(i0 + self.block_q, self.lq)

    def key_blocks(self, i0: int, i1: int):
        """Key blocks that query rows [i0, i1) can see at all (future-only blocks are skipped)."""
        end = self.lk
        if self.causal_offset is not None:
            end = min(self.lk, max(0, i1 - 1 + self.causal_offset + 1))
        for j0 in range(0, end, self.block_k):
            yield j0, min(j0 + self.block_k, end)

    def causal_block(self, i0: int, i1: int, j0: int, j1: int, device) -> torch.Tensor | None:
        """(bq, bk) keep-mask for a block on the causal diagonal; None when the block is fully visible."""
        if self.causal_offset is None or j1 - 1 <= i0 + self.causal_offset:
            return None
        i = torch.arange(i0, i1, device=device).unsqueeze(1) + self.causal_offset
        j = torch.arange(j0, j1, device=device).unsqueeze(0)
        return j <= i

    def dropout_scale(self, i0: int, j0: int, shape, device) -> torch.Tensor | None:
        """Keep-mask / (1 - p) for one block, the same every time it is asked for."""
        if self.dropout_p == 0.0:
            return None
        g = torch.Generator(device=device)
        n_kb = (self.lk + self.block_k - 1) // self.block_k
        g.manual_seed(self.seed + (i0 // self.block_q) * n_kb + j0 // self.block_k)
        keep = torch.rand(shape, generator=g, device=device, dtype=self.acc_dtype) >= self.dropout_p
        return keep.to(self.acc_dtype) / (1.0 - self.dropout_p)


def _mask_5d(mask: torch.Tensor | None, q_shape: torch.Size, n_kv: int, n_rep: int) -> torch.Tensor | None:
    """A user mask broadcastable to (..., Hq, Lq, Lk) -> (B or 1, Hkv or 1, R or 1, Lq or 1, Lk or 1).

    Only the batch dims may be expanded (and then only when they are not all 1); the (Lq, Lk)
    part keeps whatever size the user gave, so a (B, 1, 1, Lk) padding mask stays that small.
    """
    if mask is None:
        return None
    m = mask.reshape((1,) * (len(q_shape) - mask.dim()) + tuple(mask.shape))  # (..., H?, Lq?, Lk?)
    batch = q_shape[:-3]
    mb = m.shape[:-3]
    if all(s == 1 for s in mb):
        m = m.reshape(1, *m.shape[-3:])
    else:
        m = m.expand(*batch, *m.shape[-3:]).reshape(-1, *m.shape[-3:])
    if m.shape[1] == 1:
        return m.unsqueeze(2)  # (B?, 1, 1, Lq?, Lk?)
    return m.reshape(m.shape[0], n_kv, n_rep, m.shape[2], m.shape[3])


def _slice_mask(m: torch.Tensor, i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
    if m.shape[-2] != 1:
        m = m[..., i0:i1, :]
    if m.shape[-1] != 1:
        m = m[..., j0:j1]
    return m


def _block_scores(plan: _Plan, q_blk, k, mask, i0, i1, j0, j1) -> torch.Tensor:
    """fp32 (or fp64) scores of query rows [i0, i1) against keys [j0, j1), masks applied."""
    # q is pre-scaled; k (B, Hkv, 1, Lk, D) broadcasts over the R query heads sharing it.
    s = (q_blk @ k[..., j0:j1, :].transpose(-1, -2)).to(plan.acc_dtype)  # (B, Hkv, R, bq, bk)
    if mask is not None:
        mb = _slice_mask(mask, i0, i1, j0, j1)
        if mb.dtype == torch.bool:
            s = s.masked_fill(~mb, float("-inf"))
        else:
            s = s + mb.to(plan.acc_dtype)
    causal = plan.causal_block(i0, i1, j0, j1, s.device)
    if causal is not None:
        s = s.masked_fill(~causal, float("-inf"))
    return s


def _forward(plan: _Plan, q, k, v, mask):
    """q (B, Hkv, R, Lq, D) pre-scaled, k (B, Hkv, 1, Lk, D), v (B, Hkv, 1, Lk, Dv) in compute dtype.

    Returns out (B, Hkv, R, Lq, Dv) in acc dtype and lse (B, Hkv, R, Lq) (-inf for rows with no key).
    """
    B, Hkv, R, _, _ = q.shape
    Dv = v.shape[-1]
    acc_t = plan.acc_dtype
    out = torch.zeros(B, Hkv, R, plan.lq, Dv, dtype=acc_t, device=q.device)
    lse = torch.full((B, Hkv, R, plan.lq), float("-inf"), dtype=acc_t, device=q.device)
    for i0, i1 in plan.query_blocks():
        q_blk = q[..., i0:i1, :]
        m = l = acc = None  # running max, running sum (B, Hkv, R, bq, 1); accumulator (..., bq, Dv)
        for j0, j1 in plan.key_blocks(i0, i1):
            s = _block_scores(plan, q_blk, k, mask, i0, i1, j0, j1)  # (B, Hkv, R, bq, bk)
            m_blk = s.amax(dim=-1, keepdim=True)
            m_new = m_blk if m is None else torch.maximum(m, m_blk)
            # a row that has seen only -inf so far keeps a max of 0 so exp() below gives 0, not NaN
            m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
            p = torch.exp(s.sub_(m_safe))  # (B, Hkv, R, bq, bk) unnormalised weights
            l_blk = p.sum(dim=-1, keepdim=True)
            z = plan.dropout_scale(i0, j0, p.shape, p.device)
            if z is not None:
                p = p.mul_(z)
            pv = (p.to(plan.compute_dtype) @ v[..., j0:j1, :]).to(acc_t)  # (B, Hkv, R, bq, Dv)
            if m is None:
                l, acc = l_blk, pv
            else:
                alpha = torch.exp(m - m_safe)  # rescales what was summed under the old max
                l = l * alpha + l_blk
                acc = acc * alpha + pv
            m = m_safe
        if m is None:  # no visible key at all for this block (bottom-right causal, Lq > Lk)
            continue
        out[..., i0:i1, :] = acc / torch.where(l > 0, l, torch.ones_like(l))
        lse[..., i0:i1] = torch.where(l > 0, m + torch.log(l), torch.full_like(l, float("-inf"))).squeeze(-1)
    return out, lse


def _backward(plan: _Plan, q, k, v, mask, out, lse, dout, need_dq: bool, need_dkv: bool):
    """Gradients w.r.t. pre-scaled q (B, Hkv, R, Lq, D), k and v (B, Hkv, Lk, *) in acc dtype."""
    acc_t, cd = plan.acc_dtype, plan.compute_dtype
    B, Hkv, R, Lq, D = q.shape
    Dv = v.shape[-1]
    dq = torch.zeros(B, Hkv, R, Lq, D, dtype=acc_t, device=q.device) if need_dq else None
    dk = torch.zeros(B, Hkv, plan.lk, D, dtype=acc_t, device=q.device) if need_dkv else None
    dv = torch.zeros(B, Hkv, plan.lk, Dv, dtype=acc_t, device=q.device) if need_dkv else None
    # rows that saw no key: lse = -inf -> use +inf so exp(score - lse) is 0 even where score = -inf
    lse = torch.where(torch.isneginf(lse), torch.full_like(lse, float("inf")), lse).unsqueeze(-1)
    delta = (dout.to(acc_t) * out).sum(dim=-1, keepdim=True)  # (B, Hkv, R, Lq, 1)
    for i0, i1 in plan.query_blocks():
        q_blk = q[..., i0:i1, :]
        do_blk = dout[..., i0:i1, :].to(cd)  # (B, Hkv, R, bq, Dv)
        dq_blk = None
        for j0, j1 in plan.key_blocks(i0, i1):
            s = _block_scores(plan, q_blk, k, mask, i0, i1, j0, j1)
            p = torch.exp(s.sub_(lse[..., i0:i1, :]))  # (B, Hkv, R, bq, bk) the forward's weights
            z = plan.dropout_scale(i0, j0, p.shape, p.device)
            v_blk = v[..., j0:j1, :]
            dp = (do_blk @ v_blk.transpose(-1, -2)).to(acc_t)  # (B, Hkv, R, bq, bk)
            if z is not None:
                dp = dp.mul_(z)
            if need_dkv:
                pz = p if z is None else p * z
                # (B, Hkv, R, bk, Dv) summed over the R query heads sharing this kv head
                dv[..., j0:j1, :] += (pz.to(cd).transpose(-1, -2) @ do_blk).to(acc_t).sum(dim=2)
            ds = p.mul_(dp.sub_(delta[..., i0:i1, :])).to(cd)  # (B, Hkv, R, bq, bk) dL/dscore
            if need_dq:
                part = (ds @ k[..., j0:j1, :]).to(acc_t)  # (B, Hkv, R, bq, D)
                dq_blk = part if dq_blk is None else dq_blk.add_(part)
            if need_dkv:
                dk[..., j0:j1, :] += (ds.transpose(-1, -2) @ q_blk).to(acc_t).sum(dim=2)
        if need_dq and dq_blk is not None:
            dq[..., i0:i1, :] = dq_blk
    return dq, dk, dv


class _ChunkedAttentionFunction(torch.autograd.Function):
    """Saves q, k, v, out and lse; recomputes every block of weights in backward."""

    @staticmethod
    def forward(ctx, query, key, value, mask, plan: _Plan):
        q5, k5, v5, mask5 = _prepare(plan, query, key, value, mask)
        out5, lse = _forward(plan, q5, k5, v5, mask5)
        out = out5.reshape(*query.shape[:-1], value.shape[-1]).to(query.dtype)
        ctx.plan = plan
        ctx.mask = mask
        ctx.save_for_backward(query, key, value, out5, lse)
        return out

    @staticmethod
    def backward(ctx, dout):
        query, key, value, out5, lse = ctx.saved_tensors
        plan: _Plan = ctx.plan
        need_dq = ctx.needs_input_grad[0]
        need_dkv = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        q5, k5, v5, mask5 = _prepare(plan, query, key, value, ctx.mask)
        do5 = dout.reshape(out5.shape)
        dq, dk, dv = _backward(plan, q5, k5, v5, mask5, out5, lse, do5, need_dq, need_dkv)
        gq = (dq * plan.scale).reshape(query.shape).to(query.dtype) if need_dq else None
        gk = dk.reshape(key.shape).to(key.dtype) if need_dkv and ctx.needs_input_grad[1] else None
        gv = dv.reshape(value.shape).to(value.dtype) if need_dkv and ctx.needs_input_grad[2] else None
        return gq, gk, gv, None, None


def _prepare(plan: _Plan, query, key, value, mask):
    """Flatten batch dims, split query heads into (Hkv, R), cast to compute dtype, fold in the scale."""
    hq = query.shape[-3] if query.dim() >= 3 else 1
    hkv = key.shape[-3] if key.dim() >= 3 else 1
    r = hq // hkv
    cd = plan.compute_dtype
    # scale folded into q once (exact when it is a power of two, e.g. 1/8 for head size 64)
    q5 = (query.to(plan.acc_dtype) * plan.scale).to(cd).reshape(-1, hkv, r, plan.lq, query.shape[-1])
    k5 = key.to(cd).reshape(-1, hkv, 1, plan.lk, key.shape[-1])
    v5 = value.to(cd).reshape(-1, hkv, 1, plan.lk, value.shape[-1])
    q_shape = query.shape if query.dim() >= 3 else (1, *query.shape)
    return q5, k5, v5, _mask_5d(mask, q_shape, hkv, r)


def chunked_unsupported(req: AttentionRequest) -> str | None:
    m = req.attn_mask
    if m is not None and m.requires_grad:
        return "a float attn_mask that requires grad (its gradient is not computed here)"
    return None


def chunked_attention(req: AttentionRequest, *, block_q: int | None = None, block_k: int | None = None) -> torch.Tensor:
    """Blocked online-softmax attention for a validated request; ``block_q``/``block_k`` default to
    :data:`DEFAULT_BLOCK_Q` / :data:`DEFAULT_BLOCK_K`."""
    block_q = DEFAULT_BLOCK_Q if block_q is None else block_q
    block_k = DEFAULT_BLOCK_K if block_k is None else block_k
    for name, val in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{name} must be an int >= 1; got {val!r}")
    why = chunked_unsupported(req)
    if why is not None:
        raise ValueError(f"backend='chunked' cannot serve this call: {why}")
    dtype = req.query.dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    offset = None
    if req.is_causal:
        offset = 0 if req.causal_align == "top_left" else req.k_len - req.q_len
    seed = int(torch.randint(0, 2**62, (1,)).item()) if req.dropout_p > 0.0 else 0
    plan = _Plan(
        lq=req.q_len, lk=req.k_len, block_q=block_q, block_k=block_k, scale=req.scale,
        causal_offset=offset, dropout_p=req.dropout_p, seed=seed, acc_dtype=acc,
        compute_dtype=_compute_dtype(dtype),
    )
    return _ChunkedAttentionFunction.apply(req.query, req.key, req.value, req.attn_mask, plan)
