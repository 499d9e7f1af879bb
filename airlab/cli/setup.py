"""`airlab setup`: plan the framework wheels for this machine (or an assumed one) and install them."""

from __future__ import annotations

import shlex
import sys

import typer

from airlab.backends import table
from airlab.cli.common import out, print_json
from airlab.errors import EnvironmentProblem, UsageError


def _quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def _render_plan(plan, commands, console) -> None:
    m = plan.machine
    assumed = f" (assumed: {', '.join(m.assumed)})" if m.assumed else ""
    console.print(f"machine: {m.describe()}{assumed}", highlight=False, markup=False)
    for c in plan.choices:
        what = {"keep": "keep", "install": "install", "none": "nothing"}[c.action]
        req = " ".join(c.requirements) + (f" from {c.index_url}" if c.index_url else "")
        console.print(f"{c.backend}: {what} {req or ''}".rstrip() + f"  [{c.variant}; rule {c.rule}]",
                      highlight=False, markup=False)
        console.print(f"  reason: {c.reason}", highlight=False, markup=False)
        for w in c.warnings:
            console.print(f"  warning: {w}", highlight=False, markup=False)
    if commands:
        console.print("commands:", highlight=False, markup=False)
        for argv in commands:
            console.print(f"  {_quote(argv)}", highlight=False, markup=False)
    else:
        console.print("nothing to install: the installed wheels already fit", highlight=False, markup=False)


def setup(
    backend: str = typer.Option(None, "--backend", help="torch, tensorflow or both (torch,tensorflow); default: torch, "
                                                        "plus tensorflow when it is installed"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the plan and the commands; install nothing"),
    yes: bool = typer.Option(False, "--yes", "-y", help="install without asking"),
    json_out: bool = typer.Option(False, "--json", help="print the plan (and what ran) as JSON"),
    assume_driver: str = typer.Option(None, "--assume-driver", help="plan for this NVIDIA driver version "
                                                                     "instead of the detected one, e.g. 535.104.05"),
    assume_gpu: str = typer.Option(None, "--assume-gpu", help="plan for these compute capabilities (8.0 or "
                                                               "8.0,9.0) or 'none'"),
) -> None:
    """Install the PyTorch / TensorFlow wheels that fit this machine's driver, GPUs and Python.

    One line of reason per choice. Runs pip (or uv) as argument lists after you confirm (or with
    --yes), then the doctor's framework checks. With --assume-* the plan is for another machine
    (a cluster image, say) and what is installed here is ignored.

    Example: airlab setup --dry-run --assume-driver 535.104.05 --assume-gpu 8.0
    """
    import airlab.setup as s
    from airlab.cli.doctor import parse_backends, render

    driver = s.parse_assume_driver(assume_driver)
    gpus = s.parse_assume_gpu(assume_gpu)
    if json_out and not (dry_run or yes):
        raise UsageError("--json needs --dry-run or --yes (there is no prompt in JSON mode)",
                         hint="example: airlab setup --dry-run --json")
    machine = s.machine_facts(assume_driver=driver, assume_gpu=gpus)
    if backend is None:
        # the first backend always; the others where this machine has them installed
        backends = tuple(row.name for row in table.ROWS if row is table.ROWS[0] or (
            not machine.assumed and set(row.distributions) & set(machine.installed)))
    else:
        backends = parse_backends(backend, option="--backend")
    plan = s.plan_setup(machine, backends)
    installer = s.find_installer()
    commands = s.commands_for(plan, installer)
    result = {"dry_run": dry_run, "installer": installer.kind, "commands": commands, **plan.to_dict()}
    if json_out and dry_run:
        print_json(result)
        return
    if not json_out:
        _render_plan(plan, commands, out)
    if dry_run or not commands:
        if json_out:
            print_json(result)
        elif dry_run:
            out.print("dry run: nothing installed", highlight=False, markup=False)
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("not asking on a non-interactive stdin: nothing installed",
                             hint="pass --yes to install, or --dry-run to only see the plan")
        if not typer.confirm(f"Run {'this command' if len(commands) == 1 else f'these {len(commands)} commands'}?"):
            out.print("cancelled: nothing installed", highlight=False, markup=False)
            return
    echo = None if json_out else (lambda argv: out.print(f"$ {_quote(argv)}", highlight=False, markup=False))
    from airlab.setup.execute import default_runner, stderr_runner

    s.run_plan(plan, installer, runner=stderr_runner if json_out else default_runner, echo=echo)
    from airlab.doctor import core

    report = core.run_doctor(backends=backends, explicit=True)
    sections = set(backends)
    if json_out:
        result["doctor"] = {"verdict": report.to_dict()["verdict"],
                            "checks": [c.to_dict() for c in report.checks
                                       if c.section in sections or c.id.startswith("gpu.driver_too_old_for_")]}
        print_json(result)
    else:
        out.print("after install:", highlight=False, markup=False)
        render(report, sections=sections)
    failed = [c for c in report.failed if c.section in sections or c.id.startswith("gpu.driver_too_old_for_")]
    if failed:
        raise EnvironmentProblem(f"installed, but {len(failed)} framework check(s) fail: "
                                 + ", ".join(c.id for c in failed), hint="run `airlab doctor` for the fixes")
