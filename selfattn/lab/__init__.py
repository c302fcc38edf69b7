"""The claims lab: one experiment per claim the seed makes about self-attention, each measured
against an LSTM and a dilated causal CNN (or against attention without the feature in question).

    from selfattn.lab import EXPERIMENTS, run_experiment, Settings
    finding = run_experiment("order", Settings(size="quick", seeds=2), out=Path("runs/lab"))

Every experiment module defines ``NAME``, ``TITLE``, ``CLAIM`` and ``run(settings, out) -> Finding``;
``report.write_report`` collects findings into REPORT.md. CLI: ``selfattn lab NAME|all``.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from .common import Finding, Settings

# in the order of the seed's argument
_MODULES = {"long-range": "long_range", "parallel": "parallel", "gradient-path": "gradient_path",
            "order": "order", "scaling": "scaling", "length": "length", "heads": "heads"}
EXPERIMENTS = tuple(_MODULES)

__all__ = ["EXPERIMENTS", "Finding", "Settings", "get_experiment", "run_experiment"]


def get_experiment(name: str):
    if name not in _MODULES:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)} or all")
    return importlib.import_module(f".{_MODULES[name]}", __package__)


def run_experiment(name: str, settings: Settings, out: Path) -> Finding:
    module = get_experiment(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    finding = module.run(settings, out)
    finding.seconds = time.perf_counter() - t0
    return finding
