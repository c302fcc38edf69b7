"""``backend="triton"``: fused, memory-efficient attention as our own Triton kernels.

Forward: one pass over key blocks with an online softmax, saving only the output and one
log-sum-exp per query row; backward: dK/dV and dQ by recomputing the weights block by block.
Memory is O(L·D), never O(Lq·Lk). Serves everything a request allows: causal (either alignment),
boolean or float masks broadcast to (..., Hq, Lq, Lk) (not a mask that needs a gradient), dropout
on the weights (regenerated in the backward from one seed), GQA, any scale, head sizes up to 256
(the value's may differ).

Runs on CUDA devices, or on CPU under Triton's interpreter (``TRITON_INTERPRET=1`` set before the
kernels are first used): that is how the tests check it on machines without a GPU, slowly.
``triton`` is optional (``pip install 'selfattn[triton]'``); without it this backend says so and
``auto`` never picks it. ``auto`` does not pick it on GPUs either until a benchmark shows it faster
than torch's own kernels there (``benchmarks/gpu.py`` compares them).
"""

from __future__ import annotations

import importlib.util
import os

import torch

from .request import AttentionRequest

MAX_HEAD_DIM = 256
GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INTERPRETER_DTYPES = (*GPU_DTYPES, torch.float64)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_unsupported(req: AttentionRequest) -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed (pip install 'selfattn[triton]')"
    device = req.query.device.type
    if device != "cuda" and not (device == "cpu" and interpreting()):
        return f"runs on CUDA devices (on CPU only under Triton's interpreter, TRITON_INTERPRET=1); got {device}"
    allowed = GPU_DTYPES if device == "cuda" else INTERPRETER_DTYPES
    if req.query.dtype not in allowed:
        return f"dtype {req.query.dtype} is not served; allowed: {', '.join(str(d) for d in allowed)}"
    m = req.attn_mask
    if m is not None and m.requires_grad:
        return "a float attn_mask that requires grad (its gradient is not computed here)"
    d, dv = req.query.shape[-1], req.value.shape[-1]
    if max(d, dv) > MAX_HEAD_DIM:
        return f"head sizes up to {MAX_HEAD_DIM}; got {d} (query/key) and {dv} (value)"
    if req.q_len == 0 or req.k_len == 0 or req.query.numel() == 0 or req.value.numel() == 0:
        return "an empty query, key or value"
    return None


def _blocks(d: int, dv: int, device: str) -> tuple[int, int, int, int]:
    """BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV. tl.dot needs every side >= 16 and powers of two."""
    import triton

    bd, bdv = max(16, triton.next_power_of_2(d)), max(16, triton.next_power_of_2(dv))
    if device != "cuda":
        return 16, 16, bd, bdv  # the interpreter: small tiles keep the tests' partial blocks interesting
    size = 64 if max(bd, bdv) <= 128 else 32  # shared memory: q, k, v tiles and the score tile
    return size, size, bd, bdv


def _as_4d(t: torch.Tensor) -> torch.Tensor:
    """(..., H, L, D) -> (B, H, L, D) as a view where the leading dims allow it; (L, D) -> (1, 1, L, D)."""
    if t.dim() == 2:
        return t.unsqueeze(0).unsqueeze(0)
    return t.reshape(-1, *t.shape[-3:])


def _mask_4d(mask: torch.Tensor | None, query: torch.Tensor, shape4: tuple, acc: torch.dtype):
    """The mask as a (B, H, Lq, Lk) tensor with stride 0 along the dims it broadcasts over (no copy
    of the full score shape), and its kind (0 none, 1 boolean, 2 float); with no mask a dummy the
    kernels never read."""
    if mask is None:
        return query.new_empty(1), 0, (0, 0, 0, 0)
    kind = 1 if mask.dtype == torch.bool else 2
    m = mask.to(torch.uint8) if kind == 1 else mask.to(acc)
    m = m.expand(*query.shape[:-1], shape4[-1]).reshape(shape4)
    return m, kind, m.stride()


def _consts(req: AttentionRequest, acc: torch.dtype) -> dict:
    import triton.language as tl

    off = 0
    if req.is_causal and req.causal_align == "bottom_right":
        off = req.k_len - req.q_len
    fp32_ieee = req.query.dtype in (torch.float32, torch.float64)  # exact fp32 products, no TF32
    upcast = req.query.device.type != "cuda" and req.query.dtype in (torch.bfloat16, torch.float16)
    return dict(IS_CAUSAL=req.is_causal, PRECISION="ieee" if fp32_ieee else "tf32", UPCAST=upcast,
                DROPOUT=req.dropout_p > 0.0,
                ACC=tl.float64 if acc == torch.float64 else tl.float32, causal_offset=off)


class _TritonAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, mask, req: AttentionRequest):
        from . import _triton_kernels as K

        q4, k4, v4 = _as_4d(query), _as_4d(key), _as_4d(value)
        B, H, Lq, D = q4.shape
        Lk, Dv = k4.shape[-2], v4.shape[-1]
        acc = torch.float64 if query.dtype == torch.float64 else torch.float32
        m4, kind, ms = _mask_4d(mask, query, (B, H, Lq, Lk), acc)
        bm, bn, bd, bdv = _blocks(D, Dv, q4.device.type)
        c = _consts(req, acc)
        o4 = torch.empty(B, H, Lq, Dv, dtype=query.dtype, device=query.device)
        lse = torch.empty(B, H, Lq, dtype=acc, device=query.device)
        # dropout: one seed from torch's generator per call (torch.manual_seed makes it repeatable);
        # the backward redraws the same mask from it
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if req.dropout_p > 0.0 else 0
        K.attn_fwd[(-(-Lq // bm), B * H)](
            q4, k4, v4, m4, o4, lse, *q4.stride(), *k4.stride(), *v4.stride(), *ms, *o4.stride(),
            H, req.n_rep, Lq, Lk, D, Dv, req.scale, c["causal_offset"], seed, req.dropout_p,
            IS_CAUSAL=c["IS_CAUSAL"], MASK_KIND=kind, PRECISION=c["PRECISION"], ACC=c["ACC"],
            UPCAST=c["UPCAST"], DROPOUT=c["DROPOUT"], BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, BLOCK_DV=bdv)
        ctx.save_for_backward(q4, k4, v4, o4, lse)
        ctx.mask4, ctx.kind, ctx.mstrides, ctx.req, ctx.seed = m4, kind, ms, req, seed
        ctx.shapes = (query.shape, key.shape, value.shape)
        return o4.reshape(*query.shape[:-1], Dv)

    @staticmethod
    def backward(ctx, dout):
        from . import _triton_kernels as K

        q4, k4, v4, o4, lse = ctx.saved_tensors
        req: AttentionRequest = ctx.req
        B, H, Lq, D = q4.shape
        Hk, Lk, Dv = k4.shape[1], k4.shape[2], v4.shape[-1]
        acc = lse.dtype
        do4 = dout.reshape(o4.shape)
        delta = (do4.to(acc) * o4.to(acc)).sum(-1)  # (B, H, Lq): rowsum(dO·O), the softmax backward's term
        bm, bn, bd, bdv = _blocks(D, Dv, q4.device.type)
        c = _consts(req, acc)
        common = (*q4.stride(), *k4.stride(), *v4.stride(), *ctx.mstrides, *do4.stride(),
                  H, req.n_rep, Lq, Lk, D, Dv, req.scale, c["causal_offset"],
                  ctx.seed, req.dropout_p)
        meta = dict(IS_CAUSAL=c["IS_CAUSAL"], MASK_KIND=ctx.kind, PRECISION=c["PRECISION"], ACC=c["ACC"],
                    UPCAST=c["UPCAST"], DROPOUT=c["DROPOUT"], BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, BLOCK_DV=bdv)
        q_shape, k_shape, v_shape = ctx.shapes
        dq = dk = dv = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            dk4 = torch.empty(B, Hk, Lk, D, dtype=acc, device=q4.device)
            dv4 = torch.empty(B, Hk, Lk, Dv, dtype=acc, device=q4.device)
            K.attn_bwd_dkdv[(-(-Lk // bn), B * Hk)](q4, k4, v4, ctx.mask4, do4, lse, delta, dk4, dv4,
                                                     *common, **meta)
            dk, dv = dk4.reshape(k_shape).to(k4.dtype), dv4.reshape(v_shape).to(v4.dtype)
        if ctx.needs_input_grad[0]:
            dq4 = torch.empty(B, H, Lq, D, dtype=acc, device=q4.device)
            K.attn_bwd_dq[(-(-Lq // bm), B * H)](q4, k4, v4, ctx.mask4, do4, lse, delta, dq4, *common, **meta)
            dq = dq4.reshape(q_shape).to(q4.dtype)
        return dq, dk, dv, None, None


def triton_attention(req: AttentionRequest) -> torch.Tensor:
    why = triton_unsupported(req)
    if why is not None:
        raise ValueError(f"backend='triton' cannot serve this call: {why}")
    return _TritonAttention.apply(req.query, req.key, req.value, req.attn_mask, req)
