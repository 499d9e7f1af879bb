"""`airlab doctor [--json] [--deep] [--backend torch|tensorflow|all]`: judge the machine's stack."""

from __future__ import annotations

import typer

from airlab.backends import table
from airlab.cli.common import out, print_json
from airlab.errors import EnvironmentProblem, UsageError

STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
TITLES = {"system": "System", "gpu": "NVIDIA GPU and driver", "cuda": "CUDA toolkit and libraries",
          **{row.name: row.display for row in table.ROWS}, "security": "Known CVEs in installed packages"}


def parse_backends(value: str, allowed=table.BACKENDS, option: str = "--backend") -> tuple[str, ...]:
    """'all' | 'torch' | 'torch,tensorflow' (aliases such as 'tf' accepted) -> a tuple of names."""
    if value.strip().lower() == "all":
        return tuple(allowed)
    names = []
    for part in value.split(","):
        p = table.canonical(part) or part.strip().lower()
        if p not in allowed:
            raise UsageError(f"{option}: expected one of {', '.join(allowed)} or all. Received: {part.strip()!r}",
                             hint=f"example: {option} torch")
        if p not in names:
            names.append(p)
    return tuple(names)


def section_of(check) -> str:
    """Display section: driver-vs-framework checks sit with their framework."""
    if check.id.startswith("gpu.driver_too_old_for_"):
        return check.id.rsplit("_", 1)[-1]
    return check.section


def render(report, console=None, sections=None) -> None:
    """Rich tables per section on a terminal; plain aligned lines otherwise. Ends with the verdict."""
    console = console or out
    groups: dict[str, list] = {}
    for c in report.checks:
        s = section_of(c)
        if sections is None or s in sections:
            groups.setdefault(s, []).append(c)
    if console.is_terminal:
        from rich.table import Table
        from rich.text import Text

        for s, checks in groups.items():
            table = Table(title=TITLES.get(s, s), title_justify="left", show_lines=False, expand=False)
            table.add_column("status", no_wrap=True)
            table.add_column("check", no_wrap=True)
            table.add_column("finding")
            table.add_column("fix")
            for c in checks:
                table.add_row(Text(c.status, style=STYLE[c.status]), Text(c.id), Text(c.summary), Text(c.fix or ""))
            console.print(table)
        style = "bold red" if report.failed else "yellow" if report.warnings else "bold green"
        console.print(Text(f"verdict: {report.verdict}", style=style))
        console.print(Text(f"({report.elapsed_s:.1f} s; `airlab doctor --json` for every fact)", style="dim"))
        return
    width = max((len(c.id) for cs in groups.values() for c in cs), default=20)
    for s, checks in groups.items():
        console.print(f"# {TITLES.get(s, s)}", highlight=False, markup=False)
        for c in checks:
            console.print(f"{c.status:<4}  {c.id:<{width}}  {c.summary}", highlight=False, markup=False)
            if c.fix and c.status != "ok":
                console.print(f"{'':<4}  {'':<{width}}  fix: {c.fix}", highlight=False, markup=False)
    console.print(f"verdict: {report.verdict} ({report.elapsed_s:.1f} s)", highlight=False, markup=False)


def doctor(
    json_out: bool = typer.Option(False, "--json", help="print every fact and check as JSON"),
    deep: bool = typer.Option(False, "--deep", help="bigger matmuls, bf16 and a cuDNN convolution on every GPU"),
    backend: str = typer.Option("all", "--backend", help="torch, tensorflow or all"),
    timeout: float = typer.Option(30.0, "--timeout", help="seconds each framework probe may take before it "
                                                          "counts as hung", min=1),
) -> None:
    """Check the machine: system, NVIDIA GPUs and driver, CUDA libraries, PyTorch and TensorFlow.

    Every check has a stable id, a status (ok, warn, fail, skip), one line and a fix. Exit 0 when
    nothing fails, 4 when any check fails.

    Example: airlab doctor --backend torch
    """
    from airlab.doctor import core

    backends = parse_backends(backend)
    report = core.run_doctor(backends=backends, deep=deep, explicit=backend.strip().lower() != "all",
                             timeout=timeout)
    if json_out:
        print_json(report.to_dict())
    else:
        render(report)
    if report.failed:
        raise EnvironmentProblem(
            f"doctor: {len(report.failed)} check{'s' if len(report.failed) > 1 else ''} failed: "
            + ", ".join(c.id for c in report.failed),
            hint="each failing check names its fix" + ("" if json_out else " above")
                 + "; `airlab setup --dry-run` plans the framework wheels for this machine")
