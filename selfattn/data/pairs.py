"""User-supplied (source, target) text pairs from TSV or JSONL, for any sequence-to-sequence task.

* TSV: two tab-separated columns per line, an optional header (``source<TAB>target``, or any
  names given as ``source_key``/``target_key``), blank lines skipped.
* JSONL: one JSON object per line with the two keys (default ``"source"`` and ``"target"``),
  blank lines skipped.

Every problem names the file and the line.
"""

from __future__ import annotations

import json
from pathlib import Path


class PairsFormatError(ValueError):
    """A pairs file that cannot be read; the message names the file and the line."""


def _check_text(path: Path, line: int, name: str, value) -> str:
    if not isinstance(value, str):
        raise PairsFormatError(f"{path}, line {line}: {name} is {type(value).__name__}, expected a string")
    if not value.strip():
        raise PairsFormatError(f"{path}, line {line}: {name} is empty")
    return value


def read_tsv_pairs(
    path: str | Path, source_key: str = "source", target_key: str = "target"
) -> list[tuple[str, str]]:
    """Pairs from a two-column TSV. A first line equal to ``source_key<TAB>target_key`` is a header."""
    path = Path(path)
    pairs: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise PairsFormatError(
                    f"{path}, line {line_no}: {len(fields)} tab-separated fields, expected 2 (source, target)"
                )
            if not pairs and line_no == 1 and [x.strip() for x in fields] == [source_key, target_key]:
                continue
            pairs.append(
                (_check_text(path, line_no, "source", fields[0]), _check_text(path, line_no, "target", fields[1]))
            )
    if not pairs:
        raise PairsFormatError(f"{path}: no pairs (the file is empty or holds only a header)")
    return pairs


def read_jsonl_pairs(
    path: str | Path, source_key: str = "source", target_key: str = "target"
) -> list[tuple[str, str]]:
    """Pairs from JSON Lines, one object per line holding ``source_key`` and ``target_key``."""
    path = Path(path)
    pairs: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise PairsFormatError(f"{path}, line {line_no}: not valid JSON ({e.msg})") from e
            if not isinstance(record, dict):
                raise PairsFormatError(f"{path}, line {line_no}: expected a JSON object, got {type(record).__name__}")
            missing = [k for k in (source_key, target_key) if k not in record]
            if missing:
                raise PairsFormatError(
                    f"{path}, line {line_no}: missing key(s) {missing}; the object has {sorted(record)}"
                )
            pairs.append(
                (
                    _check_text(path, line_no, source_key, record[source_key]),
                    _check_text(path, line_no, target_key, record[target_key]),
                )
            )
    if not pairs:
        raise PairsFormatError(f"{path}: no pairs (the file is empty)")
    return pairs


def read_pairs(
    path: str | Path, source_key: str = "source", target_key: str = "target", format: str | None = None
) -> list[tuple[str, str]]:
    """Pairs from ``path``; the format comes from ``format`` ("tsv" or "jsonl") or the suffix
    (.tsv/.tab/.txt -> TSV, .jsonl/.json -> JSONL)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {path} does not exist")
    if format is None:
        suffix = path.suffix.lower()
        format = {".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}.get(suffix)
        if format is None:
            raise ValueError(f"cannot tell the format of {path} from suffix {suffix!r}; pass format='tsv' or 'jsonl'")
    if format == "tsv":
        return read_tsv_pairs(path, source_key, target_key)
    if format == "jsonl":
        return read_jsonl_pairs(path, source_key, target_key)
    raise ValueError(f"format={format!r} is not allowed; choose 'tsv' or 'jsonl'")
