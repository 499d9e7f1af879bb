"""The check registry: each check is one function, registered once with its id and what it needs.

    @check("torch.arch_coverage", needs="torch.import")
    def arch_coverage(facts, ctx):
        ...
        return ok("native code for every GPU: ...")

A check function judges the facts (a dict; see airlab.doctor.core.gather) and returns one
`Finding` (status, summary, fix); `evaluate` adds its id. A check whose prerequisite (`needs`)
stopped, i.e. returned a finding with `stops` set, does not run: it says `skip` with that reason,
and so do the checks that need it in turn.

Sections run in a fixed order: system, gpu, cuda, one per backend (in the order of
airlab/backends/table.py, for the backends asked for), security. A section is the module its
checks live in: the core ones are modules beside this one, a backend's is the module its table row
names (`doctor`), so a new backend's section is one file and one table field.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Callable

from airlab.backends import table
from airlab.doctor.compat import Compat, load

STATUSES = ("ok", "warn", "fail", "skip")
CORE_FIRST = ("system", "gpu", "cuda")  # before the backends' sections
CORE_LAST = ("security",)  # after them


@dataclass
class Check:
    id: str
    status: str
    summary: str
    fix: str | None = None

    @property
    def section(self) -> str:
        return self.id.split(".", 1)[0]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["section"] = self.section
        return d


@dataclass(frozen=True)
class Finding:
    """What a check function returns: its status, one line and a fix. `stops`: the checks that
    need this one cannot run; they say `skip` with this reason."""

    status: str
    summary: str
    fix: str | None = None
    stops: str | None = None


def finding(status: str, summary: str, fix: str | None = None) -> Finding:
    return Finding(status, summary, fix)


def ok(summary: str, fix: str | None = None) -> Finding:
    return Finding("ok", summary, fix)


def warn(summary: str, fix: str | None = None) -> Finding:
    return Finding("warn", summary, fix)


def fail(summary: str, fix: str | None = None) -> Finding:
    return Finding("fail", summary, fix)


def skip(summary: str, fix: str | None = None) -> Finding:
    return Finding("skip", summary, fix)


@dataclass(frozen=True)
class Context:
    """What a check may read besides the facts."""

    compat: Compat
    backends: tuple[str, ...] = table.BACKENDS
    explicit: bool = False  # the user named the backends (--backend torch): a missing one fails
    deep: bool = False


@dataclass(frozen=True)
class CheckDef:
    id: str
    fn: Callable[[dict, Context], Finding]
    needs: str | None  # the id of the check that must not have stopped for this one to run
    section: str  # where it is listed and run: its id's prefix unless given
    when: Callable[[Context], bool] | None  # runs only when this says so (e.g. only under --deep)
    role: str | None  # what other checks look it up by: "compute", "gpu_use" (see role_id)


REGISTRY: dict[str, CheckDef] = {}


def check(cid: str, *, needs: str | None = None, section: str | None = None,
          when: Callable[[Context], bool] | None = None, role: str | None = None):
    """Register the decorated function as check `cid`."""

    def register(fn):
        old = REGISTRY.get(cid)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"check {cid!r} is registered twice: {old.fn.__module__} and {fn.__module__}")
        REGISTRY[cid] = CheckDef(cid, fn, needs, section or cid.split(".", 1)[0], when, role)
        return fn

    return register


def section_module(name: str) -> str:
    """The module that holds a section's checks: a backend's from its table row."""
    return table.get(name).doctor if name in table.BACKENDS else f"airlab.doctor.checks.{name}"


def sections(backends: tuple[str, ...] | list[str] = table.BACKENDS) -> list[str]:
    """The sections `evaluate` runs for these backends, in order; their modules imported."""
    names = [*CORE_FIRST, *(row.name for row in table.ROWS if row.name in backends), *CORE_LAST]
    for name in names:
        importlib.import_module(section_module(name))
    return names


def in_section(name: str) -> list[CheckDef]:
    return [d for d in REGISTRY.values() if d.section == name]


def role_id(section: str, role: str) -> str | None:
    """The id of the check in `section` registered with `role` (None if none is)."""
    if section not in (*CORE_FIRST, *table.BACKENDS, *CORE_LAST):
        return None
    importlib.import_module(section_module(section))
    return next((d.id for d in in_section(section) if d.role == role), None)


def run(facts: dict, ctx: Context, names: list[str]) -> list[Check]:
    """Run the checks of these sections in order, skipping those whose prerequisite stopped."""
    checks, stopped = [], {}
    for d in (d for name in names for d in in_section(name)):
        if d.when is not None and not d.when(ctx):
            continue
        if d.needs in stopped:
            stopped[d.id] = stopped[d.needs]
            checks.append(Check(d.id, "skip", stopped[d.needs]))
            continue
        f = d.fn(facts, ctx)
        if f.stops is not None:
            stopped[d.id] = f.stops
        checks.append(Check(d.id, f.status, f.summary, f.fix))
    return checks


def evaluate(facts: dict, backends: tuple[str, ...] | list[str] = table.BACKENDS,
             explicit: bool = False, compat: Compat | None = None, deep: bool | None = None) -> list[Check]:
    """Every check for these facts, in section order. `explicit`: the user asked for these backends
    by name (--backend torch), so a missing one fails instead of warning. `deep` (default: the facts'
    options) adds `gpu.deep`, which says what --deep ran on the GPUs or skipped without one."""
    if deep is None:
        deep = bool((facts.get("options") or {}).get("deep"))
    ctx = Context(compat or load(), tuple(backends), explicit, deep)
    return run(facts, ctx, sections(backends))
