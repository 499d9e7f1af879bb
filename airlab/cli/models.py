"""`airlab models [PATTERN]`: the registered models, without importing any framework."""

from __future__ import annotations

import typer

from airlab.cli.common import out, print_json


def models(
    pattern: str = typer.Argument("*", help="glob or substring of model names, e.g. '*vae*'"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """List registered models: task, backends and parameter count at default settings.

    A pattern that matches no model is a usage error (exit 2), with --json too.

    Example: airlab models '*vae*'
    """
    from airlab import registry
    from airlab.errors import UsageError

    entries = registry.list_models(pattern)
    if not entries:  # a typo must not pass for "no such model, all is well" (exit 0), in --json too
        names = registry.model_names()
        suggestion = registry.close_matches(pattern.strip("*"), names)
        raise UsageError(f"no model matches {pattern!r}" + (f"; {suggestion}" if suggestion else ""),
                         hint=f"known models: {', '.join(names)} (a bare word matches as a substring, "
                              "or give a glob such as '*vae*')")
    rows = []
    for entry in entries:
        spec_cls = registry.spec_class(entry.name)
        spec = spec_cls()
        rows.append({"name": entry.name, "task": entry.task, "backends": entry.backends,
                     "params": spec.num_params(spec_cls.default_data), "description": entry.description})
    if json_out:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="airlab models")
    for col in ("name", "task", "backends", "params (defaults)", "description"):
        table.add_column(col, justify="right" if col.startswith("params") else "left")
    for r in rows:
        table.add_row(r["name"], r["task"], ", ".join(r["backends"]), f"{r['params']:,}", r["description"])
    out.print(table)
