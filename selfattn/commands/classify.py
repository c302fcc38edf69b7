"""`selfattn classify RUN_DIR --text "..."`: label and probability from a trained sentiment run.

Reads ``--text`` (repeatable), else the lines of ``--file F``, else the lines of stdin (blank
lines are skipped). An empty ``--text`` (or no text at all) is an error. A text longer than the
model reads (``data.max_len`` ids of the run, [CLS] and [SEP] included) is truncated by the run's
policy (head+tail by default) with a warning on stderr; the label is still printed.
Output: one line per text, ``label<TAB>probability``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("classify", help="classify texts with a trained sentiment run (label and probability)")
    p.add_argument("run_dir", help="sentiment run folder (its best checkpoint) or a checkpoint folder")
    p.add_argument("--text", action="append", help="a text to classify (repeatable)")
    p.add_argument("--file", help="classify each non-blank line of this UTF-8 file")
    p.set_defaults(func=run)


def read_texts(texts: list[str] | None, file: str | None) -> list[str]:
    """The inputs, checked before any model is loaded."""
    if texts is not None and file is not None:
        raise ValueError("give --text or --file, not both")
    if texts is not None:
        for i, t in enumerate(texts, start=1):
            if not t.strip():
                raise ValueError(f"--text number {i} is empty; give some words to classify")
        return list(texts)
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"--file {file}: no such file")
        lines = path.read_text(encoding="utf-8").splitlines()
        where = f"--file {file}"
    else:
        lines = sys.stdin.read().splitlines()
        where = "stdin"
    out = [ln for ln in lines if ln.strip()]
    if not out:
        raise ValueError(f"{where} holds no text to classify (only blank lines)")
    return out


def run(args) -> int:
    from ..sentiment import Classifier

    texts = read_texts(args.text, args.file)
    run_dir = Path(args.run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir} does not exist (expected a sentiment run folder)")
    clf = Classifier(run_dir)
    for i, (label, prob, cut) in enumerate(clf(texts), start=1):
        if cut:
            print(f"selfattn: warning: text {i} is {cut} tokens longer than the model reads "
                  f"(max_len {clf.max_len}); truncated ({clf.enc.truncate})", file=sys.stderr)
        print(f"{label}\t{prob:.4f}", flush=True)
    return 0
