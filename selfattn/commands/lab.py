"""`selfattn lab NAME|all [--quick] [--out DIR] [--seeds N]`: the claims lab (see selfattn/lab)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Shrinks every experiment to seconds (the smoke test): a hidden flag or this variable.
TINY_ENV = "SELFATTN_LAB_TINY"


def register(sub) -> None:
    from ..lab import EXPERIMENTS

    p = sub.add_parser("lab", help="measure the seed's claims about attention (tables, PNGs, a report)",
                       description="Run one experiment of the claims lab, or all of them and write REPORT.md. "
                                   f"Experiments: {', '.join(EXPERIMENTS)}.")
    p.add_argument("name", help=f"experiment: {', '.join(EXPERIMENTS)}; all (every one, then the report); "
                                "or report (REPORT.md from the results already in --out)")
    p.add_argument("--quick", action="store_true", help="a minutes-long version of every experiment")
    p.add_argument("--out", default=None, help="folder for tables, PNGs and REPORT.md "
                                               "(default: lab/, or runs/lab-quick with --quick)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per measurement (default 3; 2 with --quick)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..lab import EXPERIMENTS, Settings, run_experiment
    from ..lab.report import print_finding, read_findings, write_json, write_report

    if args.name not in ("all", "report") and args.name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {args.name!r}; choose one of {', '.join(EXPERIMENTS)}, all or report")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds} is not allowed; give an int >= 1")
    tiny = args.tiny or os.environ.get(TINY_ENV, "") not in ("", "0")
    size = "tiny" if tiny else "quick" if args.quick else "full"
    seeds = args.seeds if args.seeds is not None else {"full": 3, "quick": 2, "tiny": 1}[size]
    settings = Settings(size=size, seeds=seeds)
    out = Path(args.out or ("lab" if size == "full" else f"runs/lab-{size}"))
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    if args.name == "report":  # assemble REPORT.md from experiments run one by one into --out
        findings, settings = read_findings(out, list(EXPERIMENTS))
        command = f"selfattn lab NAME{' --quick' if settings.size == 'quick' else ''} --out {out}` for each " \
                  f"experiment, then `selfattn lab report --out {out}"
        print(f"report: {write_report(findings, settings, out, command)}")
        return 0
    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    print(f"claims lab: {', '.join(names)} ({size}, {seeds} seed(s)) -> {out}", file=sys.stderr)
    findings = []
    for name in names:
        f = run_experiment(name, settings, out)
        print_finding(f)
        write_json(f, out, settings)
        findings.append(f)
    if args.name == "all":
        command = "selfattn lab all" + (" --quick" if size == "quick" else "") + \
                  (f" --seeds {seeds}" if args.seeds is not None else "")
        path = write_report(findings, settings, out, command)
        print(f"\nreport: {path}")
    return 0
