"""The console script's entry: installs the signal handlers before anything heavy is imported,
so a Ctrl-C in the first moments of `airlab ...` is `error: interrupted` and exit 130, never a
traceback (Typer, rich and the commands take a few hundred milliseconds to import)."""

from __future__ import annotations

import os
import sys

from airlab import signals


def main() -> None:
    signals.install()
    try:
        from airlab.cli.main import run

        code = run(sys.argv[1:])
    except signals.SignalReceived as e:  # before (or as) the CLI's own boundary was in place
        if os.environ.get("RANK", "0").strip() in ("", "0"):  # one line for a run of several processes
            sys.stderr.write(f"error: interrupted ({e.name})\n")
        sys.exit(signals.exit_code(e.signum))
    # the command has ended and said so: a signal while Python shuts down (a launcher stopping
    # every process of a run, say) ends the process with this code, not with a traceback
    signals.install(lambda signum, frame: os._exit(code))
    sys.exit(code)
