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


def verify(directory: Path) -> str | None:
    """None if the checkpoint is complete and intact, else what is wrong with it."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest (incomplete save)"
    except (OSError, ValueError) as e:
        return f"unreadable manifest: {e}"
    for name, meta in manifest.get("files", {}).items():
        p = directory / name
        if not p.is_file() or "/" in name or name.startswith("."):
            return f"missing file {name}"
        if p.stat().st_size != meta.get("bytes"):
            return f"{name}: size {p.stat().st_size} bytes, manifest says {meta.get('bytes')}"
        if sha256_file(p) != meta.get("sha256"):
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
    try:
        return json.loads((directory / TRAINER).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{directory}: cannot read {TRAINER}: {e}") from None


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
