"""Checkpoints: committed by rename, verified by manifest, pruned, resumable after damage."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

from airlab.errors import CheckpointError
from airlab.train import checkpoint as ckpt


def writer(payload: bytes = b"weights", extra: dict | None = None):
    def write(d: Path) -> list[str]:
        (d / "model.bin").write_bytes(payload)
        files = ["model.bin"]
        for name, data in (extra or {}).items():
            (d / name).write_bytes(data)
            files.append(name)
        return files
    return write


def save(root: Path, step: int, payload: bytes = b"weights") -> Path:
    return ckpt.save(root, step, writer(payload, {"opt.bin": b"o" * 100}), {"step": step, "note": "x"})


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".")]


def test_save_commits_by_rename_and_leaves_no_temporary(tmp_path):
    root = tmp_path / "checkpoints"
    path = save(root, 5)
    assert path == root / "step-5" and path.is_dir()
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "model.bin", "opt.bin", "trainer.json"]
    assert leftovers(root) == []
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["step"] == 5
    assert set(manifest["files"]) == {"model.bin", "opt.bin", "trainer.json"}
    assert manifest["files"]["model.bin"] == {"sha256": ckpt.sha256_file(path / "model.bin"), "bytes": 7}
    assert ckpt.verify(path) is None
    assert ckpt.read_trainer_state(path) == {"step": 5, "note": "x"}


def test_save_uses_a_temporary_directory_that_is_renamed(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    renames = []
    real_rename = os.rename

    def spy(src, dst):
        renames.append((Path(src).name, Path(dst).name))
        assert not Path(dst).exists()  # step-N appears only by the rename
        return real_rename(src, dst)

    monkeypatch.setattr(ckpt.os, "rename", spy)
    save(root, 3)
    assert renames == [(f".tmp-step-3-{os.getpid()}", "step-3")]


@pytest.mark.parametrize("damage, expected", [
    ("truncate", "size"),
    ("flip", "SHA-256"),
    ("no-manifest", "no manifest"),
    ("bad-manifest", "unreadable manifest"),
    ("missing-file", "missing file opt.bin"),
    ("trainer", "SHA-256"),
])
def test_verify_detects_damage(tmp_path, damage, expected):
    path = save(tmp_path, 1, payload=b"0123456789" * 10)
    model = path / "model.bin"
    if damage == "truncate":
        model.write_bytes(model.read_bytes()[:-1])
    elif damage == "flip":
        data = bytearray(model.read_bytes())
        data[17] ^= 0x01
        model.write_bytes(bytes(data))
    elif damage == "no-manifest":
        (path / "manifest.json").unlink()
    elif damage == "bad-manifest":
        (path / "manifest.json").write_text("{not json")
    elif damage == "missing-file":
        (path / "opt.bin").unlink()
    elif damage == "trainer":
        state = (path / "trainer.json").read_text()
        (path / "trainer.json").write_text(state.replace('"x"', '"y"'))
    problem = ckpt.verify(path)
    assert problem is not None and expected in problem


def test_verify_refuses_manifest_names_outside_the_directory(tmp_path):
    path = save(tmp_path, 1)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["../outside.bin"] = {"sha256": ckpt.sha256_file(outside), "bytes": 1}
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert ckpt.verify(path) is not None


def test_newest_complete_falls_back_with_a_warning(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        save(root, step)
    assert ckpt.newest_complete(root) == root / "step-6"
    (root / "step-6" / "model.bin").write_bytes(b"weightz")  # same size, other bytes
    with pytest.warns(UserWarning, match="step-6.*SHA-256"):
        assert ckpt.newest_complete(root) == root / "step-4"
    (root / "step-4" / "manifest.json").unlink()  # a save that died before its manifest
    with pytest.warns(UserWarning) as record:
        assert ckpt.newest_complete(root) == root / "step-2"
    assert len(record) == 2


def test_newest_complete_orders_steps_numerically(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (9, 10, 100):
        save(root, step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ckpt.newest_complete(root) == root / "step-100"
    assert [s for s, _ in ckpt.list_steps(root)] == [9, 10, 100]


def test_newest_complete_with_nothing(tmp_path):
    assert ckpt.newest_complete(tmp_path / "absent") is None
    root = tmp_path / "checkpoints"
    save(root, 1)
    (root / "step-1" / "manifest.json").unlink()
    with pytest.warns(UserWarning):
        assert ckpt.newest_complete(root) is None


def test_list_steps_ignores_other_entries(tmp_path):
    root = tmp_path / "checkpoints"
    save(root, 1)
    (root / "step-x").mkdir()
    (root / "notes.txt").write_text("hi")
    (root / "step-7").write_text("a file, not a checkpoint")
    (root / ".tmp-step-3-1").mkdir()
    assert ckpt.list_steps(root) == [(1, root / "step-1")]


@pytest.mark.parametrize("keep", [1, 2, 3, 10])
def test_prune_keeps_the_newest_n(tmp_path, keep):
    root = tmp_path / "checkpoints"
    for step in range(1, 8):
        save(root, step)
    ckpt.prune(root, keep)
    assert [s for s, _ in ckpt.list_steps(root)] == list(range(1, 8))[-keep:]


def test_prune_spares_protected_and_removes_stale_temporaries(tmp_path):
    root = tmp_path / "checkpoints"
    for step in range(1, 5):
        save(root, step)
    stale = root / ".tmp-step-9-999999999"
    stale.mkdir()
    mine = root / f".tmp-step-9-{os.getpid()}"
    mine.mkdir()
    ckpt.prune(root, 1, protect={root / "step-2"})
    assert [s for s, _ in ckpt.list_steps(root)] == [2, 4]
    assert not stale.exists()
    assert mine.exists()  # this process may be writing it


@pytest.mark.parametrize("fail_after_files", [False, True])
def test_a_failing_write_leaves_the_previous_checkpoint_intact(tmp_path, fail_after_files):
    root = tmp_path / "checkpoints"
    good = save(root, 5)
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    def broken(d: Path) -> list[str]:
        if fail_after_files:
            (d / "model.bin").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ckpt.save(root, 10, broken, {"step": 10})
    assert leftovers(root) == []
    assert [s for s, _ in ckpt.list_steps(root)] == [5]
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert ckpt.newest_complete(root) == good


def test_an_interrupt_during_write_leaves_no_temporary(tmp_path):
    root = tmp_path / "checkpoints"
    save(root, 1)

    def interrupted(d: Path) -> list[str]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpt.save(root, 2, interrupted, {"step": 2})
    assert leftovers(root) == [] and ckpt.newest_complete(root) == root / "step-1"


def test_a_write_that_names_a_file_it_did_not_write_fails_cleanly(tmp_path):
    root = tmp_path / "checkpoints"
    with pytest.raises(OSError):
        ckpt.save(root, 1, lambda d: ["ghost.bin"], {"step": 1})
    assert leftovers(root) == [] and ckpt.list_steps(root) == []


def test_save_replaces_a_stale_directory_of_the_same_step(tmp_path):
    root = tmp_path / "checkpoints"
    stale = root / "step-3"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("from a run that died")
    path = save(root, 3, payload=b"fresh")
    assert not (path / "junk").exists()
    assert (path / "model.bin").read_bytes() == b"fresh"
    assert ckpt.verify(path) is None


def test_read_trainer_state_of_a_broken_checkpoint(tmp_path):
    with pytest.raises(CheckpointError) as info:
        ckpt.read_trainer_state(tmp_path)
    assert "trainer.json" in str(info.value) and info.value.exit_code == 2
