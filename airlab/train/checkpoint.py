"""Checkpoints committed by rename, verified by a manifest of SHA-256s.

Layout: checkpoints/step-N/ holding the backend's files, `trainer.json` (counters, RNG of
python/numpy, loop state) and `manifest.json` (SHA-256 and size of every other file), written
last. A save goes to a temporary directory inside checkpoints/ and is renamed to step-N, so a
killed save leaves the previous checkpoint intact and an incomplete one is never seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Callable

from airlab.errors import CheckpointError

MANIFEST = "manifest.json"
TRAINER = "trainer.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(root: Path, step: int, write: Callable[[Path], list[str]], trainer_state: dict,
         on_file: Callable[[int], None] | None = None) -> Path:
    """Write a checkpoint for `step` through `write(tmpdir) -> files` and commit it by rename.

    Order: files -> fsync each -> manifest (SHA-256 and size of each) -> fsync -> rename the
    directory -> fsync the parent. `on_file(n)` runs after the n-th file is on disk (a test seam).
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        files = list(write(tmp))
        (tmp / TRAINER).write_text(json.dumps(trainer_state, indent=1, sort_keys=True))
        files.append(TRAINER)
        manifest = {"step": step, "files": {}}
        for n, name in enumerate(files, start=1):
            p = tmp / name
            _fsync(p)
            if on_file is not None:
                on_file(n)
            manifest["files"][name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        _fsync(tmp / MANIFEST)
        _fsync(tmp)
        if final.exists():  # a stale directory from a run that died after this step: replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def manifest_problem(manifest, directory: Path) -> str | None:
    """What is wrong with a manifest read as data, or None: a mapping with the step of its
    directory and `files`, a non-empty mapping of plain file names to their SHA-256 and size,
    which lists trainer.json."""
    if not isinstance(manifest, dict):
        return f"manifest is a {type(manifest).__name__}, not a mapping"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "manifest lists no files"
    m = _STEP_DIR.match(directory.name)
    step = manifest.get("step")
    if m and (type(step) is not int or step != int(m.group(1))):
        return f"manifest says step {step!r} in directory {directory.name}"
    for name, meta in files.items():
        if not _SAFE_NAME.match(name) or name == MANIFEST:
            return f"manifest names a file {name!r} that cannot be a checkpoint file"
        if (not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str)
                or not _SHA256.match(meta["sha256"]) or type(meta.get("bytes")) is not int or meta["bytes"] < 0):
            return f"manifest entry for {name} is not {{sha256: 64 hex digits, bytes: a size}}"
    if TRAINER not in files:
        return f"manifest does not list {TRAINER}"
    return None


def verify(directory: Path) -> str | None:
    """None if the checkpoint is complete and intact, else what is wrong with it."""
    try:
        manifest = json.loads((directory / MANIFEST).read_bytes())
    except FileNotFoundError:
        return "no manifest (incomplete save)"
    except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON
        return f"unreadable manifest: {e}"
    problem = manifest_problem(manifest, directory)
    if problem is not None:
        return problem
    for name, meta in manifest["files"].items():
        p = directory / name
        if not p.is_file():
            return f"missing file {name}"
        if p.stat().st_size != meta["bytes"]:
            return f"{name}: size {p.stat().st_size} bytes, manifest says {meta['bytes']}"
        if sha256_file(p) != meta["sha256"]:
            return f"{name}: SHA-256 does not match the manifest"
    return None


def list_steps(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def newest_complete(root: Path) -> Path | None:
    """The newest checkpoint that verifies; broken ones are skipped with a warning."""
    for step, path in reversed(list_steps(root)):
        problem = verify(path)
        if problem is None:
            return path
        warnings.warn(f"skipping checkpoint {path}: {problem}", stacklevel=2)
    return None


def read_trainer_state(directory: Path) -> dict:
    """trainer.json as data: a mapping whose counters have their types (a tampered file whose
    manifest was rewritten to match is refused here, naming the file, never half-restored)."""
    path = directory / TRAINER
    try:
        state = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the trainer state: {e}",
                              hint="the checkpoint is damaged: remove it to resume from the one before") from None
    problem = _trainer_state_problem(state)
    if problem:
        raise CheckpointError(f"{path}: {problem}",
                              hint="the checkpoint is damaged: remove it to resume from the one before") from None
    return state


def _is_int(v) -> bool:
    return type(v) is int


def _is_number(v) -> bool:
    import math

    return type(v) in (int, float) and math.isfinite(v)


_COUNTERS = {"step": _is_int, "samples_seen": _is_int, "skipped_steps": _is_int, "evals_since_best": _is_int,
             "grad_accum": _is_int, "train_time": _is_number}
_OPTIONAL = {"best": _is_number, "es_best": _is_number, "best_step": _is_int}


def _trainer_state_problem(state) -> str | None:
    if not isinstance(state, dict):
        return "not a mapping"
    for key, ok in _COUNTERS.items():
        if key in state and (not ok(state[key]) or state[key] < 0):
            return f"{key}: expected a non-negative number, found {state[key]!r:.60}"
    if "step" not in state:
        return "no step counter"
    if state.get("grad_accum", 1) < 1:
        return "grad_accum: must be at least 1"
    for key, ok in _OPTIONAL.items():
        if state.get(key) is not None and not ok(state[key]):
            return f"{key}: expected a number or null, found {state[key]!r:.60}"
    if not isinstance(state.get("stopped_early", False), bool):
        return "stopped_early: expected true or false"
    tried = state.get("micro_batches_tried", [])
    if not isinstance(tried, list) or not all(_is_int(b) and b >= 1 for b in tried):
        return "micro_batches_tried: expected a list of sizes"
    rng = state.get("rng")
    if rng is not None:
        py, npst = (rng.get("python"), rng.get("numpy")) if isinstance(rng, dict) else (None, None)
        if not (isinstance(py, list) and len(py) == 3 and isinstance(py[1], list) and len(py[1]) == 625
                and all(_is_int(v) and 0 <= v < 2**32 for v in py[1])):
            return "rng.python: not a Python random state"
        if not (isinstance(npst, list) and len(npst) == 5 and npst[0] == "MT19937" and isinstance(npst[1], list)
                and len(npst[1]) == 624 and all(_is_int(v) and 0 <= v < 2**32 for v in npst[1])
                and _is_int(npst[2]) and 0 <= npst[2] <= 624 and _is_int(npst[3]) and _is_number(npst[4])):
            return "rng.numpy: not a numpy random state"
    metrics = state.get("train_metrics")
    if metrics is not None and not isinstance(metrics, dict):
        return "train_metrics: expected a mapping"
    return None


def prune(root: Path, keep: int, protect: set[Path] = frozenset()) -> None:
    """Keep the newest `keep` checkpoints (and any in `protect`); remove stale temporaries."""
    steps = list_steps(root)
    for _, path in steps[:-keep] if keep else steps:
        if path not in protect:
            shutil.rmtree(path, ignore_errors=True)
    for p in root.glob(".tmp-step-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid():
            shutil.rmtree(p, ignore_errors=True)
