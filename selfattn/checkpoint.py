"""Checkpoints that survive a kill at any moment.

A checkpoint is a folder: ``model.safetensors`` (weights), ``config.json``, the tokenizer files,
``state.pt`` (optimizer, step, RNG states, data position: plain tensors and numbers, loaded with
``torch.load(weights_only=True)``), and ``manifest.json`` listing every file's size and SHA-256.

Writing: everything goes into ``<name>.tmp-<pid>/`` beside the final folder; each file is flushed
and fsync'ed, the manifest is written last, the folder is fsync'ed and renamed into place, and the
parent folder is fsync'ed. A kill before the rename leaves only a temporary folder, which the next
start removes; a kill after it leaves a complete checkpoint. Loading checks the manifest first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
STATE = "state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that is incomplete or damaged; the message names the file and a fallback."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        f.flush()
        os.fsync(f.fileno())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_dict_for_save(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights with tied tensors stored once (safetensors refuses shared storage)."""
    out, seen = {}, {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape, t.stride()) if t.numel() else None
        if key is not None and key in seen:
            continue  # tied: restored by the model's own tying on load
        if key is not None:
            seen[key] = name
        out[name] = t.detach().contiguous().cpu()
    return out


def weights_are_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def pause_for_tests(where: str, step: int) -> None:
    """A hook for the kill-and-resume tests, inert unless ``SELFATTN_TEST_PAUSE`` is set.

    ``SELFATTN_TEST_PAUSE="accum:7,save:9"`` (``where`` alone = every step) with
    ``SELFATTN_TEST_PAUSE_LOG=/some/file``: at that point the process appends ``"<where> <step>"``
    to the log and sleeps ``SELFATTN_TEST_PAUSE_SECONDS`` (default 0.5), so a test can SIGKILL it
    exactly there: between two micro-steps of gradient accumulation ("accum", step = the 0-based
    step being computed) or inside a checkpoint save, files written but no manifest yet ("save").
    Costs one environment lookup when unset.
    """
    wanted = os.environ.get("SELFATTN_TEST_PAUSE")
    if not wanted or not {where, f"{where}:{step}"} & set(wanted.split(",")):
        return
    with open(os.environ["SELFATTN_TEST_PAUSE_LOG"], "a") as f:
        f.write(f"{where} {step}\n")
    time.sleep(float(os.environ.get("SELFATTN_TEST_PAUSE_SECONDS", "0.5")))


def write_checkpoint(final: Path, model: torch.nn.Module, *, state: dict | None = None,
                     extra_files: Callable[[Path], None] | None = None, meta: dict | None = None,
                     tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a complete checkpoint folder at ``final`` atomically (replacing an older one).
    ``tensors``: the weights when they are not the model's own state (e.g. gathered from shards)."""
    final = Path(final)
    if tensors is None:
        tensors = state_dict_for_save(model)
    bad = weights_are_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"refusing to write {final}: weight {bad!r} is not finite")
    tmp = final.parent / f"{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
    if state is not None:
        torch.save(state, tmp / STATE)
    if extra_files is not None:
        extra_files(tmp)
    # the kill tests stop here: files written, manifest not yet
    pause_for_tests("save", int((meta or {}).get("step", -1)))
    files = {}
    for p in sorted(tmp.rglob("*")):
        if p.is_file():
            _fsync_file(p)
            files[str(p.relative_to(tmp))] = {"bytes": p.stat().st_size, "sha256": sha256(p)}
    manifest = {"files": files, "meta": meta or {}}
    with open(tmp / MANIFEST, "w") as f:  # written last: its presence marks the folder complete
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    old = None
    if final.exists():
        old = final.parent / f"{final.name}.old-{os.getpid()}"
        final.rename(old)
    tmp.rename(final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify(folder: Path, fallback: Path | None = None) -> dict:
    """Check a checkpoint against its manifest; returns the manifest or raises CheckpointError."""
    folder = Path(folder)
    hint = f"; the newest complete checkpoint is {fallback}" if fallback else ""
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a checkpoint folder{hint}")
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"{mpath} is missing: the checkpoint was not completed{hint}")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{mpath} is unreadable ({e}){hint}") from None
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {MANIFEST}
    for name in sorted(set(files) - present):
        raise CheckpointError(f"{folder / name} is missing{hint}")
    for name in sorted(present - set(files)):
        raise CheckpointError(f"{folder / name} is not in the manifest (an extra file){hint}")
    for name, info in sorted(files.items()):
        p = folder / name
        size = p.stat().st_size
        if size != info["bytes"]:
            what = "empty" if size == 0 else "truncated" if size < info["bytes"] else "longer than recorded"
            raise CheckpointError(f"{p} is {what}: {size} bytes, the manifest says {info['bytes']}{hint}")
        if sha256(p) != info["sha256"]:
            raise CheckpointError(f"{p} is corrupted: its SHA-256 does not match the manifest{hint}")
    return manifest


def load_weights(folder: Path, model: torch.nn.Module, fallback: Path | None = None) -> None:
    verify(folder, fallback)
    tensors = load_file(str(Path(folder) / WEIGHTS))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {n for n in missing if _is_tied(model, n)}
    missing = [n for n in missing if n not in tied]
    if missing or unexpected:
        raise CheckpointError(f"{folder / WEIGHTS} does not fit the model: missing {sorted(missing)}, "
                              f"unexpected {sorted(unexpected)}")


def _is_tied(model: torch.nn.Module, name: str) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    unique = dict(model.named_parameters())
    return name in params and name not in unique


def load_state(folder: Path) -> dict:
    return torch.load(Path(folder) / STATE, map_location="cpu", weights_only=True)


def clean_temporaries(parent: Path) -> list[Path]:
    """Remove ``*.tmp-*`` / ``*.old-*`` folders left by a killed save; returns what was removed."""
    removed = []
    parent = Path(parent)
    if parent.is_dir():
        for p in sorted(parent.iterdir()):
            if p.is_dir() and ".old-" in p.name:
                # A kill between "final -> old" and "tmp -> final" (replacing e.g. best/) leaves no
                # final folder: the old one is still complete, so put it back rather than lose it.
                final = p.parent / p.name.split(".old-")[0]
                if not final.exists() and (p / MANIFEST).is_file():
                    p.rename(final)
                    continue
            if p.is_dir() and (".tmp-" in p.name or ".old-" in p.name):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def complete_checkpoints(parent: Path) -> list[Path]:
    """Step checkpoints under ``parent`` that have a manifest, oldest first."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    steps = [p for p in parent.iterdir() if p.is_dir() and p.name.startswith("step-")
             and ".tmp-" not in p.name and ".old-" not in p.name and (p / MANIFEST).is_file()]
    return sorted(steps, key=lambda p: int(p.name.split("-")[1]))
