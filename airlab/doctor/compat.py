"""Compatibility rules as data: the package's compat.yaml and the few functions that read it.

Nothing here probes the machine; every function is pure over its arguments and the table, so the
doctor's checks and the setup planner share one reading of the facts.

Vocabulary:
- a *driver* version is NVIDIA's dotted string ("570.124.06"); compared numerically per field.
- a *toolkit* is a CUDA release ("12.8"); a torch *variant* names one ("cu128" -> 12.8).
- a *platform column* is "linux" or "windows"; WSL2 reports the Windows driver, so it reads the
  Windows column.
- a compute capability (CC) is "8.6" or the tuple (8, 6).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Iterable

import yaml

Version = tuple[int, ...]


def parse_version(text: str | None) -> Version | None:
    """'570.124.06' -> (570, 124, 6); '2.13.0+cpu' -> (2, 13, 0); '3.11' -> (3, 11). None if no digits."""
    if text is None:
        return None
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(text))
    if not m:
        return None
    return tuple(int(p) for p in m.group(1).split("."))


def version_at_least(have: str | Version | None, need: str | Version | None) -> bool:
    """Numeric per-field comparison; missing trailing fields count as 0 ('580' == '580.0.0')."""
    h = parse_version(have) if isinstance(have, str) or have is None else have
    n = parse_version(need) if isinstance(need, str) or need is None else need
    if h is None or n is None:
        return False
    width = max(len(h), len(n))
    return h + (0,) * (width - len(h)) >= n + (0,) * (width - len(n))


def parse_cc(text: str | tuple | None) -> tuple[int, int] | None:
    """'8.6' / 'sm_86' / (8, 6) -> (8, 6)."""
    if text is None:
        return None
    if isinstance(text, tuple):
        return (int(text[0]), int(text[1]))
    s = str(text).strip()
    m = re.fullmatch(r"(\d+)\.(\d+)", s)
    if m:
        return int(m.group(1)), int(m.group(2))
    m = re.fullmatch(r"(?:sm|compute)_(\d+?)(\d)[af]?", s)
    if m:
        return int(m.group(1)), int(m.group(2))
    return None


def cc_str(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


@dataclass(frozen=True)
class ArchEntry:
    """One entry of an arch list: SASS for sm_XY (binary code) or PTX for compute_XY."""

    kind: str  # "sass" | "ptx"
    cc: tuple[int, int]
    suffix: str = ""  # "" | "a" (arch-specific, no carry-forward) | "f" (family)

    def __str__(self) -> str:
        return f"{'sm' if self.kind == 'sass' else 'compute'}_{self.cc[0]}{self.cc[1]}{self.suffix}"


def parse_arch_list(items: Iterable[str]) -> list[ArchEntry]:
    """Table form ('8.6', '12.0+PTX') or torch form ('sm_86', 'compute_120', 'sm_90a') -> entries."""
    out: list[ArchEntry] = []
    for raw in items:
        s = str(raw).strip()
        m = re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", s)
        if m:
            cc = (int(m.group(1)), int(m.group(2)))
            out.append(ArchEntry("sass", cc, m.group(3)))
            if m.group(4):
                out.append(ArchEntry("ptx", cc, m.group(3)))
            continue
        m = re.fullmatch(r"(sm|compute)_(\d+?)(\d)([af]?)", s)
        if m:
            out.append(ArchEntry("sass" if m.group(1) == "sm" else "ptx", (int(m.group(2)), int(m.group(3))),
                                 m.group(4)))
            continue
        raise ValueError(f"unrecognized arch {raw!r}")
    return out


def coverage(cc: tuple[int, int], arch: list[ArchEntry]) -> tuple[str, ArchEntry | None]:
    """How an arch list runs on a GPU: ('native', sm_XY) | ('ptx', compute_XY) | ('none', None).

    SASS sm_XY runs on the same major with minor >= Y; arch-specific sm_XYa only on exactly X.Y.
    PTX compute_XY JITs forward to any CC >= X.Y (given a driver that fully supports the toolkit);
    compute_XYa does not carry forward.
    """
    best = None
    for e in arch:
        if e.kind != "sass":
            continue
        ok = (e.cc == cc) if e.suffix == "a" else (e.cc[0] == cc[0] and e.cc[1] <= cc[1])
        if ok and (best is None or e.cc > best.cc):
            best = e
    if best is not None:
        return "native", best
    for e in sorted((e for e in arch if e.kind == "ptx"), key=lambda e: e.cc, reverse=True):
        if (e.cc == cc) if e.suffix == "a" else (e.cc <= cc):
            return "ptx", e
    return "none", None


def variant_toolkit(variant: str) -> str | None:
    """'cu128' -> '12.8', 'cu118' -> '11.8', 'cu130' -> '13.0'; None for cpu/rocm."""
    m = re.fullmatch(r"cu(\d+)(\d)", variant)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def toolkit_variant(toolkit: str) -> str:
    """'12.8' -> 'cu128'."""
    major, minor = toolkit.split(".")[:2]
    return f"cu{major}{minor}"


class Compat:
    """The table, with lookups. Use `load()` for the packaged one."""

    def __init__(self, data: dict):
        self.data = data

    # --- CUDA toolkit and driver -------------------------------------------------------------

    def toolkit_rows(self) -> list[tuple[str, Version, str | None, str | None]]:
        """(key, toolkit version, linux min, windows min) for every row, updates included."""
        rows = []
        for key, (linux, windows) in self.data["cuda_toolkit_driver_min"].items():
            base = re.match(r"(\d+\.\d+(?:\.\d+)?)", key).group(1)
            rows.append((key, parse_version(base), linux, windows))
        return rows

    def driver_min(self, toolkit: str, column: str = "linux") -> str | None:
        """Driver for *full* support of a CUDA release (its GA row: '12.8' -> 570.26; '11.0' -> 11.0.2's)."""
        table = self.data["cuda_toolkit_driver_min"]
        idx = 0 if column == "linux" else 1
        if toolkit in table:
            return table[toolkit][idx]
        for key, row in table.items():  # "11.0" is listed as "11.0.2"
            if re.fullmatch(re.escape(toolkit) + r"\.\d+", key):
                return row[idx]
        return None

    def minor_compat_min(self, major: int | str, column: str = "linux") -> str | None:
        """Oldest driver that loads any binary of this CUDA major (minor-version compatibility)."""
        row = self.data["minor_version_compat_min"].get(str(major))
        return None if row is None else str(row[column])

    def max_toolkit_for_driver(self, driver: str, column: str = "linux") -> str | None:
        """The newest CUDA release ('12.8') this driver fully supports, from the table."""
        best = None
        for key, version, linux, windows in self.toolkit_rows():
            need = linux if column == "linux" else windows
            if need is not None and version_at_least(driver, need):
                if best is None or version > best:
                    best = version
        return None if best is None else f"{best[0]}.{best[1]}"

    def loadability(self, toolkit: str, driver: str | None, column: str = "linux") -> tuple[str, str | None]:
        """Whether binaries built with `toolkit` load on `driver`.

        Returns (rule, full): rule is 'full' (driver >= the toolkit's full-support minimum),
        'minor' (only by minor-version compatibility: loads, but no PTX JIT from this toolkit),
        'no' (too old even for that; see minor_compat_min) or 'unknown' (no driver known); full is
        the toolkit's full-support minimum.
        """
        full = self.driver_min(toolkit, column)
        major = toolkit.split(".")[0]
        minor = self.minor_compat_min(major, column)
        if driver is None:
            return "unknown", full
        if full is not None and version_at_least(driver, full):
            return "full", full
        if minor is not None and version_at_least(driver, minor):
            return "minor", full
        return "no", full

    # --- PyTorch -----------------------------------------------------------------------------

    def torch_arch_list(self, variant: str, machine: str = "x86_64") -> tuple[list[ArchEntry], bool] | None:
        """A variant's compiled arch list, and whether it is UNVERIFIED. aarch64 drops some archs."""
        if not re.fullmatch(r"cu\d+", variant):
            return None
        verified = True
        items = self.data["torch_cuda_arch_list"].get(variant)
        if items is None:
            items = self.data.get("torch_cuda_arch_list_older", {}).get(variant)
            verified = False
        if items is None:
            return None
        entries = parse_arch_list(items)
        if machine in ("aarch64", "arm64"):
            dropped = {(5, 0), (6, 0), (7, 0), (7, 5), (8, 6)}
            entries = [e for e in entries if e.cc not in dropped]
            if variant == "cu130":
                entries.append(ArchEntry("sass", (11, 0)))
        return entries, verified

    def torch_releases(self) -> list[str]:
        """Known releases, newest first."""
        return sorted(self.data["torch_release_cuda_variants"], key=parse_version, reverse=True)

    def torch_release(self, release: str) -> dict:
        row = dict(self.data["torch_release_cuda_variants"][release])
        row["rocm"] = list(self.data.get("torch_release_rocm_variants", {}).get(release, []))
        return row

    def torch_python_range(self, release: str) -> tuple[tuple[int, ...] | None, str | None]:
        """(lowest Python, the range as listed or None). Where a release lists no range, its lowest
        Python is the newest lower bound listed by an older release (support is only ever dropped
        at the bottom); the top is unknown and not enforced."""
        rows = self.data["torch_release_cuda_variants"]
        spec = rows[release].get("py")
        low = None
        for r in sorted(rows, key=parse_version):
            if parse_version(r) > parse_version(release):
                break
            py = rows[r].get("py")
            if py:
                lows = [parse_version(part.split("-")[0].strip()) for part in str(py).split(",")]
                low = max(low or (0,), min(lows))
        return low, spec

    def toolkit_max_cc(self, toolkit: str) -> tuple[int, int] | None:
        """The newest CC a CUDA release compiles native code for ('12.5' -> (9, 0))."""
        best = None
        for key, cc in self.data.get("cuda_toolkit_max_cc", {}).items():
            if parse_version(key) <= parse_version(toolkit) and (best is None or parse_version(key) > best[0]):
                best = (parse_version(key), parse_cc(cc))
        return None if best is None else best[1]

    def torch_index_url(self, variant: str) -> str:
        return f"{self.data['torch_index_url']}/{variant}"

    # --- TensorFlow --------------------------------------------------------------------------

    def tf_configs(self) -> list[tuple[str, str, str, str]]:
        """(version, python range, cudnn, cuda), newest first."""
        rows = [(v, *row) for v, row in self.data["tf_linux_gpu"].items()]
        return sorted(rows, key=lambda r: parse_version(r[0]), reverse=True)

    def tf_config(self, version: str) -> tuple[str, str, str, str] | None:
        """The tested configuration of the release line of `version` ('2.21.3' -> the 2.21.0 row)."""
        v = parse_version(version)
        if v is None:
            return None
        for row in self.tf_configs():
            r = parse_version(row[0])
            if r[:2] == v[:2]:
                return row
        return None

    @property
    def tf_rules(self) -> dict:
        return self.data["tf_rules"]

    # --- security ----------------------------------------------------------------------------

    def advisories(self, package: str) -> list[dict]:
        return [a for a in self.data.get("security_advisories", []) if a["package"] == package]


def python_in_range(python: str | tuple, spec: str | None) -> bool | None:
    """'3.11' in '3.9-3.13' -> True; '2.7,3.5-3.7' lists; None when the spec is unknown."""
    if spec is None:
        return None
    py = parse_version(python) if isinstance(python, str) else tuple(python)
    py = py[:2]
    for part in str(spec).split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-")
            if parse_version(lo)[:2] <= py <= parse_version(hi)[:2]:
                return True
        elif parse_version(part)[:2] == py:
            return True
    return False


@functools.lru_cache(maxsize=1)
def load() -> Compat:
    """The packaged table (airlab/doctor/compat.yaml)."""
    text = resources.files("airlab.doctor").joinpath("compat.yaml").read_text(encoding="utf-8")
    return Compat(yaml.safe_load(text))
