"""Gather the facts (framework probes in parallel with the system and NVIDIA probes) and judge them."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from airlab import __version__
from airlab.backends import table
from airlab.doctor import frameworks
from airlab.doctor.checks import Check, evaluate

BACKENDS = table.BACKENDS
ENV_KEYS = ("CUDA_VISIBLE_DEVICES", "CUDA_HOME", "CUDA_PATH", "LD_LIBRARY_PATH", "NVIDIA_VISIBLE_DEVICES",
            "TF_CPP_MIN_LOG_LEVEL", "PYTORCH_CUDA_ALLOC_CONF", "XLA_FLAGS")


@dataclass
class Report:
    facts: dict
    checks: list[Check]
    backends: tuple[str, ...]
    elapsed_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    @property
    def verdict(self) -> str:
        n_ok = sum(c.status == "ok" for c in self.checks)
        n_skip = sum(c.status == "skip" for c in self.checks)
        counts = f"{n_ok} ok, {len(self.warnings)} warn, {len(self.failed)} fail, {n_skip} skip"
        if self.failed:
            return f"FAIL — {counts}: fix {', '.join(c.id for c in self.failed)}"
        if self.warnings:
            return f"OK with warnings — {counts}"
        return f"OK — {counts}"

    def to_dict(self) -> dict:
        return {"airlab_version": __version__, "backends": list(self.backends), "elapsed_s": round(self.elapsed_s, 3),
                "verdict": {"status": "fail" if self.failed else "warn" if self.warnings else "ok",
                            "line": self.verdict, "failed": [c.id for c in self.failed],
                            "warnings": [c.id for c in self.warnings]},
                "checks": [c.to_dict() for c in self.checks], "facts": self.facts}


def _in_thread(fn, timeout: float, default):
    """Run fn in a daemon thread; a hung NVML call must not hang the doctor."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except Exception as e:  # a probe bug becomes a fact, not a crash
            box["value"] = dict(default, probe_error=f"{type(e).__name__}: {e}")

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if "value" not in box:
        return dict(default, probe_error=f"timed out after {timeout:g} s")
    return box["value"]


def gather(backends: tuple[str, ...] = BACKENDS, deep: bool = False, timeout: float = frameworks.DEFAULT_TIMEOUT,
           commands: dict[str, list[str]] | None = None, probe_env: dict | None = None,
           system_probe=None, nvidia_probe=None, packages_probe=None) -> dict:
    """All facts. Seams: `commands` (probe argv per framework), `probe_env` (their environment),
    `system_probe`, `nvidia_probe`, `packages_probe` (zero-argument callables returning dicts)."""
    from airlab.doctor.nvidia import probe_nvidia
    from airlab.doctor.system import probe_system
    from airlab.setup.facts import installed_packages

    t0 = time.monotonic()
    if commands is None:
        commands = {b: frameworks.probe_command(b, deep) for b in backends}
    running = frameworks.start(commands, env=probe_env)  # the slow part starts first, in parallel
    try:
        system = _in_thread(system_probe or probe_system, 15, {})
        nvidia = _in_thread(nvidia_probe or probe_nvidia, 20, {"gpus": [], "nvml": {"ok": False, "error": "probe failed"}})
        packages = _in_thread(packages_probe or installed_packages, 15, {})
        results = frameworks.finish(running, timeout)
    except BaseException:  # interrupted (a signal): the probes run in their own sessions, so stop them
        frameworks.kill_all(running)
        raise
    return {"system": system, "nvidia": nvidia, "frameworks": results, "packages": packages,
            "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
            "options": {"backends": list(backends), "deep": deep, "timeout_s": timeout},
            "gather_s": round(time.monotonic() - t0, 3)}


def run_doctor(backends: tuple[str, ...] | list[str] = BACKENDS, deep: bool = False, explicit: bool = False,
               timeout: float = frameworks.DEFAULT_TIMEOUT, facts: dict | None = None, **seams) -> Report:
    """Gather (unless `facts` is given) and judge. `explicit`: the backends were named by the user."""
    t0 = time.monotonic()
    backends = tuple(backends)
    if facts is None:
        facts = gather(backends, deep=deep, timeout=timeout, **seams)
    checks = evaluate(facts, backends, explicit=explicit, deep=deep)
    return Report(facts, checks, backends, elapsed_s=time.monotonic() - t0)
