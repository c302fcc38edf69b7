"""Drop-in twins of ``torch.nn`` classes, built on our attention mechanism.

    from selfattn.nn import MultiheadAttention      # instead of torch.nn.MultiheadAttention
    mha = MultiheadAttention(64, 4, batch_first=True, backend="math")
    mha.load_state_dict(torch_mha.state_dict())     # same keys, same shapes, both ways
    out, weights = mha(x, x, x, key_padding_mask=pad)

The constructor, ``forward`` arguments, parameter names, initialisation and outputs follow
``torch.nn.MultiheadAttention`` of torch 2.13 (its "slow path", which is the reference the fused
inference fast path is meant to reproduce). The attention itself runs through
``selfattn.attention.scaled_dot_product_attention`` with a selectable backend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.init import constant_, xavier_normal_, xavier_uniform_
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from .attention import BACKENDS, attention_weights, scaled_dot_product_attention

__all__ = ["MultiheadAttention"]

_BACKEND_NAMES = ("auto", *BACKENDS)


def _is_positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _check_mask_dtype(name: str, mask) -> None:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None; got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise ValueError(
            f"{name} must be bool (True = masked out) or floating point (added to the scores); got {mask.dtype}"
        )


class MultiheadAttention(nn.Module):
    r"""``torch.nn.MultiheadAttention`` with the same constructor, ``forward``, ``state_dict`` and outputs.

    Multi-head attention (Vaswani et al. 2017): project the inputs to queries, keys and values,
    split them into ``num_heads`` heads of ``embed_dim // num_heads`` features, attend in each head,
    concatenate and project with ``out_proj``.

    Parameters are torch's, by name, shape and initialisation (so ``load_state_dict`` works both
    ways and the same seed gives the same weights): ``in_proj_weight`` (3E, E) when
    ``kdim == vdim == embed_dim``, else ``q_proj_weight`` (E, E), ``k_proj_weight`` (E, kdim),
    ``v_proj_weight`` (E, vdim); ``in_proj_bias`` (3E,) when ``bias``; ``bias_k``/``bias_v``
    (1, 1, E) when ``add_bias_kv``; ``out_proj`` a Linear(E, E).

    Masks use torch's MHA convention, which is the opposite of SDPA's: in a boolean
    ``key_padding_mask`` (N, S) or ``attn_mask`` (L, S) / (N*num_heads, L, S), True means "do NOT
    attend"; float masks are added to the scores. Both may be given; they are combined.

    ``is_causal`` is, as in torch, a *hint* that ``attn_mask`` is the causal mask: it still needs
    ``attn_mask``, and when ``need_weights=False`` and no ``key_padding_mask`` is given the
    mask is dropped and top-left causal masking is applied instead (so a wrong hint gives wrong
    results exactly as torch's does). Otherwise ``attn_mask`` is used as given.

    Differences from torch, on purpose:

    * A query row whose keys are all masked gives zero attention weights and an output of just
      ``out_proj.bias``, with finite gradients. torch returns NaN there when ``need_weights=True``
      (and on its inference fast path), and zeros when ``need_weights=False`` (pytorch #41508).
    * ``is_causal=True`` without ``attn_mask`` is a ValueError. torch raises a RuntimeError on
      its usual path but silently ignores ``is_causal`` on its inference fast path.
    * Bad input (shapes, dims, mask dtypes) is a ValueError naming the argument, raised before
      any computation; torch raises AssertionError/RuntimeError, some only midway.
    * ``backend`` (keyword-only) picks the attention implementation: "auto", "math", ... (see
      ``selfattn.attention.BACKENDS``). No NestedTensor fast path.
    * Returned weights are computed by ``selfattn.attention.attention_weights`` in fp32 and cast
      to the query's dtype. In training with ``dropout > 0`` and ``need_weights=True``, the
      output is the dropped-out weights times the values (as torch does), computed here
      directly rather than by ``backend``, so that the returned weights are the ones used.
    """

    __constants__ = ["batch_first"]
    bias_k: torch.Tensor | None
    bias_v: torch.Tensor | None

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
        *,
        backend: str = "auto",
    ) -> None:
        if not _is_positive_int(embed_dim):
            raise ValueError(f"embed_dim must be a positive int; got {embed_dim!r}")
        if not _is_positive_int(num_heads):
            raise ValueError(f"num_heads must be a positive int; got {num_heads!r}")
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}); "
                f"{embed_dim} / {num_heads} = {embed_dim / num_heads:g}"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1); got {dropout!r}")
        for name, d in (("kdim", kdim), ("vdim", vdim)):
            if d is not None and not _is_positive_int(d):
                raise ValueError(f"{name} must be a positive int or None (= embed_dim); got {d!r}")
        if backend not in _BACKEND_NAMES:
            raise ValueError(f"backend={backend!r} is not allowed; choose one of {_BACKEND_NAMES}")
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        self.backend = backend

        # Creation order matters: out_proj's own init draws random numbers before
        # _reset_parameters does, so the same seed gives torch's weights exactly.
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty((3 * embed_dim, embed_dim), **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty((embed_dim, embed_dim), **factory))
            self.k_proj_weight = nn.Parameter(torch.empty((embed_dim, self.kdim), **factory))
            self.v_proj_weight = nn.Parameter(torch.empty((embed_dim, self.vdim), **factory))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        # torch's Linear subclass that dynamic quantisation leaves alone, as in torch's MHA.
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty((1, 1, embed_dim), **factory))
            self.bias_v = nn.Parameter(torch.empty((1, 1, embed_dim), **factory))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # torch's scheme: Xavier-uniform projections, zero biases, Xavier-normal bias_k/bias_v.
        if self._qkv_same_embed_dim:
            xavier_uniform_(self.in_proj_weight)
        else:
            xavier_uniform_(self.q_proj_weight)
            xavier_uniform_(self.k_proj_weight)
            xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            constant_(self.in_proj_bias, 0.0)
            constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            xavier_normal_(self.bias_k)
        if self.bias_v is not None:
            xavier_normal_(self.bias_v)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
            f"kdim={self.kdim}, vdim={self.vdim}, batch_first={self.batch_first}, backend={self.backend!r}"
        )

    # ---- validation -----------------------------------------------------------------------

    def _check_inputs(self, query, key, value, key_padding_mask, attn_mask, is_causal) -> bool:
        """All shape/dtype checks, before any work. Returns whether the input is batched."""
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
            if not t.is_floating_point():
                raise ValueError(f"{name} must be a floating-point tensor; got dtype {t.dtype}")
        if query.dim() not in (2, 3):
            raise ValueError(
                f"query must be 2-D (L, E) unbatched or 3-D batched; got a {query.dim()}-D tensor "
                f"of shape {tuple(query.shape)}"
            )
        batched = query.dim() == 3
        for name, t in (("key", key), ("value", value)):
            if t.dim() != query.dim():
                raise ValueError(
                    f"{name} must be {query.dim()}-D like query ({'batched' if batched else 'unbatched'}); "
                    f"got shape {tuple(t.shape)}"
                )
        for name, t, want in (("query", query, self.embed_dim), ("key", key, self.kdim), ("value", value, self.vdim)):
            if t.shape[-1] != want:
                what = "embed_dim" if name == "query" else ("kdim" if name == "key" else "vdim")
                raise ValueError(f"{name} must have last dim {what}={want}; got shape {tuple(t.shape)}")
        if not (query.dtype == key.dtype == value.dtype):
            raise ValueError(f"query, key and value must share one dtype; got {query.dtype}, {key.dtype}, {value.dtype}")
        param_dtype = self.out_proj.weight.dtype
        if query.dtype != param_dtype and not torch.is_autocast_enabled(query.device.type):
            raise ValueError(
                f"query dtype {query.dtype} does not match the module's parameters ({param_dtype}); "
                f"convert one with .to()"
            )
        seq_dim = 1 if (batched and self.batch_first) else 0
        if batched:
            batch_dim = 1 - seq_dim
            sizes = (query.shape[batch_dim], key.shape[batch_dim], value.shape[batch_dim])
            if len(set(sizes)) != 1:
                raise ValueError(
                    f"query, key and value must have the same batch size (dim {batch_dim}, "
                    f"batch_first={self.batch_first}); got {sizes}"
                )
        n = query.shape[1 - seq_dim] if batched else 1
        tgt_len, src_len = query.shape[seq_dim], key.shape[seq_dim]
        if value.shape[seq_dim] != src_len:
            raise ValueError(
                f"key and value must have the same sequence length (dim {seq_dim}); "
                f"got {tuple(key.shape)} and {tuple(value.shape)}"
            )
        if key_padding_mask is not None:
            _check_mask_dtype("key_padding_mask", key_padding_mask)
            want = (n, src_len) if batched else (src_len,)
            if tuple(key_padding_mask.shape) != want:
                raise ValueError(
                    f"key_padding_mask must have shape {want} ({'(N, S)' if batched else '(S,)'}); "
                    f"got {tuple(key_padding_mask.shape)}"
                )
        if attn_mask is not None:
            _check_mask_dtype("attn_mask", attn_mask)
            two_d = (tgt_len, src_len)
            three_d = (n * self.num_heads, tgt_len, src_len)
            if tuple(attn_mask.shape) not in (two_d, three_d):
                raise ValueError(
                    f"attn_mask must have shape {two_d} (L, S) or {three_d} "
                    f"({'N*num_heads' if batched else 'num_heads'}, L, S); got {tuple(attn_mask.shape)}"
                )
        elif is_causal:
            raise ValueError(
                "is_causal=True is a hint that attn_mask is causal, and needs attn_mask (as in torch); "
                "got attn_mask=None. Pass e.g. torch.nn.Transformer.generate_square_subsequent_mask(L)"
            )
        return batched

    # ---- masks ----------------------------------------------------------------------------

    def _attention_mask(self, attn_mask, key_padding_mask, n, tgt_len, src_len, dtype, extra_keys):
        """Merge torch-MHA masks into one SDPA mask, broadcastable to (N, H, L, S + extra_keys).

        Returns a bool keep-mask (True = attend) when both masks are boolean, else a float mask
        (bools become -inf, as torch does, then the two are added). ``extra_keys`` columns for
        bias_k / the zero key are always attended.
        """
        if attn_mask is None and key_padding_mask is None:
            return None
        parts = []
        if attn_mask is not None:
            parts.append(attn_mask if attn_mask.dim() == 2 else attn_mask.view(n, self.num_heads, tgt_len, src_len))
        if key_padding_mask is not None:
            parts.append(key_padding_mask.view(n, 1, 1, src_len))
        if all(p.dtype == torch.bool for p in parts):
            masked = parts[0] if len(parts) == 1 else parts[0] | parts[1]
            keep = ~masked
            return F.pad(keep, (0, extra_keys), value=True) if extra_keys else keep
        additive = None
        for p in parts:
            if p.dtype == torch.bool:
                p = torch.zeros(p.shape, dtype=dtype, device=p.device).masked_fill_(p, float("-inf"))
            additive = p if additive is None else additive + p
        return F.pad(additive, (0, extra_keys), value=0.0) if extra_keys else additive

    # ---- forward --------------------------------------------------------------------------

    def _project(self, query, key, value):
        """(N, L, E), (N, S, kdim), (N, S, vdim) -> q (N, L, E), k (N, S, E), v (N, S, E)."""
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Same arguments and return values as ``torch.nn.MultiheadAttention.forward``.

        query (L, N, E) / (N, L, E) with batch_first / (L, E) unbatched; key (S, N, kdim), value
        (S, N, vdim) likewise. Returns the output in query's layout and, when ``need_weights``,
        the weights (N, L, S') averaged over heads or (N, num_heads, L, S') per head (no N when
        unbatched), where S' = S plus one for ``add_bias_kv`` and one for ``add_zero_attn``.
        """
        batched = self._check_inputs(query, key, value, key_padding_mask, attn_mask, is_causal)

        # Work batch-first: (N, L, E).
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, tgt_len, _ = query.shape
        src_len = key.shape[1]

        q, k, v = self._project(query, key, value)  # (N, L, E), (N, S, E), (N, S, E)
        extra_keys = 0
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.expand(n, 1, -1)], dim=1)  # (N, S+1, E)
            v = torch.cat([v, self.bias_v.expand(n, 1, -1)], dim=1)
            extra_keys += 1
        if self.add_zero_attn:
            # A zero key/value in every head: zeros before the head split are zeros after it.
            k = torch.cat([k, k.new_zeros(n, 1, self.embed_dim)], dim=1)  # (N, S'+1, E)
            v = torch.cat([v, v.new_zeros(n, 1, self.embed_dim)], dim=1)
            extra_keys += 1

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (N, H, T, D)

        q, k, v = heads(q), heads(k), heads(v)

        # torch's hint rule: trust is_causal only where its SDPA path would (no padding mask, no weights).
        use_causal_hint = is_causal and key_padding_mask is None and not need_weights
        mask = None
        if not use_causal_hint:
            mask = self._attention_mask(attn_mask, key_padding_mask, n, tgt_len, src_len, q.dtype, extra_keys)
        dropout_p = self.dropout if self.training else 0.0

        weights = None
        if need_weights:
            weights = attention_weights(q, k, attn_mask=mask)  # (N, H, L, S') fp32
            if dropout_p > 0.0:
                # The returned weights must be the ones that made the output, as in torch.
                weights = F.dropout(weights, p=dropout_p, training=True)
                out = (weights @ v.float()).to(q.dtype)  # (N, H, L, D)
            else:
                out = scaled_dot_product_attention(q, k, v, attn_mask=mask, backend=self.backend)
            weights = weights.to(query.dtype)
            if average_attn_weights:
                weights = weights.mean(dim=1)  # (N, L, S')
            if not batched:
                weights = weights.squeeze(0)
        else:
            out = scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=use_causal_hint, backend=self.backend
            )  # (N, H, L, D)

        out = out.transpose(1, 2).reshape(n, tgt_len, self.embed_dim)  # (N, L, E)
        out = self.out_proj(out)
        if not batched:
            out = out.squeeze(0)  # (L, E)
        elif not self.batch_first:
            out = out.transpose(0, 1)  # (L, N, E)
        return out, weights
