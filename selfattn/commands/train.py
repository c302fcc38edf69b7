"""`selfattn train RECIPE [key=value ...]` and `selfattn train --resume RUN_DIR`."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("train", help="train a recipe (see `selfattn recipes`)",
                       description="Train a recipe. Overrides like model.n_layer=4 train.max_steps=200 are "
                                   "checked against the recipe's config fields and types.")
    p.add_argument("recipe", nargs="?", help="recipe name, e.g. shakespeare-char")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. model.n_layer=4 train.max_steps=200 train.lr=1e-3")
    p.add_argument("--run-dir", help="run folder (default: runs/<recipe>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.set_defaults(func=run)


def _check_before_work(cfg) -> None:
    """Everything that can be checked cheaply, before a model is built or data is encoded: a recipe's
    data config may define ``check_available()`` (e.g. a missing data package, with how to install)."""
    check = getattr(getattr(cfg, "data", None), "check_available", None)
    if callable(check):
        check()


def _check_resumable(run_dir: Path, cfg) -> None:
    """A resume needs a complete, undamaged newest checkpoint written with the same kind of
    optimizer state (sharded FSDP or not): say so in one line, before any work."""
    from ..checkpoint import MANIFEST, CheckpointError, complete_checkpoints, verify

    ckpts = run_dir / "checkpoints"
    done = complete_checkpoints(ckpts)
    if not done:
        raise FileNotFoundError(f"--resume {run_dir}: no complete checkpoint (no checkpoints/step-*/manifest.json) "
                                "to resume from")
    try:
        verify(done[-1], done[-2] if len(done) > 1 else None)
    except CheckpointError as e:
        raise ValueError(f"--resume {run_dir}: {e}") from None
    saved = json.loads((done[-1] / MANIFEST).read_text())["meta"].get("optimizer_format", "torch")
    fsdp_now = int(os.environ.get("WORLD_SIZE", 1)) > 1 and cfg.train.parallel == "fsdp"
    if saved != ("fsdp-full" if fsdp_now else "torch"):
        was = "under torchrun with train.parallel=fsdp" if saved == "fsdp-full" else "without FSDP"
        raise ValueError(f"--resume {run_dir}: {done[-1].name} was written {was}; resume it the same way")


def run(args) -> int:
    from ..config import apply_overrides, from_dict, to_dict
    from ..recipes import get_recipe

    if args.resume:
        run_dir = Path(args.resume)
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"--resume {run_dir}: not a run folder (no config.json)")
        if args.overrides or (args.recipe and "=" in args.recipe):
            raise ValueError("--resume continues a run exactly as it was started; overrides are not allowed")
        saved = json.loads(cfg_path.read_text())
        recipe = get_recipe(saved["recipe"])
        cfg = from_dict(type(recipe.default_config()), saved)
        _check_resumable(run_dir, cfg)
        _check_before_work(cfg)
        print(f"resuming {run_dir}", file=sys.stderr)
        recipe.run(cfg, run_dir, resume=True)
        return 0
    if not args.recipe:
        raise ValueError("train needs a recipe name (see `selfattn recipes`) or --resume RUN_DIR")
    recipe = get_recipe(args.recipe)
    cfg = apply_overrides(recipe.default_config(), args.overrides)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    _check_before_work(cfg)
    run_dir = Path(args.run_dir or f"runs/{recipe.NAME}-{time.strftime('%Y%m%d-%H%M%S')}")
    # Under torchrun only rank 0 checks: the other ranks start later and may already see the
    # step-0 checkpoint that rank 0 just wrote into this very run. Only complete checkpoints
    # count: a run killed while writing its step-0 checkpoint has nothing to resume, so it may
    # simply be started again in the same folder (the temporary folder is cleaned up then).
    from ..checkpoint import complete_checkpoints

    if int(os.environ.get("RANK", 0)) == 0 and complete_checkpoints(run_dir / "checkpoints"):
        raise ValueError(f"--run-dir {run_dir} already holds a run; use --resume {run_dir} or another folder")
    print(f"run folder: {run_dir}", file=sys.stderr)
    recipe.run(cfg, run_dir)
    return 0
