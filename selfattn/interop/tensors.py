"""Checking a weights file against an architecture before any tensor is used."""

from __future__ import annotations

import torch


def tensor_problems(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
                    optional: dict[str, tuple[int, ...]] | None = None) -> list[str]:
    """Every missing, unexpected and misshapen tensor, as message parts (empty when all fit).
    expected: name -> shape each must have; optional: may be present, with that shape."""
    optional = optional or {}
    shapes = {**expected, **optional}
    missing = [n for n in expected if n not in tensors]
    extra = sorted(n for n in tensors if n not in shapes)
    misshapen = [f"{n}: expected {tuple(shapes[n])}, got {tuple(tensors[n].shape)}"
                 for n in shapes if n in tensors and tuple(tensors[n].shape) != tuple(shapes[n])]
    parts = []
    if missing:
        parts.append(f"missing tensors ({len(missing)}): {', '.join(missing)}")
    if extra:
        parts.append(f"unexpected tensors ({len(extra)}): {', '.join(extra)}")
    if misshapen:
        parts.append(f"misshapen tensors ({len(misshapen)}): {'; '.join(misshapen)}")
    return parts
