"""Signals, the same way in every command: SIGINT, SIGTERM and SIGHUP stop airlab with exit
128 + the signal (130, 143, 129) and one `error: interrupted` line, at any moment of any command.

The CLI installs `raise_on_signal` before it imports anything heavy. It raises `SignalReceived`,
a BaseException that is not a KeyboardInterrupt: Typer turns a KeyboardInterrupt into a bare
exit 130 (losing which signal it was), and no `except Exception` on the way holds it up. A signal
that the process was started with ignored (`nohup`, a background job without job control) stays
ignored. The training loop installs its own handlers while it trains (finish the step, save, then
stop) and puts these back afterwards.
"""

from __future__ import annotations

import signal

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SignalReceived(BaseException):
    """A stopping signal arrived; the error boundary turns it into exit 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def raise_on_signal(signum, frame) -> None:
    raise SignalReceived(signum)


def install(handler=raise_on_signal) -> dict:
    """Install `handler` for every stopping signal the process does not ignore; return the old
    handlers (for `restore`)."""
    old = {}
    for sig in HANDLED:
        try:
            current = signal.getsignal(sig)
            if current is signal.SIG_IGN:
                continue  # started under nohup, or as a background job: it stays ignored
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            break
    return old


def restore(old: dict) -> None:
    for sig, handler in old.items():
        signal.signal(sig, handler)


def exit_code(signum: int) -> int:
    return 128 + int(signum)
