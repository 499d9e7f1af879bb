"""The data cache (airlab.data.cache) against interruptions and a second process: a build that
fails or is killed leaves no cache under the real name (and its leftovers go at the next build);
two processes that need the same cache build it once; the content key follows the contents."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from airlab.data import cache
from conftest import tmpfs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _root(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLAB_CACHE_DIR", str(tmp_path / "cache"))


def _writer(calls: list):
    def write(directory: Path) -> dict:
        calls.append(directory)
        a = cache.new_array(directory, "x", (4, 2), np.uint8)
        a[:] = 7
        a.flush()
        return {"rows": 4}
    return write


def test_a_built_cache_is_found_again_and_read_memory_mapped():
    calls: list = []
    d1, meta = cache.build("t", "k" * 64, _writer(calls))
    d2, _ = cache.build("t", "k" * 64, _writer(calls))
    assert d1 == d2 and len(calls) == 1 and meta["rows"] == 4
    x = cache.open_array(d1, "x")
    assert isinstance(x, np.memmap) and int(x.sum()) == 7 * 8


def test_a_build_that_fails_leaves_nothing_and_the_next_one_builds(tmp_path):
    def broken(directory: Path) -> dict:
        cache.new_array(directory, "x", (4, 2), np.uint8)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.build("t", "f" * 64, broken)
    left = [p.name for p in cache.cache_root().iterdir() if not p.name.endswith(".lock")]
    assert left == []  # neither a cache nor the temporary directory it was built in
    calls: list = []
    cache.build("t", "f" * 64, _writer(calls))
    assert len(calls) == 1


_SLOW = textwrap.dedent("""
    import sys, time, numpy as np
    from airlab.data import cache
    def write(d):
        open(sys.argv[1], "a").write("built\\n")
        a = cache.new_array(d, "x", (4, 2), np.uint8); a[:] = 1; a.flush()
        time.sleep(float(sys.argv[2]))
        return {}
    cache.build("t", "s" * 64, write)
""")


def _spawn(log: Path, sleep: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _SLOW, str(log), str(sleep)], cwd=REPO, env=dict(os.environ))


def test_a_build_killed_outright_leaves_no_cache_and_its_leftovers_go(tmp_path):
    log = tmp_path / "log"
    p = _spawn(log, 30)
    deadline = time.time() + 60
    while not (log.exists() and list(cache.cache_root().glob(".t-*-building-*/x.npy"))) and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (cache.cache_root() / f"t-{'s' * 24}").exists()
    assert list(cache.cache_root().glob(".t-*-building-*"))  # what kill -9 leaves
    calls: list = []
    directory, _ = cache.build("t", "s" * 64, _writer(calls))
    assert len(calls) == 1 and (directory / cache.MANIFEST).is_file()
    assert not list(cache.cache_root().glob(".t-*-building-*"))


def test_two_processes_that_need_the_same_cache_build_it_once(tmp_path):
    log = tmp_path / "log"
    procs = [_spawn(log, 1.0) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert log.read_text().count("built") == 1


def test_the_content_key_follows_the_contents_not_the_clock(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    k1 = cache.content_key([f], {"v": 1}, root=tmp_path)
    os.utime(f, (1, 1))  # touched: the same contents
    assert cache.content_key([f], {"v": 1}, root=tmp_path) == k1
    f.write_text("two")
    assert cache.content_key([f], {"v": 1}, root=tmp_path) != k1
    assert cache.content_key([f], {"v": 2}, root=tmp_path) != cache.content_key([f], {"v": 1}, root=tmp_path)


def test_a_cache_folder_that_cannot_be_written_is_an_environment_problem(tmp_path, monkeypatch):
    from airlab.errors import EnvironmentProblem

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("AIRLAB_CACHE_DIR", str(blocked / "cache"))
    with pytest.raises(EnvironmentProblem, match="cannot write the data cache") as info:
        cache.build("t", "w" * 64, _writer([]))
    assert info.value.exit_code == 4 and "AIRLAB_CACHE_DIR" in info.value.hint


@pytest.fixture
def small_tmpfs(tmp_path):
    with tmpfs(tmp_path / "tmpfs", "256k") as mount:
        yield mount


def test_a_real_full_disk_is_an_environment_problem_not_a_crash(small_tmpfs, monkeypatch):
    """A 256 kB tmpfs and a 4 MiB array: the blocks are reserved before the map is written, so
    the build fails with exit 4 naming the cache (a sparse file would die of SIGBUS), and leaves
    no cache and no temporary directory behind."""
    from airlab.errors import EnvironmentProblem

    monkeypatch.setenv("AIRLAB_CACHE_DIR", str(small_tmpfs / "cache"))

    def big(directory: Path) -> dict:
        a = cache.new_array(directory, "x", (4096, 1024), np.uint8)
        a[:] = 1
        return {}

    with pytest.raises(EnvironmentProblem, match="cannot write the data cache") as info:
        cache.build("t", "b" * 64, big)
    assert info.value.exit_code == 4
    assert [p.name for p in (small_tmpfs / "cache").iterdir() if not p.name.endswith(".lock")] == []
