"""Invariants of the positional encodings, drawn by hypothesis."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selfattn.positional import (ALiBiPositions, RotaryPositions, SinusoidalPositions, alibi_slopes,
                                 build_positional, sinusoidal_table)

FAST = settings(max_examples=40, deadline=None)


@FAST
@given(dim=st.sampled_from([2, 4, 8, 16, 64]), positions=st.lists(st.integers(0, 100_000), min_size=1, max_size=6))
def test_sinusoidal_table_matches_the_formula(dim, positions):
    pe = sinusoidal_table(torch.tensor(positions), dim)  # (T, D)
    for row, p in enumerate(positions):
        for i in range(dim // 2):
            angle = p / 10000 ** (2 * i / dim)
            # fp32 angles of large p carry a rounding error of about p·2^-24 radians
            tol = 1e-5 + 2 * p * 2**-24
            assert abs(pe[row, 2 * i].item() - math.sin(angle)) <= tol
            assert abs(pe[row, 2 * i + 1].item() - math.cos(angle)) <= tol


@FAST
@given(t=st.integers(1, 8), far=st.integers(1_000, 50_000))
def test_sinusoidal_extends_beyond_any_length_seen(t, far):
    """A row depends on its position only: computed alone or inside any longer table, it is the
    same, and positions far past anything seen are still defined and bounded."""
    dim = 16
    long = sinusoidal_table(torch.arange(far + t), dim)
    alone = sinusoidal_table(torch.arange(far, far + t), dim)
    torch.testing.assert_close(alone, long[far:], atol=0, rtol=0)
    assert torch.isfinite(alone).all() and alone.abs().max() <= 1
    enc = SinusoidalPositions(dim)
    x = torch.zeros(1, t, dim)
    torch.testing.assert_close(enc.add_to_input(x, torch.arange(far, far + t)[None]), alone[None])


@FAST
@given(i=st.integers(0, 200), j=st.integers(0, 200), shift=st.integers(-150, 5000), seed=st.integers(0, 2**16),
       head_dim=st.sampled_from([2, 8, 16]))
def test_rope_scores_depend_only_on_the_offset(i, j, shift, seed, head_dim):
    shift = max(shift, -min(i, j))  # positions stay >= 0
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 2, 1, head_dim, generator=g)
    k = torch.randn(1, 2, 1, head_dim, generator=g)
    rope = RotaryPositions(head_dim)

    def score(pi, pj):
        qr, _ = rope.rotate(q, q, torch.tensor([[pi]]), torch.tensor([[pi]]))
        kr, _ = rope.rotate(k, k, torch.tensor([[pj]]), torch.tensor([[pj]]))
        return (qr * kr).sum(-1)  # (1, 2, 1)

    # angles p·θ are fp32 (as in Hugging Face): each carries a rounding error of about p·2^-24 rad
    max_pos = max(i, j) + max(shift, 0)
    tol = 1e-5 + q.norm().item() * k.norm().item() * 8 * max_pos * 2**-24
    torch.testing.assert_close(score(i + shift, j + shift), score(i, j), atol=tol, rtol=1e-5)


@FAST
@given(p=st.integers(0, 1000), seed=st.integers(0, 2**16))
def test_rope_preserves_norms_and_is_identity_at_zero(p, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 4, 8, generator=g)
    rope = RotaryPositions(8)
    pos = torch.full((2, 4), p)
    xr, _ = rope.rotate(x, x, pos, pos)
    torch.testing.assert_close(xr.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)
    x0, _ = rope.rotate(x, x, torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
    torch.testing.assert_close(x0, x, atol=0, rtol=0)


@FAST
@given(n_head=st.integers(1, 16), tq=st.integers(1, 6), tk=st.integers(1, 6), off=st.integers(0, 50))
def test_alibi_bias_is_minus_slope_times_distance(n_head, tq, tk, off):
    alibi = ALiBiPositions(n_head)
    q_pos = (torch.arange(tq) + off)[None]
    k_pos = torch.arange(tk)[None]
    bias = alibi.score_bias(q_pos, k_pos)  # (1, H, Tq, Tk)
    assert bias.shape == (1, n_head, tq, tk)
    slopes = alibi_slopes(n_head)
    for h in range(n_head):
        for a in range(tq):
            for b in range(tk):
                want = -slopes[h] * abs((a + off) - b)  # fp32, as the layer computes it
                torch.testing.assert_close(bias[0, h, a, b], want, atol=0, rtol=1e-6)


def test_alibi_slopes_for_8_heads_are_powers_of_two():
    want = torch.tensor([2.0 ** -(k + 1) for k in range(8)])  # 1/2, 1/4, ..., 1/256
    torch.testing.assert_close(alibi_slopes(8), want, atol=0, rtol=0)


@FAST
@given(n_head=st.integers(1, 64))
def test_alibi_slopes_are_distinct_and_in_0_1(n_head):
    s = alibi_slopes(n_head)
    assert s.shape == (n_head,) and (s > 0).all() and (s < 1).all()
    assert len(set(s.tolist())) == n_head  # every head has its own slope


def test_build_positional_refuses_unknown_kind():
    import pytest

    with pytest.raises(ValueError, match="position='xyz'"):
        build_positional("xyz", dim=8, n_head=2, max_len=4)
    with pytest.raises(ValueError, match="even head size"):
        RotaryPositions(7)
