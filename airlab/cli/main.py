"""The root command: wires the subcommands and is the single error boundary.

Every AirlabError becomes one line on stderr (plus a hint) and its exit code; anything else is
an unexpected error (exit 1). Set AIRLAB_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import os
import sys
import warnings

import typer

from airlab import __version__
from airlab.cli import bench as bench_cmd
from airlab.cli import compare as compare_cmd
from airlab.cli import convert as convert_cmd
from airlab.cli import data as data_cmd
from airlab.cli import doctor as doctor_cmd
from airlab.cli import export as export_cmd
from airlab.cli import models as models_cmd
from airlab.cli import plot as plot_cmd
from airlab.cli import report as report_cmd
from airlab.cli import runs as runs_cmd
from airlab.cli import sample as sample_cmd
from airlab.cli import setup as setup_cmd
from airlab.cli import train as train_cmd
from airlab.cli import validate as validate_cmd
from airlab import signals
from airlab.errors import (EXIT_ENVIRONMENT, EXIT_PIPE, EXIT_SIGINT, EXIT_UNEXPECTED, EXIT_USAGE, AirlabError,
                           Reported, environment_cause, first_line)
from airlab.train.progress import silence_closed_output

app = typer.Typer(
    name="airlab",
    help="A research environment for deep learning: train classic models from YAML configs on PyTorch or TensorFlow, judge and fix the GPU stack, measure the machine.\n\n"
         "Example: airlab train configs/quickstart.yaml",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"airlab {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="print the version and exit")) -> None:
    """airlab: train, inspect and compare deep-learning models from YAML configs."""


app.command("train")(train_cmd.train)
app.command("validate")(validate_cmd.validate)
app.command("models")(models_cmd.models)
app.command("runs")(runs_cmd.runs)
app.command("plot")(plot_cmd.plot)
app.command("compare")(compare_cmd.compare)
app.command("report")(report_cmd.report)
app.command("export")(export_cmd.export)
app.command("sample")(sample_cmd.sample)
app.command("convert")(convert_cmd.convert)
app.command("doctor")(doctor_cmd.doctor)
app.command("setup")(setup_cmd.setup)
app.command("bench")(bench_cmd.bench)
app.add_typer(data_cmd.app, name="data")


def _debug() -> bool:
    return os.environ.get("AIRLAB_DEBUG", "") not in ("", "0", "false", "no")


def _not_main() -> bool:
    """Whether this is a process other than the main one of a run of several (its launcher's RANK)."""
    from airlab.train.process import env_rank

    return env_rank() != 0


def _said_by_main(e: AirlabError) -> bool:
    """In a run of several processes, an error every process meets alike (the config, the data,
    a signal, the main process's failure, a lost peer) is printed by the main process only; a
    process's own environment problem (its GPU, its disk) is printed by that process."""
    from airlab.errors import EnvironmentProblem, ProcessLost
    from airlab.train.process import env_rank

    if env_rank() == 0:
        return False
    return not isinstance(e, EnvironmentProblem) or isinstance(e, ProcessLost)


def _fail(message: str, hint: str | None, code: int, details: list[str] = ()) -> int:
    from airlab.cli.common import err

    from airlab.train.process import env_rank

    rank = env_rank()
    try:
        err.print(f"error: {'' if rank == 0 else f'process {rank}: '}{message}", highlight=False, markup=False)
        if hint:
            err.print(f"hint: {hint}", highlight=False, markup=False)
        for line in details:
            err.print(f"  {line}", highlight=False, markup=False)
    except OSError:  # stderr is gone too (a closed terminal, a closed pipe): the exit code still tells
        silence_closed_output(sys.stdout, sys.stderr)
    return code


_DEFAULT_SHOW = getattr(warnings, "_showwarnmsg_impl", None)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr (`warning: ...`), not Python's source-line format. Where a
    caller records warnings (`warnings.catch_warnings(record=True)`, as pytest does), it still
    receives them."""
    from airlab.cli.common import err
    from airlab.train.process import env_rank

    try:
        if env_rank() == 0:  # in a run of several processes the main process's warnings stand for all
            err.print(f"warning: {message}", highlight=False, markup=False)
    except OSError:
        pass
    recorder = getattr(warnings, "_showwarnmsg_impl", None)
    if recorder is not None and recorder is not _DEFAULT_SHOW:
        recorder(warnings.WarningMessage(message, category, filename, lineno, file, line))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (the seam the tests use)."""
    old_handlers = signals.install()
    old_showwarning = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return _run(argv)
    except signals.SignalReceived as e:  # while reporting an error
        return signals.exit_code(e.signum)
    except BrokenPipeError:  # stderr closed too, while reporting an error
        silence_closed_output(sys.stdout, sys.stderr)
        return EXIT_PIPE
    finally:
        warnings.showwarning = old_showwarning
        signals.restore(old_handlers)


def _run(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["--help"]
    try:
        # inside the try: a signal while the command tree is built is "interrupted" like any other
        from airlab.cli.common import set_invocation

        set_invocation(argv)
        command = typer.main.get_command(app)
        rv = command.main(args=argv, prog_name="airlab", standalone_mode=False)
        # Typer returns (does not raise) the code of a typer.Exit, and 130 for a KeyboardInterrupt
        code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        if code == EXIT_SIGINT:
            return EXIT_SIGINT if _not_main() else _fail("interrupted", None, EXIT_SIGINT)
        return code
    except signals.SignalReceived as e:  # every process of a run meets it: the main process says so
        if _not_main():
            return signals.exit_code(e.signum)
        return _fail(f"interrupted ({e.name})", None, signals.exit_code(e.signum))
    except AirlabError as e:
        if _debug():
            import traceback

            traceback.print_exc()
        if isinstance(e, Reported) or _said_by_main(e):
            return e.exit_code
        return _fail(e.message, e.hint, e.exit_code, e.details)
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        return _fail("aborted", None, EXIT_SIGINT)
    except typer.TyperException as e:  # usage errors: bad option, missing argument
        ctx_cmd = getattr(getattr(e, "ctx", None), "command_path", "airlab")
        return _fail(e.format_message(), f"see `{ctx_cmd} --help`", EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_SIGINT if _not_main() else _fail("interrupted", None, EXIT_SIGINT)
    except BrokenPipeError:  # the reader went away: stop quietly, as Unix tools do
        silence_closed_output()
        return EXIT_PIPE
    except Exception as e:  # the boundary: nothing unexpected escapes as a bare traceback
        if _debug():
            raise
        cause = environment_cause(e)
        if cause is not None:  # the machine refused a write: an environment problem, not a bug
            first = first_line(e, 300)
            return _fail(f"{cause} ({first})", "free disk space, raise the file size limit or fix permissions",
                         EXIT_ENVIRONMENT)
        return _fail(f"unexpected {type(e).__name__}: {e}",
                     "this is a bug in airlab or an unusual environment; rerun with AIRLAB_DEBUG=1 for the traceback",
                     EXIT_UNEXPECTED)


def main() -> None:
    from airlab.cli.entry import main as entry_main

    entry_main()
