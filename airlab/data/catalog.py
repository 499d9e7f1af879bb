"""What is known about a dataset without reading it: its shapes, and whether its files are here.

`airlab train --dry-run` builds the model from this when the files have not been downloaded, so a
config can be checked on a machine that has never fetched the data (and a dry run never starts a
download). Generated datasets (shapes, pycorpus) have no files: they are always available.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from airlab.data.files import RemoteFile, data_dir
from airlab.specs.base import DataInfo

# name -> (the dataset's DataInfo as published, "module:ATTRIBUTE" of its list of RemoteFile).
_FILE_DATASETS: dict[str, tuple[DataInfo, str]] = {
    "mnist": (DataInfo(input_shape=(1, 28, 28), num_classes=10), "airlab.data.mnist:MNIST_FILES"),
    "fashion_mnist": (DataInfo(input_shape=(1, 28, 28), num_classes=10), "airlab.data.mnist:FASHION_FILES"),
    "cifar10": (DataInfo(input_shape=(3, 32, 32), num_classes=10), "airlab.data.cifar:CIFAR10_FILES"),
    "tinyshakespeare": (DataInfo(input_shape=(), vocab_size=65), "airlab.data.text:TINYSHAKESPEARE_FILES"),
}


@dataclass(frozen=True)
class Availability:
    """Whether `load_dataset` would find every file of a dataset without downloading one."""

    name: str
    missing: tuple[str, ...]  # canonical names of the files found in no directory looked in
    total: int  # files the dataset has (0: generated, nothing to find)
    looked_in: tuple[str, ...]
    bad_path: str | None = None  # data.path, when it names nothing

    @property
    def available(self) -> bool:
        return not self.missing

    def reason(self) -> str:
        """Why the data is not here, in a few words ("files not downloaded")."""
        if not self.missing:
            return "available"
        if self.bad_path is not None:
            return f"data.path {self.bad_path} does not exist"
        if len(self.missing) == self.total:
            return "files not downloaded"
        return f"{len(self.missing)} of {self.total} files not downloaded: {', '.join(self.missing)}"


def known_info(name: str) -> DataInfo | None:
    """The DataInfo of a downloadable dataset, known without its files; None for other datasets
    (generated ones are cheap to make, so their info is read from the data itself)."""
    entry = _FILE_DATASETS.get(name)
    return entry[0] if entry else None


def remote_files(name: str) -> list[RemoteFile] | None:
    """The files a downloadable dataset is read from; None for a generated or unknown dataset."""
    entry = _FILE_DATASETS.get(name)
    if entry is None:
        return None
    module, _, attr = entry[1].partition(":")
    return list(getattr(importlib.import_module(module), attr))


def availability(name: str, path: str | None = None) -> Availability:
    """Which of a dataset's files are present locally (in `path`, then the cache), by name only:
    nothing is read, verified or downloaded. `path` need not exist (then nothing is found there)."""
    files = remote_files(name)
    if not files:
        return Availability(name, (), 0, ())
    dirs: list[Path] = []
    bad_path = None
    if path is not None:
        p = Path(path).expanduser()
        dirs.append(p.parent if p.is_file() else p)
        bad_path = None if p.exists() else str(p)
    dirs.append(data_dir() / name)
    missing = tuple(spec.name for spec in files
                    if not any((d / n).is_file() for d in dirs for n in (spec.name, *spec.alternates)))
    return Availability(name, missing, len(files), tuple(str(d) for d in dirs), bad_path)


__all__ = ["Availability", "availability", "known_info", "remote_files"]
