"""Faster CPU decoding: linear layers with weights prepacked for oneDNN.

Decoding one token multiplies a single row by every weight matrix, so its speed is how fast the
weights stream from memory. torch's bf16 ``F.linear`` re-reads each weight in its stored
(out, in) layout and reached about 12 GB/s on this machine for SmolLM2's 30 layers; the same
product with the weight reordered once into oneDNN's blocked layout (what inductor's weight
freezing does) reached about 16 GB/s. ``pack_linears(model)`` does that reordering once, for
inference in bfloat16 on a CPU whose oneDNN supports it.

The packed copy is made from the weights as they are when packing: train or load afterwards and
call ``unpack_linears`` (or pack again). Under autograd a packed layer falls back to ``F.linear``,
so a packed model still trains correctly, just without the speed-up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def can_pack(model: nn.Module) -> str | None:
    """None if ``pack_linears`` applies to this model here, else the reason it does not."""
    params = list(model.parameters())
    if not params:
        return "the model has no parameters"
    if any(p.device.type != "cpu" for p in params):
        return "packing is for CPU inference (the model is on another device)"
    if any(p.dtype != torch.bfloat16 for p in params if p.is_floating_point()):
        return "packing is for bfloat16 weights (call model.to(torch.bfloat16) first)"
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (mkldnn)"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "oneDNN on this CPU has no bfloat16 support"
    return None


class PackedLinear(nn.Module):
    """An ``nn.Linear`` whose forward (without autograd) uses a oneDNN-packed copy of its weight.
    ``weight`` and ``bias`` stay the original parameters: state_dict, tying and saving see them."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        # the layout is chosen for one row at a time (batch_size=1): decoding
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return F.linear(x, self.weight, self.bias)
        shape = x.shape
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), self.packed, self.bias, "none", [], "")
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"

    def unpacked(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device="meta")
        lin.weight, lin.bias = self.weight, self.bias
        return lin


def swap_modules(model: nn.Module, kind: type, make) -> int:
    """Replace every module of exactly type ``kind`` by ``make(module)``, in place; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is kind:
                setattr(parent, name, make(child))
                count += 1
    return count


def pack_linears(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` of a bfloat16 CPU model by a ``PackedLinear`` (in place).
    Returns how many were packed; raises ValueError naming the reason when packing does not
    apply (see ``can_pack``)."""
    why = can_pack(model)
    if why is not None:
        raise ValueError(f"pack_linears: {why}")
    return swap_modules(model, nn.Linear, PackedLinear)


def unpack_linears(model: nn.Module) -> int:
    """Undo ``pack_linears`` (in place): plain ``nn.Linear`` layers with the same parameters."""
    return swap_modules(model, PackedLinear, PackedLinear.unpacked)
