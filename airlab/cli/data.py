"""`airlab data inspect CONFIG [KEY=VALUE ...]`: the data as training would load it, described."""

from __future__ import annotations

from pathlib import Path

import typer

from airlab.cli.common import human_bytes, out, print_json

app = typer.Typer(
    name="data",
    help="Look at the data a config trains on, before training.\n\n"
         "Example: airlab data inspect configs/cnn.yaml data.name=shapes",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _num(v) -> str:
    if v is None:
        return "?"
    return f"{v:,}" if isinstance(v, int) else f"{v:.4g}"


def _range(r: dict | None, rows: str) -> str:
    if r is None:
        return "empty"
    what = (f"{r['rows']:,} of {r['of']:,} {rows} sampled" if r["sampled"]
            else f"all {r['of']:,} {rows}" if r["of"] != 1 else f"its 1 {rows[:-1]}")
    bad = f", {r['nonfinite']:,} non-finite" if r["nonfinite"] else ""
    return f"{_num(r['min'])} .. {_num(r['max'])} ({what}{bad})"


def _facts(report: dict) -> list[tuple[str, str]]:
    """(key, value) lines of the report, in the order people read them."""
    unit = report["unit"]
    lines = [("data", f"{report['dataset']} ({report['kind']} data), read by model {report['model']} "
                      f"(reads {', '.join(report['model_reads'])})"),
             ("source", report["source"] or "?"),
             ("splits", " · ".join(f"{name} {s['count']:,}" for name, s in report["splits"].items()) + f" {unit}")]
    if report["kind"] != "text":
        lines.append(("sample", "shape " + "x".join(str(d) for d in report["sample_shape"])))
    lines.append(("stored", report["stored"]))
    rows = "tokens" if report["kind"] == "text" else "rows"
    lines.append(("values", " · ".join(f"{name} {_range(s['value_range'], rows)}"
                                       for name, s in report["splits"].items())))
    text = report["text"]
    if text:
        lines.append(("text", f"{text['tokenizer']} tokenizer, vocabulary {text['vocab_size']:,}"
                      + (" (a token is a character)" if text["tokenizer"] == "char" else "")))
        if text.get("split_characters"):
            lines.append(("characters", " · ".join(f"{k} {v:,}" for k, v in text["split_characters"].items())
                          + (f" (of {text['files']:,} file(s))" if text.get("files") else "")))
        elif text.get("characters") is not None:
            lines.append(("characters", f"{text['characters']:,}"))
    feats = report["features"]
    if feats:
        cols = []
        for c in feats["columns"]:
            kind = c.get("kind")
            cols.append(c["name"] + (f" (one-hot, {len(c.get('categories') or []):,} categories)"
                                     if kind == "categorical" else ""))
        lines.append(("features", f"{len(feats['columns']):,} column(s) -> {feats['width']:,} inputs"
                      + (f": {', '.join(cols)}" if cols else "") + f"; label column {feats['label']!r}"))
    classes = report["classes"]
    if classes:
        parts = []
        for name, b in classes["balance"].items():
            ratio = "a class is empty" if b["ratio"] is None else f"{b['ratio']:.1f}x"
            parts.append(f"{name} {ratio}" + (" (imbalanced)" if b["imbalanced"] else ""))
        lines.append(("classes", f"{classes['num_classes']:,}; largest/smallest: " + " · ".join(parts)))
    size = human_bytes(report["bytes"]) + (f" ({report['bytes']:,} bytes)" if report["bytes"] >= 1024 else "")
    lines.append(("storage", f"{report['storage']}, {size}"))
    p = report["placement"]
    lines.append(("placement", f"{p['path']} on device {p['device']}: {p['reason']}"
                  + (f" ({p['free_unknown_because']})" if p["free_unknown_because"] else "")))
    if report["kind"] == "image":
        a = report["augment"]
        lines.append(("augment", "none" if a is None else
                      ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in a.items())))
        n = report["normalize"]
        lines.append(("normalize", "none" if n is None else "requested, not applied (no mean and std)"
                      if not n["applied"] else "(x - mean) / std with the training split's mean "
                      + ", ".join(f"{v:.4f}" for v in n["mean"]) + "; std " + ", ".join(f"{v:.4f}" for v in n["std"])))
    g = report.get("grid")
    if g:
        left = f", {g['classes_left_out']:,} more classes left out" if g["classes_left_out"] else ""
        shown = (f", shown rescaled from {_num(g['display_rescaled_from'][0])}..{_num(g['display_rescaled_from'][1])}"
                 if g["display_rescaled_from"] else "")
        lines.append(("grid", f"wrote {g['path']} (rows, top to bottom: {', '.join(g['rows'])}{left}{shown})"))
    return lines


def _class_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """The split names, and a row per class: its name, then `count (share)` per split, aligned."""
    classes = report["classes"]
    splits = list(classes["counts"])
    counts = {s: [f"{v:,}" for v in classes["counts"][s]] for s in splits}
    shares = {s: [f"{v:.1%}" for v in classes["share"][s]] for s in splits}
    wc = {s: max(map(len, counts[s]), default=0) for s in splits}
    ws = {s: max(map(len, shares[s]), default=0) for s in splits}
    rows = []
    for i, name in enumerate(classes["names"]):
        rows.append([name] + [f"{counts[s][i]:>{wc[s]}} ({shares[s][i]:>{ws[s]}})" for s in splits])
    return splits, rows


def render(report: dict, console=None) -> None:
    """Rich tables on a terminal; plain `key: value` lines otherwise."""
    console = console or out
    facts, notes = _facts(report), report["notes"]
    if console.is_terminal:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"data: {report['dataset']}", title_justify="left", show_header=False)
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column("value")
        for key, value in facts:
            table.add_row(Text(key), Text(value))
        console.print(table)
        if report["classes"]:
            splits, rows = _class_rows(report)
            classes = Table(title="examples per class (share of the split)", title_justify="left")
            classes.add_column("class")
            for s in splits:
                classes.add_column(s, justify="right")
            for row in rows:
                classes.add_row(*(Text(v) for v in row))
            console.print(classes)
        for note in notes:
            console.print(Text(f"note: {note}", style="yellow"))
        return
    for key, value in facts:
        console.print(f"{key}: {value}", highlight=False, markup=False)
    if report["classes"]:
        splits, rows = _class_rows(report)
        width = max(len(r[0]) for r in rows)
        console.print("per class (share of the split):", highlight=False, markup=False)
        for row in rows:
            cells = [f"{s} {v}" for s, v in zip(splits, row[1:])]
            console.print(f"  {row[0]:<{width}}  " + "  ".join(cells), highlight=False, markup=False)
    for note in notes:
        console.print(f"note: {note}", highlight=False, markup=False)


@app.callback(invoke_without_command=True)
def data(ctx: typer.Context) -> None:
    """Look at the data a config trains on, before training."""
    if ctx.invoked_subcommand is None:  # `airlab data` alone: its help, as `airlab` alone prints its own
        out.print(ctx.get_help(), highlight=False, markup=False)
        raise typer.Exit(0)


@app.command("inspect")
def inspect(
    config: Path = typer.Argument(..., help="YAML config file"),
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. data.name=folder data.path=DIR"),
    grid: Path = typer.Option(None, "--grid", "-o",
                              help="images: where to write the PNG grid of examples (a row per class) "
                                   "[default: ./<config name>-data.png]"),
    no_grid: bool = typer.Option(False, "--no-grid", help="write no grid"),
    json_out: bool = typer.Option(False, "--json", help="print everything as one JSON object"),
) -> None:
    """Load the data as `airlab train` would and describe it: counts per split and class, class
    balance, sample shape, stored dtype, value range (sampled on large splits), vocabulary or
    features, the cache, the size and whether training takes the fast path or streams on the
    config's device, the augmentation and normalisation. For images, also writes a PNG grid of the
    first training examples of each class (a row per class) and prints its path.

    Example: airlab data inspect configs/cnn.yaml data.name=shapes
    """
    from airlab.config import load_config
    from airlab.data.inspect import inspect as do_inspect
    from airlab.errors import UsageError

    if "=" in config.name and not config.exists():
        raise UsageError(f"{config}: expected the CONFIG file first, then KEY=VALUE overrides",
                         hint="example: airlab data inspect configs/cnn.yaml data.name=shapes")
    cfg = load_config(config, list(overrides or []))
    target = None if no_grid else (grid if grid is not None else Path(f"{config.stem}-data.png"))
    report = do_inspect(cfg, grid=target)
    report = {"config": str(config), **report}
    if json_out:
        print_json(report)
        return
    render(report)
