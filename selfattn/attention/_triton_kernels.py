"""The Triton kernels behind ``backend="triton"``: one pass over key blocks with an online softmax
(forward), and two recomputing passes for the gradients (FlashAttention's scheme, written from the
papers' formulas: Dao et al. 2022, 2023).

Imported only when that backend runs, because ``triton`` is an optional dependency. Whether these
are GPU kernels or run by Triton's CPU interpreter is fixed when this module is imported
(``TRITON_INTERPRET=1`` then means the interpreter, as in the tests).

Conventions shared by the three kernels:
- tensors are 4-D (B, H, L, D) with any strides; key/value have H/N_REP heads (GQA: query head h
  reads key/value head h // N_REP);
- scores are s = scale·q·k + float mask, exponentiated only after the row maximum is subtracted
  (so a float mask near fp32's largest value cannot overflow);
- ``LSE`` holds, per query row, the row maximum plus the log of the softmax denominator, +inf for a
  row that sees no key: exp(s - LSE) is then the forward's weights everywhere, 0 in such rows;
- causal: key j is seen by query i when j <= i + causal_offset (0 = top-left, Lk - Lq = bottom-right);
- dropout: the weights are dropped after the softmax's denominator is summed, as in every backend;
  delta = rowsum(dO·O) stays the softmax backward's term because O is the dropped weights times V;
- MASK_KIND: 0 none, 1 boolean (nonzero = attend), 2 float (added to the scores), broadcast through
  strides of 0.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _tile(base, rows, cols, s_row, s_col, n_rows, n_cols):
    """The (len(rows), len(cols)) tile at base[rows, cols] for the given strides; 0 outside
    n_rows x n_cols (the partial blocks at the ends of a sequence or of a padded head size)."""
    return tl.load(base + rows[:, None] * s_row + cols[None, :] * s_col,
                   mask=(rows[:, None] < n_rows) & (cols[None, :] < n_cols), other=0.0)


@triton.jit
def _store_tile(base, rows, cols, s_row, s_col, n_rows, n_cols, value):
    tl.store(base + rows[:, None] * s_row + cols[None, :] * s_col, value.to(base.dtype.element_ty),
             mask=(rows[:, None] < n_rows) & (cols[None, :] < n_cols))


@triton.jit
def _mm(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b. UPCAST (set under the interpreter only): fp32 operands, because Triton's interpreter
    multiplies bf16 tiles wrongly (checked with triton 3.8); on a GPU bf16 tiles go to the tensor cores."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _scores(q, k, offs_m, offs_n, row_ok, LK, scale, causal_offset, mask_ptrs,
            IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
            UPCAST: tl.constexpr):
    """(BLOCK_M, BLOCK_N) scores, -inf where query offs_m does not see key offs_n."""
    s = _mm(q, tl.trans(k), PRECISION, UPCAST).to(ACC) * scale
    seen = row_ok[:, None] & (offs_n[None, :] < LK)
    if IS_CAUSAL:
        seen = seen & (offs_n[None, :] <= offs_m[:, None] + causal_offset)
    if MASK_KIND == 1:
        seen = seen & (tl.load(mask_ptrs, mask=seen, other=0) != 0)
    if MASK_KIND == 2:
        s = s + tl.load(mask_ptrs, mask=seen, other=0.0).to(ACC)
    return tl.where(seen, s, float("-inf"))


@triton.jit
def _dropout(x, seed, bh, offs_m, offs_n, LQ, LK, dropout_p):
    """x where this (head, query, key) keeps its weight, scaled by 1/(1 - dropout_p); 0 elsewhere.
    One Philox draw per position from (seed, position): the backward regenerates the forward's mask."""
    offsets = (bh.to(tl.int64) * LQ + offs_m[:, None]) * LK + offs_n[None, :]
    keep = tl.rand(seed, offsets) >= dropout_p
    return tl.where(keep, x / (1.0 - dropout_p), 0.0)


@triton.jit
def attn_fwd(Q, K, V, M, O, LSE,
             sq_b, sq_h, sq_m, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d,
             sm_b, sm_h, sm_m, sm_n, so_b, so_h, so_m, so_d,
             H, N_REP, LQ, LK, D, DV, scale, causal_offset, seed, dropout_p,
             IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
             UPCAST: tl.constexpr, DROPOUT: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    """Grid (cdiv(LQ, BLOCK_M), B*H): one block of query rows of one head against all its keys."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hk = h // N_REP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < LQ
    q = _tile(Q + b * sq_b + h * sq_h, offs_m, offs_d, sq_m, sq_d, LQ, D)  # (BLOCK_M, BLOCK_D)
    m_i = tl.full([BLOCK_M], float("-inf"), ACC)  # running row maximum
    l_i = tl.zeros([BLOCK_M], ACC)  # running denominator, relative to m_i
    acc = tl.zeros([BLOCK_M, BLOCK_DV], ACC)  # running numerator
    hi = LK
    if IS_CAUSAL:  # the block's last row sees keys < (pid_m + 1)·BLOCK_M + causal_offset: skip the rest
        hi = tl.minimum(LK, (pid_m + 1) * BLOCK_M + causal_offset)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_ok = offs_n < LK
        k = _tile(K + b * sk_b + hk * sk_h, offs_n, offs_d, sk_n, sk_d, LK, D)  # (BLOCK_N, BLOCK_D)
        v = _tile(V + b * sv_b + hk * sv_h, offs_n, offs_dv, sv_n, sv_d, LK, DV)  # (BLOCK_N, BLOCK_DV)
        mask_ptrs = M + b * sm_b + h * sm_h + offs_m[:, None] * sm_m + offs_n[None, :] * sm_n
        s = _scores(q, k, offs_m, offs_n, row_ok, LK, scale, causal_offset, mask_ptrs,
                    IS_CAUSAL, MASK_KIND, PRECISION, ACC, UPCAST)  # (BLOCK_M, BLOCK_N)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen no key yet stays at 0
        alpha = tl.exp(m_i - m_use)  # rescales what was summed against the old maximum
        p = tl.exp(s - m_use[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)  # the denominator counts every weight, dropped or not
        if DROPOUT:
            p = _dropout(p, seed, bh, offs_m, offs_n, LQ, LK, dropout_p)
        acc = acc * alpha[:, None] + _mm(p.to(v.dtype), v, PRECISION, UPCAST).to(ACC)
        m_i = m_new
    seen_any = l_i > 0
    l_safe = tl.where(seen_any, l_i, 1.0)
    out = acc / l_safe[:, None]  # rows that see no key: 0
    lse = tl.where(seen_any, m_i + tl.log(l_safe), float("inf"))
    _store_tile(O + b * so_b + h * so_h, offs_m, offs_dv, so_m, so_d, LQ, DV, out)
    tl.store(LSE + bh * LQ + offs_m, lse, mask=row_ok)


@triton.jit
def attn_bwd_dkdv(Q, K, V, M, DO, LSE, DELTA, DK, DV_,
                  sq_b, sq_h, sq_m, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d,
                  sm_b, sm_h, sm_m, sm_n, sdo_b, sdo_h, sdo_m, sdo_d,
                  H, N_REP, LQ, LK, D, DV, scale, causal_offset, seed, dropout_p,
                  IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
                  UPCAST: tl.constexpr, DROPOUT: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    """Grid (cdiv(LK, BLOCK_N), B*H/N_REP): one block of keys of one key/value head against every
    query row that reads it (all N_REP query heads of its group), so no two programs write one row.
    DK, DV_ are contiguous (B, H/N_REP, LK, D|DV)."""
    pid_n = tl.program_id(0)
    bhk = tl.program_id(1)
    HK = H // N_REP
    b = bhk // HK
    hk = bhk % HK
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    col_ok = offs_n < LK
    k = _tile(K + b * sk_b + hk * sk_h, offs_n, offs_d, sk_n, sk_d, LK, D)  # (BLOCK_N, BLOCK_D)
    v = _tile(V + b * sv_b + hk * sv_h, offs_n, offs_dv, sv_n, sv_d, LK, DV)  # (BLOCK_N, BLOCK_DV)
    dk = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], ACC)
    lo = 0
    if IS_CAUSAL:  # query i sees key j only when i >= j - causal_offset: earlier row blocks add nothing
        lo = (tl.maximum(0, pid_n * BLOCK_N - causal_offset) // BLOCK_M) * BLOCK_M
    for r in range(0, N_REP):
        h = hk * N_REP + r
        for start_m in range(lo, LQ, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            row_ok = offs_m < LQ
            q = _tile(Q + b * sq_b + h * sq_h, offs_m, offs_d, sq_m, sq_d, LQ, D)  # (BLOCK_M, BLOCK_D)
            do = _tile(DO + b * sdo_b + h * sdo_h, offs_m, offs_dv, sdo_m, sdo_d, LQ, DV)  # (BLOCK_M, BLOCK_DV)
            lse = tl.load(LSE + (b * H + h) * LQ + offs_m, mask=row_ok, other=float("inf"))
            delta = tl.load(DELTA + (b * H + h) * LQ + offs_m, mask=row_ok, other=0.0)
            mask_ptrs = M + b * sm_b + h * sm_h + offs_m[:, None] * sm_m + offs_n[None, :] * sm_n
            s = _scores(q, k, offs_m, offs_n, row_ok, LK, scale, causal_offset, mask_ptrs,
                        IS_CAUSAL, MASK_KIND, PRECISION, ACC, UPCAST)
            p = tl.exp(s - lse[:, None])  # (BLOCK_M, BLOCK_N): the forward's weights
            pd = p
            if DROPOUT:
                pd = _dropout(p, seed, b * H + h, offs_m, offs_n, LQ, LK, dropout_p)
            dv += _mm(tl.trans(pd.to(do.dtype)), do, PRECISION, UPCAST).to(ACC)
            dp = _mm(do, tl.trans(v), PRECISION, UPCAST).to(ACC)  # dL/dP (through the dropout mask)
            if DROPOUT:
                dp = _dropout(dp, seed, b * H + h, offs_m, offs_n, LQ, LK, dropout_p)
            ds = p * (dp - delta[:, None])  # dL/d(scores): the softmax backward, delta = rowsum(dO·O)
            dk += _mm(tl.trans(ds.to(q.dtype)), q, PRECISION, UPCAST).to(ACC)
    _store_tile(DK + bhk * LK * D, offs_n, offs_d, D, 1, LK, D, dk * scale)
    _store_tile(DV_ + bhk * LK * DV, offs_n, offs_dv, DV, 1, LK, DV, dv)


@triton.jit
def attn_bwd_dq(Q, K, V, M, DO, LSE, DELTA, DQ,
                sq_b, sq_h, sq_m, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d,
                sm_b, sm_h, sm_m, sm_n, sdo_b, sdo_h, sdo_m, sdo_d,
                H, N_REP, LQ, LK, D, DV, scale, causal_offset, seed, dropout_p,
                IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
                UPCAST: tl.constexpr, DROPOUT: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    """Grid (cdiv(LQ, BLOCK_M), B*H): dQ for one block of query rows. DQ is contiguous (B, H, LQ, D)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hk = h // N_REP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < LQ
    q = _tile(Q + b * sq_b + h * sq_h, offs_m, offs_d, sq_m, sq_d, LQ, D)
    do = _tile(DO + b * sdo_b + h * sdo_h, offs_m, offs_dv, sdo_m, sdo_d, LQ, DV)
    lse = tl.load(LSE + bh * LQ + offs_m, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + bh * LQ + offs_m, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    hi = LK
    if IS_CAUSAL:
        hi = tl.minimum(LK, (pid_m + 1) * BLOCK_M + causal_offset)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_ok = offs_n < LK
        k = _tile(K + b * sk_b + hk * sk_h, offs_n, offs_d, sk_n, sk_d, LK, D)
        v = _tile(V + b * sv_b + hk * sv_h, offs_n, offs_dv, sv_n, sv_d, LK, DV)
        mask_ptrs = M + b * sm_b + h * sm_h + offs_m[:, None] * sm_m + offs_n[None, :] * sm_n
        s = _scores(q, k, offs_m, offs_n, row_ok, LK, scale, causal_offset, mask_ptrs,
                    IS_CAUSAL, MASK_KIND, PRECISION, ACC, UPCAST)
        p = tl.exp(s - lse[:, None])
        dp = _mm(do, tl.trans(v), PRECISION, UPCAST).to(ACC)
        if DROPOUT:
            dp = _dropout(dp, seed, bh, offs_m, offs_n, LQ, LK, dropout_p)
        ds = p * (dp - delta[:, None])
        dq += _mm(ds.to(k.dtype), k, PRECISION, UPCAST).to(ACC)
    _store_tile(DQ + bh * LQ * D, offs_m, offs_d, D, 1, LQ, D, dq * scale)
