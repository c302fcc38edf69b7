"""`selfattn translate RUN_DIR --text "..." [--beam 5] [--length-penalty 0.6]`: translate with a
trained encoder-decoder run. Lines come from --text (repeatable), --file, or standard input; one
translation is printed per input line, in order."""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("translate", help="translate text with a trained translation run (e.g. bible-en-es)")
    p.add_argument("run_dir", help="run folder (uses its best checkpoint) or a checkpoint folder")
    p.add_argument("--text", action="append", default=None, help="a sentence to translate (repeatable)")
    p.add_argument("--file", help="translate every non-empty line of this UTF-8 file ('-' = stdin)")
    p.add_argument("--beam", type=int, default=None, help="beam size; 1 = greedy (default: the run's decode.beam_size)")
    p.add_argument("--length-penalty", type=float, default=None,
                   help="GNMT length penalty alpha >= 0 (default: the run's decode.length_penalty)")
    p.add_argument("--max-len", type=int, default=None, help="most tokens to generate per line (default: the run's)")
    p.add_argument("--batch-size", type=int, default=16, help="lines decoded together")
    p.set_defaults(func=run)


def _lines(args) -> list[str]:
    if args.text is not None and args.file is not None:
        raise ValueError("give --text or --file, not both")
    if args.text is not None:
        lines = args.text
    elif args.file is not None and args.file != "-":
        path = Path(args.file)
        if not path.is_file():
            raise FileNotFoundError(f"--file {args.file}: no such file")
        lines = path.read_text(encoding="utf-8").splitlines()
    elif args.file == "-" or not sys.stdin.isatty():
        lines = sys.stdin.read().splitlines()
    else:
        raise ValueError("nothing to translate: give --text \"...\", --file F, or lines on standard input")
    lines = [ln.strip() for ln in lines]
    if args.text is not None and not all(lines):
        raise ValueError("--text must not be empty")
    lines = [ln for ln in lines if ln]
    if not lines:
        raise ValueError("nothing to translate: the input holds no non-empty line")
    return lines


def run(args) -> int:
    # Everything the user typed is checked before the model is loaded.
    if args.beam is not None and args.beam < 1:
        raise ValueError(f"--beam {args.beam} is not allowed; it must be an int >= 1 (1 = greedy)")
    if args.length_penalty is not None and not args.length_penalty >= 0:
        raise ValueError(f"--length-penalty {args.length_penalty} is not allowed; it must be >= 0")
    if args.max_len is not None and args.max_len < 1:
        raise ValueError(f"--max-len {args.max_len} is not allowed; it must be an int >= 1")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} is not allowed; it must be an int >= 1")
    if not Path(args.run_dir).exists():
        raise FileNotFoundError(f"{args.run_dir} does not exist (expected a translation run folder)")
    lines = _lines(args)

    from ..translation import load_translator, translate

    model, tok, cfg = load_translator(args.run_dir)
    d = cfg.decode
    out = translate(model, tok, lines, beam_size=args.beam or d.beam_size,
                    length_penalty=d.length_penalty if args.length_penalty is None else args.length_penalty,
                    max_len=args.max_len or d.max_len, batch_size=args.batch_size)
    for line in out:
        print(line, flush=True)
    return 0
