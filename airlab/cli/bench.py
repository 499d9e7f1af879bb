"""`airlab bench`: measure the machine's throughput and judge it against its limits."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from airlab.cli.common import err, invocation, out, print_json
from airlab.errors import UsageError

_MARK = {"throttled": "throttled", "interference": "interference"}


def _si(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if unit == "samples/s":
        return f"{value:,.0f} samples/s" if value >= 100 else f"{value:,.1f} samples/s"
    base = {"FLOP/s": "FLOP/s", "B/s": "B/s"}.get(unit, unit)
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:,.1f} {prefix}{base}"
    return f"{value:,.1f} {base}"


def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x * 100:.0f} %"


class _Lines:
    """Progress as plain lines on stderr (not a terminal, or --json)."""

    def __init__(self):
        self.total = 0
        self.done = 0

    def begin(self, total: int) -> None:
        self.total = total

    def start(self, label: str) -> None:
        if label.startswith("measuring"):
            err.print(f"bench: {label}", highlight=False, markup=False)

    def advance(self, figure=None, skipped=None) -> None:
        self.done += 1
        head = f"bench [{self.done}/{self.total}]"
        if figure is not None:
            pct = f", {_pct(figure.fraction_of_peak)} of peak" if figure.fraction_of_peak is not None else ""
            marks = f" [{', '.join(figure.marks)}]" if figure.marks else ""
            err.print(f"{head} {figure.name} on {figure.device} ({figure.backend}): {_si(figure.value, figure.unit)}{pct} "
                      f"({figure.verdict}){marks}", highlight=False, markup=False)
        elif skipped is not None:
            err.print(f"{head} skipped {skipped['what']}: {skipped['reason']}", highlight=False, markup=False)

    def end(self) -> None:
        pass


class _Bar(_Lines):
    """A rich progress bar on a terminal."""

    def begin(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        super().begin(total)
        self._p = Progress(TextColumn("[bold]bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           TextColumn("{task.description}"), console=err, transient=True)
        self._p.start()
        self._task = self._p.add_task("", total=total)

    def start(self, label: str) -> None:
        from rich.markup import escape

        if getattr(self, "_p", None) is not None:
            self._p.update(self._task, description=escape(label))
        else:
            err.print(f"bench: {label}", highlight=False, markup=False)

    def advance(self, figure=None, skipped=None) -> None:
        self.done += 1
        if getattr(self, "_p", None) is not None:
            self._p.advance(self._task)

    def end(self) -> None:
        if getattr(self, "_p", None) is not None:
            self._p.stop()
            self._p = None


def _detail(f) -> str:
    w = f.work
    if f.suite == "matmul":
        shapes = f.detail.get("shapes", [])
        m, n, k = w["m"], w["n"], w["k"]
        shape = f"{m}^3" if m == n == k else f"{m}x{n}x{k}"
        return f"best {shape} of {len(shapes)}" if len(shapes) > 1 else shape
    if f.suite == "memory":
        return f"{w['buffer_bytes'] / 2**20:,.0f} MiB"
    if f.suite == "training":
        return f"batch {w.get('batch_size')}"
    if f.suite == "interconnect":
        if "backend" in w:  # across processes: the size is in the name; say over what
            calls = w["calls_per_repeat"]
            return f"{w['backend']}, {calls} call{'' if calls == 1 else 's'}/repeat"
        return f"{w['buffer_bytes'] / 2**20:,.0f} MiB"
    return ""


def _results_table(report):
    from rich.table import Table

    several = len({f.backend for f in report.figures}) > 1
    table = Table(title=f"airlab bench --{report.suite}", title_justify="left")
    cols = [("figure", "left"), ("size", "left"), ("device", "left")] + ([("backend", "left")] if several else []) \
        + [("value", "right"), ("% of peak", "right"), ("verdict", "left"), ("spread", "right"), ("marks", "left")]
    for col, just in cols:
        table.add_column(col, justify=just, no_wrap=col != "marks")
    style = {"ok": "green", "low": "yellow", "suspicious": "bold red", "n/a": "dim"}
    last = None
    for f in report.figures:
        if last is not None and f.suite != last:
            table.add_section()
        last = f.suite
        spread = f.stats.get("spread") if f.stats else None
        row = [f.name, _detail(f), f.device] + ([f.backend] if several else []) + [
            _si(f.value, f.unit), _pct(f.fraction_of_peak), f"[{style[f.verdict]}]{f.verdict}[/]", _pct(spread),
            ", ".join(f.marks)]
        table.add_row(*row)
    return table


def _verify_table(report):
    from rich.table import Table

    table = Table(title="--verify: the bench's matmul beside a plain loop of the same shapes, same run "
                        "(medians; and fastest window / fastest round)", title_justify="left")
    left = ("dtype", "device", "backend", "shape (MxNxK)")
    for col in (*left, "bench", "plain loop", "bench / plain", "best / best"):
        table.add_column(col, justify="left" if col in left else "right")
    for f in report.figures:
        for row in f.detail.get("shapes", []):
            plain = row.get("plain")
            if plain:
                table.add_row(f.work.get("dtype", ""), f.device, f.backend, f"{row['m']}x{row['n']}x{row['k']}",
                              _si(row["value"], "FLOP/s"), _si(plain["value"], "FLOP/s"),
                              f"{plain['ratio_bench_to_plain']:.3f}", f"{plain.get('ratio_best', float('nan')):.3f}")
    return table


def _compare_table(comparison: dict):
    from rich.table import Table

    several = len({r.get("backend") for r in comparison["rows"]}) > 1
    table = Table(title=f"change: {comparison['before']}  ->  {comparison['after']}", title_justify="left")
    for col in ("figure", "device") + (("backend",) if several else ()) + ("before", "now", "change", ""):
        table.add_column(col, justify="right" if col in ("before", "now", "change") else "left")
    style = {"slower": "yellow", "faster": "green", "same": "dim", "?": "red"}
    for r in comparison["rows"]:
        change = r["change"]
        table.add_row(r["name"], r["device"], *([r.get("backend", "")] if several else []),
                      _si(r["before"], r["unit"]), _si(r["after"], r["unit"]),
                      "-" if change is None else f"{change * 100:+.1f} %",
                      f"[{style[r['status']]}]{r['status']}[/]" + (f" ({', '.join(r['marks'])})" if r["marks"] else ""))
    return table


def _print_comparison(comparison: dict) -> None:
    _wide(_compare_table(comparison))
    for key, label in (("only_before", "only in the earlier result"), ("only_after", "only in this result")):
        if comparison[key]:
            out.print(f"{label}: {', '.join(comparison[key])}", highlight=False, markup=False)
    out.print(f"(changes within {comparison['tolerance']:.0%} count as the same: these machines are noisy)",
              highlight=False, markup=False)


def _wide(renderable) -> None:
    """Tables at least 120 columns wide when stdout is not a terminal (rich assumes 80)."""
    if out.is_terminal:
        out.print(renderable)
        return
    from airlab.cli.common import PipeConsole

    PipeConsole(width=max(out.width, 132)).print(renderable)


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:,.0f} us"
    return f"{seconds * 1e3:,.2f} ms" if seconds < 1 else f"{seconds:,.2f} s"


def _allreduce_table(allreduce: dict):
    from rich.table import Table

    from airlab.bench.collective import human_size

    n = allreduce["world_size"]
    table = Table(title=f"all-reduce across {n} processes ({allreduce['backend']} on {allreduce['device']}), "
                        "fp32 sum", title_justify="left")
    for col in ("size", "time", "algbw", "busbw", "slowest rank", "its median", "behind the median"):
        table.add_column(col, justify="left" if col == "size" else "right")
    for row in allreduce["sizes"]:
        slow = row["slowest"]
        table.add_row(human_size(row["bytes"]), _duration(row["median_s"]), _si(row["algbw"], "B/s"),
                      _si(row["busbw"], "B/s"), f"rank {slow['rank']}", _duration(slow["median_s"]),
                      f"{slow['lag'] * 100:+.0f} %")
    return table


def _print_allreduce(report) -> None:
    """The all-reduce across processes, or the line saying why there is none."""
    from airlab.bench.collective import ONE_PROCESS, human_size

    a = report.allreduce
    if a is None:
        if not any(f.suite == "interconnect" for f in report.figures):
            out.print(f"all-reduce: {ONE_PROCESS}", highlight=False, markup=False)
        return
    _wide(_allreduce_table(a))
    out.print(f"busbw = algbw x 2(n-1)/n with algbw = size / time (nccl-tests' definitions); time = median over "
              f"{a['repeats']} repeats of the slowest rank's time per all-reduce", highlight=False, markup=False)
    s = a["straggler"]
    what = "straggler" if s["straggler"] else "slowest rank"
    verdict = "" if s["straggler"] else f"; within {_pct(s['tolerance'])}: no straggler"
    out.print(f"{what}: rank {s['rank']}, median {_duration(s['median_s'])} per all-reduce of "
              f"{human_size(s['bytes'])}, {_pct(s['lag'])} behind the median of {a['world_size']} ranks "
              f"({_duration(s['ranks_median_s'])}){verdict}", highlight=False, markup=False)
    out.print(f"reference: {a['reference']}", highlight=False, markup=False)


def _print_report(report, verify: bool) -> None:
    _wide(_results_table(report))
    _print_allreduce(report)
    cpu = report.host.get("cpu", {})
    for d in report.devices if report.allreduce is None else ():  # (no peaks in the all-reduce across processes)
        if d.get("kind") == "cpu" and cpu:
            peak = cpu.get("peak_flops", {})
            line = (f"cpu: {cpu.get('model_name')}, {cpu.get('cores_used')} cores, {cpu.get('isa')}; "
                    f"clock {cpu.get('clock_mhz') or 0:,.0f} MHz ({cpu.get('clock_source', '').split(':')[0]}); "
                    f"estimated peak fp32 {_si(peak.get('fp32'), 'FLOP/s')}, bf16 {_si(peak.get('bf16'), 'FLOP/s')}")
            out.print(line, highlight=False, markup=False)
        elif d.get("kind") == "gpu":
            entry = d.get("peak_table_entry") or "not in the peak table"
            out.print(f"{d['id']}: {d.get('name')} (peaks: {entry}), driver {d.get('driver', '?')}",
                      highlight=False, markup=False)
    conv = report.method["conventions"]
    if report.allreduce is None:
        out.print(f"bytes: {conv['copy']}; host<->device: {conv['host_device']}", highlight=False, markup=False)
    out.print("statistic: median of timed repeats; spread = inter-quartile range / median", highlight=False,
              markup=False)
    if verify:
        _wide(_verify_table(report))
    for line in report.findings:
        out.print(f"- {line}", highlight=False, markup=False)
    for s in report.skipped:
        out.print(f"skipped: {s['what']}: {s['reason']}", highlight=False, markup=False)
    out.print(f"wall time {report.wall_seconds:.1f} s", highlight=False, markup=False)


def bench(
    quick: bool = typer.Option(False, "--quick", help="the quick suite (the default): a few large shapes, short "
                                                      "windows; under 60 s on 2 CPU cores"),
    full: bool = typer.Option(False, "--full", help="the full suite: an M x N x K matmul sweep reporting the best "
                                                    "shape, longer windows, training on every selected device"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda:N, cuda (every GPU) or all (CPU and GPUs); "
                                                        "default: the GPUs if there are any, else the CPU"),
    backend: str = typer.Option("all", "--backend", help="torch, tensorflow, or all installed"),
    json_out: bool = typer.Option(False, "--json", help="print the full result as JSON on stdout "
                                                        "(progress goes to stderr)"),
    save: Path = typer.Option(None, "--save", help="write the full result as JSON to FILE"),
    compare: list[Path] = typer.Option(None, "--compare", help="show the change against an earlier result FILE; "
                                                               "given twice, compare two saved files without running"),
    verify: bool = typer.Option(False, "--verify", help="also time a plain framework matmul loop of every shape "
                                                        "and print both side by side"),
    nproc: int = typer.Option(None, "--nproc", min=1,
                              help="measure only the all-reduce bus bandwidth across N local processes (PyTorch: "
                                   "torchrun's launcher; gloo on the CPU, NCCL on GPUs, one GPU per process) and "
                                   "name the slowest rank"),
    sizes: str = typer.Option(None, "--sizes", help="with --nproc: the all-reduce's message sizes, e.g. "
                                                    "1KiB,1MiB,64MiB (default: 1 KiB to 8 MiB on the CPU, to 64 MiB "
                                                    "on GPUs; --full: to 64 MiB and 1 GiB)"),
) -> None:
    """Measure matmul FLOP/s (against the device's peak), memory bandwidth and training samples/s.

    Every figure gets a verdict (ok, low, or suspicious above 100 % of peak) and is marked when
    taken under throttling or interference from other processes.

    With --nproc N, the all-reduce across N processes instead (under torchrun, every process
    runs `airlab bench` and takes part).

    Example: airlab bench --quick --save bench.json
    """
    from airlab.bench import collective
    from airlab.bench import report as report_mod

    if quick and full:
        raise UsageError("--quick and --full exclude each other")
    compare = list(compare or [])
    if len(compare) > 2:
        raise UsageError(f"--compare takes one FILE (against this run) or two (against each other); got {len(compare)}")
    if len(compare) == 2:
        if save is not None:
            raise UsageError("--save needs a run; --compare given twice compares two files without running")
        if nproc is not None:
            raise UsageError("--nproc needs a run; --compare given twice compares two files without running")
        before, after = report_mod.load(compare[0]), report_mod.load(compare[1])
        comparison = report_mod.compare(before, after)
        if json_out:
            print_json({"comparison": comparison})
        else:
            _print_comparison(comparison)
        return
    collective.check_nproc(nproc, device=device, backend=backend, verify=verify, sizes=sizes)
    message_sizes = collective.parse_sizes(sizes) if sizes is not None else None
    before = report_mod.load(compare[0]) if compare else None

    from airlab.bench.runner import Options, check_options, run_bench

    options = Options(suite="full" if full else "quick", device=device, backend=backend, verify=verify,
                      argv=["airlab", *invocation()], sizes=message_sizes)
    check_options(options)
    if nproc is not None and nproc > 1:  # N processes, each running this bench without --nproc
        code = collective.launch(nproc, collective.argv_without(invocation(), ("--nproc",)), device=device)
        if code:
            raise typer.Exit(code)
        return
    progress = _Bar() if err.is_terminal and not json_out else _Lines()
    report = run_bench(options, progress)
    if report is None:  # a process other than rank 0 of a run of several: rank 0 reports
        return
    if save is not None:
        report_mod.save(report, save)
    comparison = report_mod.compare(before, report) if before is not None else None
    if json_out:
        data = report.to_json()
        if comparison is not None:
            data["comparison"] = comparison
        print_json(data)
        return
    _print_report(report, verify)
    if comparison is not None:
        _print_comparison(comparison)
    if save is not None:
        out.print(f"saved: {save}", highlight=False, markup=False)
