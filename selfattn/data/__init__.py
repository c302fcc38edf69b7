"""Data: one module per corpus (see /work/shared/DATA.md) plus the generic token data for LMs."""

from __future__ import annotations

from .shakespeare import VALIDATION_PLAYS, load_plays, shakespeare_splits
from .text import TokenData, text_file_splits

__all__ = ["VALIDATION_PLAYS", "TokenData", "load_plays", "shakespeare_splits", "text_file_splits"]
