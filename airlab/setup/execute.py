"""Execute a setup plan with the running interpreter's pip (or uv when present).

Every command is an argument list handed to subprocess without a shell; nothing is ever joined
into a shell string. `runner` is the seam the tests replace (a fake pip records its argv).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

from airlab.errors import EnvironmentProblem
from airlab.setup.plan import Plan


@dataclass(frozen=True)
class Installer:
    """`kind` is 'pip' or 'uv'; `prefix` is the argv before the pip subcommand."""

    kind: str
    prefix: tuple[str, ...]
    python: str

    def install(self, args: list[str]) -> list[str]:
        if self.kind == "uv":
            return [*self.prefix, "install", "--python", self.python, *args]
        return [*self.prefix, "install", *args]

    def uninstall(self, packages: list[str]) -> list[str]:
        if self.kind == "uv":
            return [*self.prefix, "uninstall", "--python", self.python, *packages]
        return [*self.prefix, "uninstall", "-y", *packages]


def find_installer(python: str | None = None, which: Callable = shutil.which, prefer_uv: bool = True) -> Installer:
    """uv when on PATH (much faster, same argument semantics), else `python -m pip`."""
    python = python or sys.executable
    uv = which("uv") if prefer_uv else None
    if uv:
        return Installer("uv", (uv, "pip"), python)
    return Installer("pip", (python, "-m", "pip"), python)


def commands_for(plan: Plan, installer: Installer) -> list[list[str]]:
    cmds: list[list[str]] = []
    for choice in plan.actionable:
        if choice.uninstall:
            cmds.append(installer.uninstall(list(choice.uninstall)))
        cmds.append(installer.install(choice.pip_args()))
    return cmds


def default_runner(argv: list[str]) -> int:
    """Run one command, its output going straight to the terminal."""
    return subprocess.run(argv, check=False).returncode


def stderr_runner(argv: list[str]) -> int:
    """Run one command with everything it prints sent to stderr (keeps stdout clean for --json)."""
    p = subprocess.run(argv, check=False, capture_output=True, text=True, errors="replace")
    sys.stderr.write(p.stdout + p.stderr)
    return p.returncode


def run_plan(plan: Plan, installer: Installer, runner: Callable[[list[str]], int] = default_runner,
             echo: Callable[[list[str]], None] | None = None) -> list[list[str]]:
    """Run every command of the plan in order; stop at the first failure (EnvironmentProblem, exit 4)."""
    done = []
    for argv in commands_for(plan, installer):
        if not all(isinstance(a, str) for a in argv):
            raise TypeError(f"command arguments must be strings: {argv!r}")
        if echo:
            echo(argv)
        rc = runner(argv)
        if rc != 0:
            import shlex

            raise EnvironmentProblem(
                f"{installer.kind} failed (exit {rc}): {' '.join(shlex.quote(a) for a in argv)}",
                hint="read the installer's output above; after fixing it, rerun `airlab setup` "
                     "(`airlab setup --dry-run` shows the plan)")
        done.append(argv)
    return done
