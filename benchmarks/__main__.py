"""`python -m benchmarks [--quick] [--only NAME ...] [--out-dir DIR]`: every benchmark, one table of ratios.

Each script runs in its own process (a fresh torch, no compiled-kernel or allocator state carried
from one benchmark to the next), writes its markdown results and a small JSON summary, and this
runner reads the summaries back and prints one table: for every question, our best contender
against the best peer of the same run, the goal of issue 10 and whether it is met. The table is
also written as ``<out-dir>/summary_<machine>_<date>.md``.

With ``--only`` the other benchmarks are not run, but the table still has every benchmark: their
rows come from the summaries an earlier run left in the same folder, and a note names them, so
re-running one script never drops the others' results from the dated summary.

``--quick`` (about a minute on 2 cores) runs every script in its quick mode and writes to
``runs/bench-quick`` unless ``--out-dir`` is given: its numbers check that everything runs, they
are not the ones to report. Without it results go to ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):  # run as a file: make the checkout importable
    sys.path.insert(0, str(HERE.parent))

from benchmarks.common import RESULTS_DIR, summary_table, write_results  # noqa: E402

# name -> script; the name is what --only takes and what the summary file is called
SCRIPTS = {
    "attention": "attention.py",
    "train_gpt": "train_gpt.py",
    "generate": "generate.py",
    "generate_smollm2": "generate_smollm2.py",
    "decode_int8": "decode_int8.py",
}
QUICK_OUT = Path("runs") / "bench-quick"


def script_command(name: str, quick: bool, out_dir: Path, summary: Path, extra: list[str] = ()) -> list[str]:
    """The command line the runner gives one script: its quick flag, where to write, the summary path."""
    if name not in SCRIPTS:
        raise ValueError(f"benchmark {name!r} is unknown; choose from {', '.join(SCRIPTS)}")
    cmd = [sys.executable, str(HERE / SCRIPTS[name])]
    if quick:
        cmd.append("--quick")
    return cmd + ["--out-dir", str(out_dir), "--summary-json", str(summary), *extra]


def read_summary(name: str, path: Path, returncode: int) -> dict:
    """The script's summary, or one that says why there is none (a crash must show in the table)."""
    if returncode != 0:
        return {"benchmark": name, "rows": [], "skipped": f"failed with exit status {returncode} (see its output above)"}
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return {"benchmark": name, "rows": [], "skipped": f"wrote no readable summary ({type(e).__name__})"}
    summary.setdefault("benchmark", name)
    return summary


def earlier_summaries(names: list[str], out_dir: Path) -> dict[str, dict]:
    """{name: summary} of each benchmark in ``names`` that an earlier run left in ``out_dir``."""
    found = {}
    for name in names:
        path = out_dir / f"{name}.summary.json"
        if path.is_file():
            summary = read_summary(name, path, 0)
            if summary.get("rows"):  # an unreadable or empty one says nothing worth carrying over
                found[name] = summary
    return found


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="about a minute in all: every script's quick mode")
    p.add_argument("--only", nargs="+", choices=list(SCRIPTS), default=None, metavar="NAME",
                   help=f"run only these benchmarks ({', '.join(SCRIPTS)})")
    p.add_argument("--out-dir", type=Path, default=None,
                   help=f"where results go (default {RESULTS_DIR}, or {QUICK_OUT} with --quick)")
    return p


def run(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the summary table, write it; 1 if any script failed, else 0."""
    args = build_parser().parse_args(argv)
    out_dir = args.out_dir or (QUICK_OUT if args.quick else RESULTS_DIR)
    if out_dir.exists() and not out_dir.is_dir():
        print(f"python -m benchmarks: --out-dir {out_dir} exists and is not a folder", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    names = args.only or list(SCRIPTS)
    ran, failed = {}, False
    t_all = time.perf_counter()
    for name in names:
        summary_path = out_dir / f"{name}.summary.json"
        summary_path.unlink(missing_ok=True)  # never read a previous run's summary
        cmd = script_command(name, args.quick, out_dir, summary_path)
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"== {name}: {time.perf_counter() - t0:.0f} s, exit status {rc}", flush=True)
        failed |= rc != 0
        ran[name] = read_summary(name, summary_path, rc)
    earlier = earlier_summaries([n for n in SCRIPTS if n not in ran], out_dir)
    summaries = {**ran, **earlier}
    table = summary_table([summaries[n] for n in SCRIPTS if n in summaries])  # the scripts' order
    print("\n" + table)
    notes = [f"command: python -m benchmarks {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip(),
             f"all benchmarks took {time.perf_counter() - t_all:.0f} s",
             "ours vs peer: our best contender's speed / the best peer's in the same run (above 1 = faster); "
             "each script's own table has every contender"]
    for name, s in earlier.items():
        notes.append(f"{name}: not run by this command; its rows are an earlier run's ({Path(s.get('results') or name + '.summary.json').name})")
    if args.quick:
        notes.append("--quick: checks that everything runs; not numbers to report")
    path = write_results("summary", table, title="Benchmarks summary (issue 10)", notes=notes, out_dir=out_dir)
    print(f"wrote {path}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
