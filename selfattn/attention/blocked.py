"""Query-blocked attention: the CPU fast path.

Each block of ``block_q`` query rows sees all its keys at once, so the softmax of a block is a
single call to torch's fused softmax kernel (which reads and writes the scores once and
accumulates in fp32 for bf16 inputs) instead of the five or six elementwise passes an online
softmax needs from Python. Scratch memory is O(block_q * Lk) per step, so memory still grows
linearly with sequence length; the backward pass recomputes each block's weights (a custom
:class:`torch.autograd.Function` saving only q, k, v and the output) and uses torch's fused
softmax backward.

Why it exists: on a CPU torch's SDPA flash kernel runs bf16 no faster than fp32, while bf16
matmuls are 2-3x faster than fp32 ones; this path keeps the matmuls in bf16 (benchmarks/attention.py
measures where it wins, and :func:`selfattn.attention._auto_reasons` uses that table).

Numerics match the chunked backend: bf16 stays bf16 in the matmuls with an fp32 softmax, fp16 is
upcast to fp32, fp64 stays fp64; boolean/causal masks set -inf (exact in bf16); float masks are
added in fp32 (adding e.g. an ALiBi bias of -200 in bf16 would round it by up to 1.0); rows with no
visible key give zeros and zero gradients; dropout is regenerated exactly in backward from a
per-block seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .chunked import _compute_dtype, _mask_5d, _slice_mask
from .request import AttentionRequest

#: Query rows per block. 128 measured best at 512-1024 tokens (bf16, 2 threads); sequences of at
#: most SINGLE_BLOCK_UP_TO queries run as one block (at 256 one block beat two by ~30%).
DEFAULT_BLOCK_Q = 128
SINGLE_BLOCK_UP_TO = 256


@dataclass(frozen=True)
class _RowPlan:
    lq: int
    lk: int
    block_q: int
    scale: float
    causal_offset: int | None
    dropout_p: float
    seed: int
    compute_dtype: torch.dtype  # matmuls
    may_kill_rows: bool  # some row may have no visible key: check for it

    def blocks(self):
        """(i0, i1, end): query rows [i0, i1) and the keys [0, end) any of them can see."""
        for i0 in range(0, self.lq, self.block_q):
            i1 = min(i0 + self.block_q, self.lq)
            end = self.lk if self.causal_offset is None else min(self.lk, max(0, i1 + self.causal_offset))
            yield i0, i1, end

    def dropout_scale(self, i0: int, shape, device) -> torch.Tensor | None:
        """fp32 keep-mask / (1 - p) for one query block (fp32: 1/(1-p) in bf16 would bias the mean)."""
        if self.dropout_p == 0.0:
            return None
        g = torch.Generator(device=device)
        g.manual_seed(self.seed + i0 // self.block_q)
        keep = torch.rand(shape, generator=g, device=device, dtype=torch.float32) >= self.dropout_p
        return keep.to(torch.float32) / (1.0 - self.dropout_p)


def _weights(plan: _RowPlan, q_blk, k, mask, i0, i1, end) -> torch.Tensor:
    """Softmax weights (B, Hkv, R, bq, end) of one query block; zero rows where no key is visible."""
    s = q_blk @ k[..., :end, :].transpose(-1, -2)  # (B, Hkv, R, bq, end) in compute dtype
    if mask is not None:
        mb = _slice_mask(mask, i0, i1, 0, end)
        if mb.dtype == torch.bool:
            s = s.masked_fill(~mb, float("-inf"))
        else:
            # float masks are added in fp32 so a large bias does not round in bf16
            s = s.to(torch.promote_types(s.dtype, torch.float32)) + mb.to(torch.promote_types(s.dtype, torch.float32))
    if plan.causal_offset is not None and end - 1 > i0 + plan.causal_offset:
        i = torch.arange(i0, i1, device=s.device).unsqueeze(1) + plan.causal_offset
        j = torch.arange(0, end, device=s.device).unsqueeze(0)
        s = s.masked_fill(j > i, float("-inf"))
    p = torch.softmax(s, dim=-1)  # fused; fp32 inside for bf16
    if plan.may_kill_rows:
        dead = torch.isneginf(s.amax(dim=-1, keepdim=True))  # rows with no key: softmax gave NaN
        p = p.masked_fill(dead, 0.0)
    return p


def _prepare(plan: _RowPlan, query, key, value, mask):
    hq = query.shape[-3] if query.dim() >= 3 else 1
    hkv = key.shape[-3] if key.dim() >= 3 else 1
    r = hq // hkv
    cd = plan.compute_dtype
    acc = torch.float64 if cd == torch.float64 else torch.float32
    q5 = (query.to(acc) * plan.scale).to(cd).reshape(-1, hkv, r, plan.lq, query.shape[-1])
    k5 = key.to(cd).reshape(-1, hkv, 1, plan.lk, key.shape[-1])
    v5 = value.to(cd).reshape(-1, hkv, 1, plan.lk, value.shape[-1])
    q_shape = query.shape if query.dim() >= 3 else (1, *query.shape)
    return q5, k5, v5, _mask_5d(mask, q_shape, hkv, r)


class _BlockedAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, mask, plan: _RowPlan):
        q5, k5, v5, mask5 = _prepare(plan, query, key, value, mask)
        cd = plan.compute_dtype
        out = torch.zeros(*q5.shape[:-1], v5.shape[-1], dtype=cd, device=q5.device)  # (B, Hkv, R, Lq, Dv)
        for i0, i1, end in plan.blocks():
            if end == 0:
                continue
            p = _weights(plan, q5[..., i0:i1, :], k5, mask5, i0, i1, end)
            z = plan.dropout_scale(i0, p.shape, p.device)
            if z is not None:
                p = p * z
            out[..., i0:i1, :] = p.to(cd) @ v5[..., :end, :]
        ctx.plan, ctx.mask = plan, mask
        ctx.save_for_backward(query, key, value, out)
        return out.reshape(*query.shape[:-1], value.shape[-1]).to(query.dtype)

    @staticmethod
    def backward(ctx, dout):
        query, key, value, out = ctx.saved_tensors
        plan: _RowPlan = ctx.plan
        q5, k5, v5, mask5 = _prepare(plan, query, key, value, ctx.mask)
        cd = plan.compute_dtype
        acc = torch.float64 if cd == torch.float64 else torch.float32
        need_dq = ctx.needs_input_grad[0]
        need_dkv = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        do5 = dout.reshape(out.shape).to(cd)
        dq = torch.zeros(q5.shape, dtype=acc, device=q5.device) if need_dq else None
        dk = torch.zeros(k5.shape[:2] + k5.shape[3:], dtype=acc, device=q5.device) if need_dkv else None
        dv = torch.zeros(v5.shape[:2] + v5.shape[3:], dtype=acc, device=q5.device) if need_dkv else None
        for i0, i1, end in plan.blocks():
            if end == 0:
                continue
            q_blk, do_blk = q5[..., i0:i1, :], do5[..., i0:i1, :]
            p = _weights(plan, q_blk, k5, mask5, i0, i1, end)  # (B, Hkv, R, bq, end), the forward's
            z = plan.dropout_scale(i0, p.shape, p.device)
            dp = do_blk @ v5[..., :end, :].transpose(-1, -2)  # (B, Hkv, R, bq, end) dL/d(dropped weights)
            if z is not None:
                dp = dp * z  # fp32 from here on
            if need_dkv:
                pz = p if z is None else p * z
                dv[..., :end, :] += (pz.to(cd).transpose(-1, -2) @ do_blk).sum(dim=2, dtype=acc)
            sd = torch.promote_types(p.dtype, dp.dtype)
            ds = torch._softmax_backward_data(dp.to(sd), p.to(sd), -1, sd).to(cd)  # p * (dp - sum(dp * p))
            if need_dq:
                dq[..., i0:i1, :] = ds @ k5[..., :end, :]
            if need_dkv:
                dk[..., :end, :] += (ds.transpose(-1, -2) @ q_blk).sum(dim=2, dtype=acc)
        gq = (dq * plan.scale).reshape(query.shape).to(query.dtype) if need_dq else None
        gk = dk.reshape(key.shape).to(key.dtype) if need_dkv and ctx.needs_input_grad[1] else None
        gv = dv.reshape(value.shape).to(value.dtype) if need_dkv and ctx.needs_input_grad[2] else None
        return gq, gk, gv, None, None


def blocked_unsupported(req: AttentionRequest) -> str | None:
    m = req.attn_mask
    if m is not None and m.requires_grad:
        return "a float attn_mask that requires grad (its gradient is not computed here)"
    return None


def blocked_attention(req: AttentionRequest, *, block_q: int | None = None) -> torch.Tensor:
    """Query-blocked attention for a validated request; ``block_q`` defaults to :data:`DEFAULT_BLOCK_Q`
    (all queries in one block up to :data:`SINGLE_BLOCK_UP_TO`)."""
    if block_q is None:
        block_q = req.q_len if req.q_len <= SINGLE_BLOCK_UP_TO else DEFAULT_BLOCK_Q
    if not isinstance(block_q, int) or isinstance(block_q, bool) or block_q < 1:
        raise ValueError(f"block_q must be an int >= 1; got {block_q!r}")
    why = blocked_unsupported(req)
    if why is not None:
        raise ValueError(f"backend='blocked' cannot serve this call: {why}")
    offset = None
    if req.is_causal:
        offset = 0 if req.causal_align == "top_left" else req.k_len - req.q_len
    m = req.attn_mask
    may_kill = (
        (m is not None and (m.dtype == torch.bool or bool(torch.isneginf(m).any())))
        or (offset is not None and offset < 0)
    )
    seed = int(torch.randint(0, 2**62, (1,)).item()) if req.dropout_p > 0.0 else 0
    plan = _RowPlan(
        lq=req.q_len, lk=req.k_len, block_q=block_q, scale=req.scale, causal_offset=offset,
        dropout_p=req.dropout_p, seed=seed, compute_dtype=_compute_dtype(req.query.dtype),
        may_kill_rows=may_kill,
    )
    return _BlockedAttentionFunction.apply(req.query, req.key, req.value, req.attn_mask, plan)
