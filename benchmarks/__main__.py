"""`python -m benchmarks [--quick]`: run every benchmark script, each against its peer in the same run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = ("attention.py", "train_gpt.py", "generate.py", "generate_smollm2.py")


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    status = 0
    for script in SCRIPTS:
        print(f"== {script} {' '.join(argv)}", flush=True)
        status |= subprocess.call([sys.executable, str(here / script), *argv])
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
