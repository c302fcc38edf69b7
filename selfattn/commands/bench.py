"""`selfattn bench [--quick] [--only NAME ...] [--out-dir DIR]`: run the benchmarks of a checkout.

The benchmark scripts live in the repository's ``benchmarks/`` folder, not in the installed
package, so this command looks for that folder in the current directory and beside the
``selfattn`` package it runs from, then hands over to ``python -m benchmarks`` (same options,
same table). Without a checkout it says so in one line and exits 2.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("bench", help="run every benchmark against its peer and print one table of ratios",
                       description="Run benchmarks/ of a selfattn checkout (python -m benchmarks): each benchmark "
                                   "against its peer in the same run, then one summary table of ratios.")
    p.add_argument("--quick", action="store_true", help="about a minute in all; checks that everything runs")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="run only these benchmarks (attention, train_gpt, generate, generate_smollm2)")
    p.add_argument("--out-dir", default=None, help="where results go (default benchmarks/results, "
                                                   "or runs/bench-quick with --quick)")
    p.set_defaults(func=run)


def checkout_candidates() -> list[Path]:
    """Folders that may hold ``benchmarks/``: the current one, then the one above the package."""
    return [Path.cwd(), Path(__file__).resolve().parents[2]]


def find_benchmarks_root(candidates: list[Path]) -> Path | None:
    for folder in candidates:
        if (folder / "benchmarks" / "__main__.py").is_file() and (folder / "benchmarks" / "common.py").is_file():
            return folder
    return None


def run(args) -> int:
    root = find_benchmarks_root(checkout_candidates())
    if root is None:
        raise FileNotFoundError("no benchmarks/ folder found (looked in the current directory and beside the "
                                "selfattn package); run `selfattn bench` from a selfattn checkout")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        runner = importlib.import_module("benchmarks.__main__")
    except ImportError as e:
        raise FileNotFoundError(f"benchmarks/ in {root} is not importable ({e})") from None
    if args.only:
        unknown = [n for n in args.only if n not in runner.SCRIPTS]
        if unknown:
            raise ValueError(f"--only {' '.join(unknown)} is not a benchmark; choose from {', '.join(runner.SCRIPTS)}")
    argv = (["--quick"] if args.quick else []) + (["--only", *args.only] if args.only else []) + \
        (["--out-dir", args.out_dir] if args.out_dir else [])
    return runner.run(argv)
