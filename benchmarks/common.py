"""Small helpers every benchmark script shares: timing, live-memory, machine facts, results files.

- :func:`alternating_medians` times several contenders in turns (A B C A B C ...) and returns
  each one's median, so a burst of load from another process hits all sides alike.
- :class:`LiveTensorBytes` counts the bytes of tensor storages alive while it is active and keeps
  the peak. Process RSS is not a measure of what an algorithm needs: glibc keeps freed blocks
  mapped, so a blocked implementation's RSS can read gigabytes while its live tensors never
  exceed a few hundred MiB (see /work/shared/MEASURED.md).
- :func:`machine_info` / :func:`machine_tag` describe where a number was taken;
  :func:`write_results` writes ``benchmarks/results/<what>_<machine>_<YYYY-MM-DD>.md``.
- :func:`summary_row` / :func:`write_summary` write the small JSON summary a script hands to the
  runner (``--summary-json PATH``); :func:`summary_table` turns those into the one table of ratios
  ``python -m benchmarks`` prints.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------------------------- timing
def alternating_medians(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                        min_sample_s: float = 0.0) -> dict[str, float]:
    """Median wall time in seconds of one call of each callable, run in alternation after
    ``warmup`` rounds. With ``min_sample_s`` > 0 each timed sample repeats a call enough times to
    last about that long (the count set from the last warm-up call): a call of a few milliseconds
    timed once is at the mercy of one page fault or one wake-up of another process."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats!r}")
    if min_sample_s < 0:
        raise ValueError(f"min_sample_s must be >= 0; got {min_sample_s!r}")
    calls = {name: 1 for name in fns}
    for _ in range(max(warmup, 1 if min_sample_s > 0 else 0)):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if min_sample_s > 0:
                calls[name] = max(1, math.ceil(min_sample_s / max(time.perf_counter() - t0, 1e-9)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            times[name].append((time.perf_counter() - t0) / calls[name])
    return {name: statistics.median(ts) for name, ts in times.items()}


# ---------------------------------------------------------------------------------------- memory
class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storages created while active (tensors that existed before are not counted).

    Every op's outputs are looked at; each new storage is counted once (views share it) and a
    finaliser subtracts it when the storage is freed. torch keeps one Python object per live
    storage, so the finaliser runs when the memory is really released, even when only autograd's
    saved tensors still hold it.

        with LiveTensorBytes() as mem:
            loss = f(x); loss.backward()
        mem.peak  # bytes
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def _track(self, t: torch.Tensor, arg_storages: set[int]) -> None:
        st = t.untyped_storage()
        key = id(st)
        if key in self._live or key in arg_storages:  # already counted, or written in place
            return
        n = st.nbytes()
        self._live[key] = n
        self.current += n
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        arg_storages = {
            id(a.untyped_storage()) for a in tree_flatten((args, kwargs))[0]
            if isinstance(a, torch.Tensor) and a.device.type != "meta"
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self._track(t, arg_storages)
        return out


def peak_live_bytes(fn: Callable[[], object]) -> int:
    """Peak live tensor bytes while ``fn()`` runs (its result is dropped inside the measurement)."""
    with LiveTensorBytes() as mem:
        fn()
    return mem.peak


# ---------------------------------------------------------------------------------- the machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    return {
        "cpu": _cpu_model(),
        "logical cpus": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.date.today().isoformat(),
    }


def machine_tag() -> str:
    """A short file-name-safe name for this machine: CPU family and thread count, e.g. ``amd-epyc-2t``."""
    words = re.findall(r"[a-z0-9]+", _cpu_model().lower())
    keep = [w for w in words if w not in {"processor", "cpu", "with", "radeon", "graphics", "core", "tm", "r"}][:3]
    return "-".join(keep + [f"{torch.get_num_threads()}t"])


# --------------------------------------------------------------------------------- results files
def fmt_ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.2f}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_results(what: str, body: str, *, title: str, notes: list[str] = (), out_dir: Path | None = None,
                  machine: str | None = None) -> Path:
    """Write ``<out_dir>/<what>_<machine>_<date>.md`` with the machine facts above ``body``
    (``machine`` defaults to :func:`machine_tag`; the GPU script names the GPU instead)."""
    info = machine_info()
    out_dir = RESULTS_DIR if out_dir is None else Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{what}_{machine or machine_tag()}_{info['date']}.md"
    head = [f"# {title}", ""] + [f"- {k}: {v}" for k, v in info.items()] + [f"- {n}" for n in notes] + [""]
    path.write_text("\n".join(head) + "\n" + body.rstrip() + "\n")  # a blank line: the table renders
    return path


# ------------------------------------------------------------------------------ summaries (JSON)
# One summary per script: {"benchmark": str, "rows": [row, ...], "skipped": reason or None,
# "results": path of the markdown table}. A row compares our best contender with the best peer
# (or a goal with no peer, e.g. an absolute speed or a fraction of the machine's peak):
#   {"case", "metric", "ours", "peer", "value", "unit", "goal"}
# "value" is ours/peer for unit "x" (above 1 = we are faster), else the measured number itself;
# the goal is met when value >= goal.
SUMMARY_UNITS = ("x", "tok/s", "% of peak")


def summary_row(case: str, metric: str, ours: str, peer: str, value: float, unit: str = "x",
                goal: float | None = None) -> dict[str, Any]:
    if unit not in SUMMARY_UNITS:
        raise ValueError(f"unit must be one of {SUMMARY_UNITS}; got {unit!r}")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise ValueError(f"value must be a number; got {value!r}")
    return {"case": case, "metric": metric, "ours": ours, "peer": peer, "value": float(value), "unit": unit,
            "goal": None if goal is None else float(goal)}


def write_summary(path: Path | str | None, benchmark: str, rows: list[dict[str, Any]], *,
                  results: Path | str | None = None, skipped: str | None = None) -> None:
    """Write the runner's JSON summary to ``path`` (nothing when ``path`` is None)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": benchmark, "rows": rows, "skipped": skipped,
                                "results": None if results is None else str(results)}, indent=1) + "\n")


def _fmt_value(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "% of peak":
        return f"{value:.0f}% of peak"
    return f"{value:.1f} {unit}"


def goal_met(row: dict[str, Any]) -> bool | None:
    return None if row.get("goal") is None else row["value"] >= row["goal"]


def summary_table(summaries: list[dict[str, Any]]) -> str:
    """One markdown table from the scripts' summaries: benchmark, case, contender (ours vs best
    peer), metric, ratio or value, goal, met?. A skipped or failed script gets one row saying so."""
    header = ["benchmark", "case", "contender (ours vs best peer)", "metric", "ours vs peer", "goal", "met?"]
    rows: list[list[str]] = []
    for s in summaries:
        name = s.get("benchmark", "?")
        if s.get("skipped"):
            rows.append([name, "—", "—", "—", "—", "—", f"skipped: {s['skipped']}"])
            continue
        if not s.get("rows"):
            rows.append([name, "—", "—", "—", "—", "—", "no result"])
            continue
        for r in s["rows"]:
            met = goal_met(r)
            goal = "—" if r.get("goal") is None else "≥ " + _fmt_value(r["goal"], r["unit"])
            rows.append([name, r["case"], f"{r['ours']} vs {r['peer']}", r["metric"], _fmt_value(r["value"], r["unit"]),
                         goal, "—" if met is None else ("yes" if met else "**no**")])
    return markdown_table(header, [[c.replace("|", "\\|") for c in r] for r in rows])  # a "|" would split a cell
