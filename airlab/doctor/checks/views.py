"""Views over the facts that several sections read, and the fixes they share."""

from __future__ import annotations

from dataclasses import replace

from airlab.backends import table
from airlab.doctor.checks.registry import Context, Finding, fail, ok, skip, warn

GiB = 2**30
DEEP_N = 1024  # the probes' matmul size under --deep (128 otherwise)


def gib(n) -> str:
    return "?" if n is None else f"{n / GiB:.1f} GiB"


def os_kind(facts: dict) -> str:
    s = facts.get("system", {})
    if s.get("os") == "Darwin":
        return "darwin"
    if s.get("os") == "Windows":
        return "windows"
    if s.get("wsl"):
        return "wsl"
    return "linux"


def column(facts: dict) -> str:
    return "windows" if os_kind(facts) in ("windows", "wsl") else "linux"


def gpus(facts: dict) -> list[dict]:
    """NVIDIA GPUs, with compute capability filled in from torch's view when the driver's source
    (e.g. /proc) did not give it."""
    out = [dict(g) for g in facts.get("nvidia", {}).get("gpus", [])]
    tdev = (facts.get("frameworks", {}).get("torch", {}).get("data") or {}).get("devices") or []
    if not out and tdev and not (facts.get("frameworks", {}).get("torch", {}).get("data") or {}).get("hip"):
        out = [{"index": d.get("index"), "name": d.get("name"), "cc": d.get("cc"), "from": "torch"} for d in tdev]
    for g in out:
        if not g.get("cc"):
            for d in tdev:
                if d.get("index") == g.get("index") and d.get("cc"):
                    g["cc"] = d["cc"]
    return out


def gpu_label(g: dict) -> str:
    cc = f", CC {g['cc']}" if g.get("cc") else ""
    return f"GPU {g.get('index', '?')} ({g.get('name') or 'unknown'}{cc})"


def driver(facts: dict) -> str | None:
    return facts.get("nvidia", {}).get("driver_version")


def probe(facts: dict, name: str) -> dict:
    return facts.get("frameworks", {}).get(name) or {"status": "not_run"}


def data(facts: dict, name: str) -> dict:
    """What a framework's probe learned (empty when it learned nothing)."""
    return probe(facts, name).get("data") or {}


def plan_fix(facts: dict, backend: str) -> str:
    """The fix command for a wrong framework build: what `airlab setup` would install here."""
    try:
        from airlab.setup.plan import Machine, plan_setup

        m = Machine(driver=driver(facts),
                    gpus=tuple(g["cc"] for g in gpus(facts) if g.get("cc")),
                    python=facts.get("system", {}).get("python", {}).get("version", "3.11"),
                    os=os_kind(facts), arch=facts.get("system", {}).get("machine") or "x86_64",
                    installed=dict(facts.get("packages") or {}))
        choice = plan_setup(m, [backend]).choices[0]
        if choice.action == "none":
            return f"airlab setup --backend {backend}"
        steps = [f"pip uninstall -y {' '.join(choice.uninstall)}"] if choice.uninstall else []
        steps.append(choice.display_command().replace("pip install ", "pip install --force-reinstall ", 1)
                     if choice.action == "keep" else choice.display_command())
        return f"airlab setup --backend {backend}  (runs: {'; '.join(steps)})"
    except Exception:  # the fix line must never break the doctor
        return f"airlab setup --backend {backend}"


def import_finding(facts: dict, ctx: Context, name: str, label: str, optional: bool) -> Finding:
    """Did the framework import? Unless it did (or did and then hung), the section's other checks
    stop with "<label> not installed" or "<label> did not import". `optional`: a missing one is
    `skip` (not `warn`) unless the user named the backend."""
    p = probe(facts, name)
    st = p.get("status")
    module = table.get(name).module if name in table.BACKENDS else name
    if st == "ok" or (st == "timeout" and data(facts, name).get("status") == "imported"):
        d = p["data"]
        if st == "timeout":
            return fail(f"{label} {d.get('version')} imported, then hung at stage '{p.get('stage')}': "
                        f"{p.get('error')}", f"run `python -c \"import {module}\"` then the stage by hand; "
                        "check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES")
        return ok(f"{label} {d.get('version')} imports ({d.get('import_s', 0):.1f} s) from {d.get('path')}")
    why = f"{label} not installed" if st == "absent" else f"{label} did not import"
    return replace(_not_imported(facts, ctx, p, name, label, module, optional), stops=why)


def _not_imported(facts, ctx, p, name, label, module, optional) -> Finding:
    st = p.get("status")
    if st == "absent":
        maker = fail if ctx.explicit else (skip if optional else warn)
        return maker(f"{label} is not installed" + (" (optional backend)" if optional else ""), plan_fix(facts, name))
    if st == "not_run":
        return skip(f"{label} not probed")
    err = p.get("error") or "unknown error"
    if st == "timeout":
        return fail(f"import {module} hung: {err}",
                    f"run `python -X importtime -c \"import {module}\"` to see where it stops; check network "
                    "file systems, a stuck driver (nvidia-smi), or reinstall: " + plan_fix(facts, name))
    if st == "crashed":
        sigill = "SIGILL" in err
        return fail(f"{label} crashed the process: {err}",
                    "the CPU lacks instructions this wheel needs (AVX): use a matching build" if sigill else
                    f"run `python -c \"import {module}\"` to see the crash; reinstall: " + plan_fix(facts, name))
    return fail(f"import {module} raised {err}", "reinstall: " + plan_fix(facts, name))
