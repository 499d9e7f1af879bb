"""Finding, downloading and verifying the files of classic datasets.

A file is looked up, in order, in the directory the user gives (`data.path`, for air-gapped
machines), then in `data_dir()/<dataset>/`. A file found under its canonical name is always
verified against the SHA-256 pinned in code (and the MD5 where the publisher gives one); a
mismatch is an error, never a warning. A missing file is downloaded into `data_dir()/<dataset>/`
from each mirror in turn: streamed to a temporary file in the same directory, verified, then
renamed into place, so an interrupted download never leaves a half file under the real name.
`AIRLAB_OFFLINE=1` skips the network. Whatever is still missing is reported in one DataError that
lists the files, their checksums, the URLs tried and where to put them.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from airlab.errors import DataError

log = logging.getLogger("airlab.data")

TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_TRUTHY = {"1", "true", "yes", "on"}

# Indirection so tests can serve downloads without a network.
_urlopen = urllib.request.urlopen


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its canonical name, pinned digests and where to download it."""

    name: str
    sha256: str
    md5: str | None = None
    size: int | None = None
    urls: tuple[str, ...] = ()
    # Other local names accepted in place of `name` (e.g. the uncompressed IDX file). No digest is
    # published for them, so they are checked only by the loader's structural checks.
    alternates: tuple[str, ...] = ()


@dataclass(frozen=True)
class LocatedFile:
    spec: RemoteFile
    path: Path
    verified: bool  # digest checked against the pin
    origin: str  # "path", "cache" or "download"

    def describe(self) -> str:
        note = "sha256 verified" if self.verified else "no published checksum for this name; not verified"
        return f"{self.path} ({self.origin}, {note})"


def unverified(located: dict[str, LocatedFile]) -> list[str]:
    """The paths of the located files that were used without checking a digest, in order."""
    return [str(f.path) for f in located.values() if not f.verified]


def data_dir() -> Path:
    """Where downloaded datasets live: $AIRLAB_DATA_DIR, else $XDG_CACHE_HOME/airlab/data,
    else ~/.cache/airlab/data."""
    env = os.environ.get("AIRLAB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "airlab" / "data"
    return Path.home() / ".cache" / "airlab" / "data"


def offline() -> bool:
    return os.environ.get("AIRLAB_OFFLINE", "").strip().lower() in _TRUTHY


def digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) hex digests of a file, in one pass."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _mismatch(spec: RemoteFile, sha: str, md5: str) -> str | None:
    """None if the digests match the pins, else a description of what differs."""
    problems = []
    if sha != spec.sha256:
        problems.append(f"expected sha256 {spec.sha256}, got {sha}")
    if spec.md5 is not None and md5 != spec.md5:
        problems.append(f"expected md5 {spec.md5}, got {md5}")
    return "; ".join(problems) or None


def verify(path: Path, spec: RemoteFile) -> None:
    """Check a local file against its pinned digests; DataError naming both digests if not.

    Where the size is pinned, a file far larger than it (something huge under the dataset's
    name) is refused by its size, without reading it; a wrong size is named with the digests."""
    where = spec.urls[0] if spec.urls else "the publisher"
    hint = (f"the file is corrupt, truncated or a different version: delete it and run again "
            f"to download it, or replace it with the original from {where}")
    try:
        actual = path.stat().st_size
        if spec.size is not None and actual > 2 * spec.size + _CHUNK:
            pins = f"sha256 {spec.sha256}" + (f", md5 {spec.md5}" if spec.md5 else "")
            raise DataError(f"{path}: checksum mismatch: the file has {actual:,} bytes, expected "
                            f"{spec.size:,} ({pins}); not read", hint=hint)
        sha, md5 = digests(path)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}",
                        hint="check the file's permissions, or delete it and run again to download it") from exc
    problem = _mismatch(spec, sha, md5)
    if problem:
        if spec.size is not None and actual != spec.size:
            problem = f"the file has {actual:,} bytes, expected {spec.size:,}; {problem}"
        raise DataError(f"{path}: checksum mismatch: {problem}", hint=hint)


def resolve_user_dir(path: str | os.PathLike | None) -> Path | None:
    """The directory given as `data.path`, checked. A file is taken to mean its directory."""
    if path is None:
        return None
    p = Path(path).expanduser()
    try:
        if p.is_file():
            return p.parent
        is_dir = p.is_dir()
    except OSError as exc:  # e.g. permission denied on a parent, a name too long
        raise DataError(f"data.path {str(p)!r} cannot be read: {exc.strerror or exc}",
                        hint="set data.path to a readable directory that holds the dataset's files") from None
    if not is_dir:
        raise DataError(f"data.path {str(p)!r} does not exist or is not a directory",
                        hint="set data.path to the directory that holds the dataset's files")
    return p


def _is_file(path: Path) -> bool:
    """A regular file (following links); a path that cannot even be looked at is a DataError."""
    try:
        return path.is_file()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}",
                        hint="check the permissions of the file and of its directory") from None


def _find(spec: RemoteFile, dirs: Sequence[tuple[Path, str]]) -> LocatedFile | None:
    for d, origin in dirs:
        candidate = d / spec.name
        if _is_file(candidate):
            verify(candidate, spec)
            return LocatedFile(spec, candidate, verified=True, origin=origin)
        for alt in spec.alternates:
            candidate = d / alt
            if _is_file(candidate):
                return LocatedFile(spec, candidate, verified=False, origin=origin)
    return None


def _download(url: str, spec: RemoteFile, dest: Path) -> None:
    """Download one URL to `dest` via a temporary file; raise on any failure (caller records it)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    limit = int(spec.size * 1.05) + (1 << 16) if spec.size else None
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "airlab"})
        with os.fdopen(fd, "wb") as out, _urlopen(request, timeout=TIMEOUT_S) as response:
            total = 0
            while chunk := response.read(_CHUNK):
                total += len(chunk)
                if limit is not None and total > limit:
                    raise DataError(f"larger than the expected {spec.size} bytes")
                sha.update(chunk)
                md5.update(chunk)
                out.write(chunk)
        problem = _mismatch(spec, sha.hexdigest(), md5.hexdigest())
        if problem:
            raise DataError(f"checksum mismatch: {problem}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable ({exc.reason})"
    if isinstance(exc, TimeoutError):
        return f"timed out after {TIMEOUT_S:.0f} s"
    if isinstance(exc, DataError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def fetch(dataset: str, files: Sequence[RemoteFile], path: str | os.PathLike | None = None) -> dict[str, LocatedFile]:
    """Locate (and if needed download and verify) every file of a dataset.

    Returns canonical file name -> LocatedFile. Raises one DataError listing everything missing.
    """
    user_dir = resolve_user_dir(path)
    cache = data_dir() / dataset
    dirs: list[tuple[Path, str]] = []
    if user_dir is not None:
        dirs.append((user_dir, "path"))
    dirs.append((cache, "cache"))

    found: dict[str, LocatedFile] = {}
    missing: list[RemoteFile] = []
    for spec in files:
        located = _find(spec, dirs)
        if located is None:
            missing.append(spec)
        else:
            found[spec.name] = located

    attempts: dict[str, list[str]] = {}
    if missing and not offline():
        still_missing = []
        for spec in missing:
            dest = cache / spec.name
            tried = attempts.setdefault(spec.name, [])
            for url in spec.urls:
                log.info("downloading %s from %s", spec.name, url)
                try:
                    _download(url, spec, dest)
                except (OSError, DataError, ValueError, http.client.HTTPException) as exc:
                    tried.append(f"{url}: {_reason(exc)}")
                    log.info("download of %s from %s failed: %s", spec.name, url, _reason(exc))
                    continue
                found[spec.name] = LocatedFile(spec, dest, verified=True, origin="download")
                break
            else:
                still_missing.append(spec)
        missing = still_missing

    if missing:
        raise _missing_error(dataset, missing, attempts, user_dir, cache)
    return found


def _missing_error(dataset: str, missing: Sequence[RemoteFile], attempts: dict[str, list[str]],
                   user_dir: Path | None, cache: Path) -> DataError:
    is_offline = offline()
    looked = ([f"{user_dir} (data.path)"] if user_dir is not None else []) + [str(cache)]
    names = ", ".join(spec.name for spec in missing)
    if is_offline:
        why = "not downloaded: AIRLAB_OFFLINE is set"
    else:
        reasons = [t.split(": ", 1)[-1] for spec in missing for t in attempts.get(spec.name, [])]
        why = f"every download failed (first: {reasons[0]})" if reasons else "every download failed"
    message = (f"dataset {dataset!r}: {len(missing)} file(s) missing ({names}), {why}; "
               f"looked in {', '.join(looked)}")
    details = []
    for spec in missing:
        sums = f"sha256 {spec.sha256}" + (f", md5 {spec.md5}" if spec.md5 else "")
        size = f", {spec.size:,} bytes" if spec.size else ""
        details.append(f"{spec.name} ({sums}{size})")
        if is_offline:
            details.extend(f"  {url} (not tried: offline)" for url in spec.urls)
        else:
            details.extend(f"  {t}" for t in attempts.get(spec.name, []))
    hint = (f"download the files from one of the URLs below and put them in {cache}, "
            f"or in any directory and set data.path to it")
    if is_offline:
        hint += "; or unset AIRLAB_OFFLINE to let airlab download them"
    else:
        hint += "; check the network or proxy (HTTPS_PROXY) if every mirror was unreachable"
    return DataError(message, hint=hint, details=details)
