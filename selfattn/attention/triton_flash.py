"""``backend="triton"``: fused, memory-efficient attention as our own Triton kernels.

Forward: one pass over key blocks with an online softmax, saving only the output and one
log-sum-exp per query row; backward: dK/dV and dQ by recomputing the weights block by block.
Memory is O(L·D), never O(Lq·Lk). Serves everything a request allows: causal (either alignment),
boolean or float masks broadcast to (..., Hq, Lq, Lk) (not a mask that needs a gradient), dropout
on the weights (regenerated in the backward from one seed), GQA, any scale, head sizes up to 256
(the value's may differ).

The kernels run inside two ``torch.library`` custom ops (forward; backward registered as its
autograd formula), so ``torch.compile`` keeps the call in its graph without tracing into Triton.
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


def _cdiv(n: int, block: int) -> int:
    return -(-n // block)


def _as_4d(t: torch.Tensor) -> torch.Tensor:
    """(..., H, L, D) -> (B, H, L, D) as a view where the leading dims allow it; (L, D) -> (1, 1, L, D)."""
    if t.dim() == 2:
        return t.unsqueeze(0).unsqueeze(0)
    return t.reshape(-1, *t.shape[-3:])


def _mask_4d(mask: torch.Tensor | None, query: torch.Tensor, shape4: tuple, acc: torch.dtype):
    """The mask as a (B, H, Lq, Lk) tensor with stride 0 along the dims it broadcasts over (no copy
    of the full score shape): uint8 for a boolean mask, the accumulation dtype for a float one."""
    if mask is None:
        return None
    m = mask.to(torch.uint8) if mask.dtype == torch.bool else mask.to(acc)
    return m.expand(*query.shape[:-1], shape4[-1]).reshape(shape4)


def _launch_args(q4, k4, v4, mask4, is_causal, causal_offset, scale, dropout_p, seed):
    """What the three kernels share: the mask argument and its strides, the sizes and scalars, the
    constexprs (meta), and the accumulation dtype."""
    import triton.language as tl

    _, H, Lq, D = q4.shape
    Lk, Dv = k4.shape[-2], v4.shape[-1]
    dtype = q4.dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    bm, bn, bd, bdv = _blocks(D, Dv, q4.device.type)
    kind = 0 if mask4 is None else (1 if mask4.dtype == torch.uint8 else 2)
    m4 = q4.new_empty(1) if mask4 is None else mask4  # never read without a mask
    ms = (0, 0, 0, 0) if mask4 is None else mask4.stride()
    meta = dict(IS_CAUSAL=is_causal, MASK_KIND=kind, ACC=tl.float64 if acc == torch.float64 else tl.float32,
                PRECISION="ieee" if dtype in (torch.float32, torch.float64) else "tf32",  # no TF32 for fp32
                UPCAST=q4.device.type != "cuda" and dtype in (torch.bfloat16, torch.float16),
                DROPOUT=dropout_p > 0.0, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, BLOCK_DV=bdv)
    sizes = (H, H // k4.shape[1], Lq, Lk, D, Dv, scale, causal_offset, seed, dropout_p)
    return m4, ms, sizes, meta, acc


# The kernels run inside custom ops, so torch.compile sees two opaque calls with known output
# shapes (no graph break, nothing traced through Triton's launcher or its interpreter).
@torch.library.custom_op("selfattn::triton_flash_fwd", mutates_args=())
def _flash_fwd(q4: torch.Tensor, k4: torch.Tensor, v4: torch.Tensor, mask4: torch.Tensor | None,
               is_causal: bool, causal_offset: int, scale: float, dropout_p: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, H, Lq, D), (B, Hk, Lk, D), (B, Hk, Lk, Dv) -> output (B, H, Lq, Dv), log-sum-exp
    (B, H, Lq), and the dropout seed (a 0-dim int64 tensor) the backward needs."""
    from . import _triton_kernels as K

    # one seed from torch's generator per call: torch.manual_seed makes dropout repeatable
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if dropout_p > 0.0 else 0
    m4, ms, sizes, meta, acc = _launch_args(q4, k4, v4, mask4, is_causal, causal_offset, scale, dropout_p, seed)
    B, H, Lq, _ = q4.shape
    o4 = q4.new_empty(B, H, Lq, v4.shape[-1])
    lse = q4.new_empty(B, H, Lq, dtype=acc)
    K.attn_fwd[(_cdiv(Lq, meta["BLOCK_M"]), B * H)](
        q4, k4, v4, m4, o4, lse, *q4.stride(), *k4.stride(), *v4.stride(), *ms, *o4.stride(), *sizes, **meta)
    return o4, lse, torch.tensor(seed, dtype=torch.int64)


@_flash_fwd.register_fake
def _(q4, k4, v4, mask4, is_causal, causal_offset, scale, dropout_p):
    acc = torch.float64 if q4.dtype == torch.float64 else torch.float32
    return (q4.new_empty(*q4.shape[:-1], v4.shape[-1]), q4.new_empty(q4.shape[:-1], dtype=acc),
            torch.empty((), dtype=torch.int64))


@torch.library.custom_op("selfattn::triton_flash_bwd", mutates_args=())
def _flash_bwd(do4: torch.Tensor, q4: torch.Tensor, k4: torch.Tensor, v4: torch.Tensor,
               mask4: torch.Tensor | None, o4: torch.Tensor, lse: torch.Tensor, seed: torch.Tensor,
               is_causal: bool, causal_offset: int, scale: float, dropout_p: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dQ, dK, dV (accumulated in fp32, or fp64 for fp64) in the inputs' dtypes."""
    from . import _triton_kernels as K

    m4, ms, sizes, meta, acc = _launch_args(q4, k4, v4, mask4, is_causal, causal_offset, scale, dropout_p,
                                            int(seed.item()))
    B, H, Lq, D = q4.shape
    Hk, Lk, Dv = k4.shape[1], k4.shape[2], v4.shape[-1]
    delta = (do4.to(acc) * o4.to(acc)).sum(-1)  # (B, H, Lq): rowsum(dO·O), the softmax backward's term
    dq4 = q4.new_empty(B, H, Lq, D, dtype=acc)
    dk4, dv4 = q4.new_empty(B, Hk, Lk, D, dtype=acc), q4.new_empty(B, Hk, Lk, Dv, dtype=acc)
    common = (*q4.stride(), *k4.stride(), *v4.stride(), *ms, *do4.stride(), *sizes)
    K.attn_bwd_dkdv[(_cdiv(Lk, meta["BLOCK_N"]), B * Hk)](q4, k4, v4, m4, do4, lse, delta, dk4, dv4,
                                                                 *common, **meta)
    K.attn_bwd_dq[(_cdiv(Lq, meta["BLOCK_M"]), B * H)](q4, k4, v4, m4, do4, lse, delta, dq4, *common, **meta)
    return dq4.to(q4.dtype), dk4.to(k4.dtype), dv4.to(v4.dtype)


@_flash_bwd.register_fake
def _(do4, q4, k4, v4, mask4, o4, lse, seed, is_causal, causal_offset, scale, dropout_p):
    return torch.empty_like(q4), torch.empty_like(k4), torch.empty_like(v4)


def _setup_context(ctx, inputs, output):
    q4, k4, v4, mask4, is_causal, causal_offset, scale, dropout_p = inputs
    o4, lse, seed = output
    ctx.save_for_backward(q4, k4, v4, mask4, o4, lse, seed)
    ctx.flags = (is_causal, causal_offset, scale, dropout_p)


def _backward(ctx, do4, _dlse, _dseed):
    q4, k4, v4, mask4, o4, lse, seed = ctx.saved_tensors
    dq, dk, dv = _flash_bwd(do4, q4, k4, v4, mask4, o4, lse, seed, *ctx.flags)
    return dq, dk, dv, None, None, None, None, None


_flash_fwd.register_autograd(_backward, setup_context=_setup_context)


def triton_attention(req: AttentionRequest) -> torch.Tensor:
    why = triton_unsupported(req)
    if why is not None:
        raise ValueError(f"backend='triton' cannot serve this call: {why}")
    q, k, v = req.query, req.key, req.value
    q4, k4, v4 = _as_4d(q), _as_4d(k), _as_4d(v)  # (B, H, L, D), views where the shapes allow
    B, H, Lq, _ = q4.shape
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    mask4 = _mask_4d(req.attn_mask, q, (B, H, Lq, k4.shape[-2]), acc)
    offset = req.k_len - req.q_len if req.is_causal and req.causal_align == "bottom_right" else 0
    o4, _, _ = _flash_fwd(q4, k4, v4, mask4, req.is_causal, offset, float(req.scale), float(req.dropout_p))
    return o4.reshape(*q.shape[:-1], v.shape[-1])
