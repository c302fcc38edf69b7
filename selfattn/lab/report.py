"""Tables for the terminal, one JSON file per experiment, and REPORT.md collecting them all."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from .common import Finding, Settings


def verdict(agrees: bool | None) -> str:
    return {True: "agrees with the seed", False: "does not agree with the seed", None: "inconclusive"}[agrees]


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def print_finding(f: Finding) -> None:
    print(f"\n== {f.name}: {f.title} ({f.seconds:.0f} s)")
    print(text_table(f.headers, f.rows))
    print(f"-> {f.sentence}")
    print(f"-> claim ({f.claim}): {verdict(f.agrees)}; figure: {f.png}", flush=True)


def write_json(f: Finding, out: Path, settings: Settings) -> Path:
    path = Path(out) / f"{f.name}.json"
    record = {"name": f.name, "title": f.title, "claim": f.claim, "sentence": f.sentence, "agrees": f.agrees,
              "seconds": round(f.seconds, 2), "size": settings.size, "seeds": settings.seeds,
              "threads": f.threads or torch.get_num_threads(), "headers": f.headers, "rows": f.rows, "data": f.data}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def read_findings(out: Path, names: list[str]) -> tuple[list[Finding], Settings]:
    """The findings written by earlier `selfattn lab NAME` runs into ``out`` (one JSON each), for
    a report assembled from experiments run separately (e.g. two at a time on two cores). All
    must be of one size and seed count; a missing one is an error naming it."""
    out = Path(out)
    missing = [n for n in names if not (out / f"{n}.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{out} has no results for {', '.join(missing)}; run `selfattn lab NAME "
                                f"--out {out}` for each first")
    records = [json.loads((out / f"{n}.json").read_text()) for n in names]
    kinds = {(r.get("size"), r.get("seeds")) for r in records}
    if len(kinds) != 1:
        raise ValueError(f"the results in {out} mix sizes/seed counts {sorted(kinds, key=str)}; rerun them alike")
    size, seeds = kinds.pop()
    findings = [Finding(r["name"], r["title"], r["claim"], r["headers"], r["rows"], out / f"{r['name']}.png",
                        r["sentence"], r["agrees"], seconds=float(r["seconds"]), data=r["data"],
                        threads=r.get("threads")) for r in records]
    return findings, Settings(size=size, seeds=seeds)


def write_report(findings: list[Finding], settings: Settings, out: Path, command: str) -> Path:
    out = Path(out)
    total = sum(f.seconds for f in findings)
    lines = [
        "# The claims lab: what the seed says about self-attention, measured",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d')} ({settings.size} size, {settings.seeds} "
        f"seed(s) per measurement, {total / 60:.1f} minutes of compute in all) on "
        f"{' '.join(filter(None, (platform.machine(), platform.processor())))}, torch {torch.__version__}; "
        f"CPU threads per experiment: {', '.join(f'{f.name} {f.threads or torch.get_num_threads()}' for f in findings)}. "
        "Each cell is the mean ± standard deviation over seeds. Each verdict is computed from the "
        "numbers in its table by the experiment's own rule (see `selfattn/lab/<experiment>.py`).",
        "",
        "| experiment | the seed's claim | verdict |",
        "|---|---|---|",
        *[f"| [{f.name}](#{f.name}) | {f.claim} | {verdict(f.agrees)} |" for f in findings],
        "",
    ]
    for f in findings:
        lines += [
            f'<a id="{f.name}"></a>',
            f"## {f.name}: {f.title}",
            "",
            f"**Claim:** {f.claim}. **Verdict:** {verdict(f.agrees)}.",
            "",
            f.sentence,
            "",
            markdown_table(f.headers, f.rows),
            "",
            f"![{f.name}]({f.png.name})",
            "",
            f"({f.seconds:.0f} s; raw numbers in `{f.name}.json`.)",
            "",
        ]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    return path
