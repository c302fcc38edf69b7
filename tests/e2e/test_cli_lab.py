"""`selfattn lab` through the real CLI: every experiment in a shrunken form (the hidden --tiny),
then the report; bad input -> one line and exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from selfattn.lab import EXPERIMENTS


def cli(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-m", "selfattn", "lab", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def tiny_lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    r = cli("all", "--tiny", "--seeds", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_writes_its_table_figure_and_verdict(tiny_lab, name):
    out, stdout = tiny_lab
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rec = json.loads((out / f"{name}.json").read_text())
    assert rec["rows"] and all(len(row) == len(rec["headers"]) for row in rec["rows"])
    assert rec["agrees"] in (True, False, None) and rec["sentence"].endswith(".")
    # the table is printed: its header line and every row's first cell
    block = stdout.split(f"== {name}:")[1].split("\n== ")[0]
    assert block.splitlines()[1].startswith(rec["headers"][0])
    for row in rec["rows"]:
        assert row[0] in block
    assert "claim (" in block
    # two seeds: every measured cell shows a spread
    assert any("±" in cell for row in rec["rows"] for cell in row)


def test_the_report_collects_every_experiment(tiny_lab):
    out, _ = tiny_lab
    report = (out / "REPORT.md").read_text()
    for name in EXPERIMENTS:
        assert f"![{name}]({name}.png)" in report and f"## {name}:" in report
    assert report.count("| ") > 7 * 3


def test_report_assembled_from_separate_runs(tiny_lab, tmp_path):
    """Experiments run one by one (e.g. two processes on two cores) and `lab report` give the
    same report body as `lab all`; a missing experiment is named."""
    out, _ = tiny_lab
    (out / "REPORT.md").rename(tmp_path / "from_all.md")
    r = cli("report", "--tiny", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    body = lambda text: text.split("\n", 3)[3]  # noqa: E731 - past the title and the "Written by" line
    assert body((out / "REPORT.md").read_text()) == body((tmp_path / "from_all.md").read_text())
    r = cli("report", "--tiny", "--out", str(tmp_path / "empty"))
    assert r.returncode == 2 and "has no results for long-range" in r.stderr


def test_one_experiment_alone_is_repeatable(tmp_path):
    a = cli("order", "--tiny", "--out", str(tmp_path / "a"))
    b = cli("order", "--tiny", "--out", str(tmp_path / "b"))
    assert a.returncode == b.returncode == 0, a.stderr[-2000:]
    ra, rb = (json.loads((tmp_path / x / "order.json").read_text()) for x in "ab")
    assert ra["data"]["accuracy"] == rb["data"]["accuracy"]
    assert not (tmp_path / "a" / "REPORT.md").exists()


@pytest.mark.parametrize("args,message", [
    (["nonsense"], "unknown experiment 'nonsense'"),
    (["order", "--seeds", "0"], "--seeds 0"),
    (["order", "--seeds", "two"], "invalid int value"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    r = cli(*args, "--tiny")
    assert r.returncode == 2 and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
