"""Every expected failure is an AirlabError: one line for people, an exit code for scripts.

Exit codes (documented in the README):
    0 ok · 1 unexpected error · 2 usage or config error · 3 training diverged ·
    4 environment problem (backend missing, doctor failure) · 130 SIGINT · 141 output pipe closed ·
    143 SIGTERM
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_ENVIRONMENT = 4
EXIT_SIGINT = 130
EXIT_PIPE = 141  # 128 + SIGPIPE: the reader of our output went away
EXIT_SIGTERM = 143


class AirlabError(Exception):
    """Base of all expected failures. `message` says what and where, in one line; `hint` says
    what to do; `details` are further lines a person may need (file checksums, URLs tried),
    printed after the hint so the first line stays the whole story."""

    exit_code = EXIT_UNEXPECTED

    def __init__(self, message: str, hint: str | None = None, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = list(details or [])

    def __str__(self) -> str:
        return "\n".join([self.message, *self.details])


class UsageError(AirlabError):
    exit_code = EXIT_USAGE


class ConfigError(AirlabError):
    """A config problem. `problems` lists every problem found, each already located."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str] | str, hint: str | None = None):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} config problems:\n  " + "\n  ".join(self.problems)
        super().__init__(message, hint)


class DataError(AirlabError):
    """A dataset that cannot be found, read or verified."""

    exit_code = EXIT_USAGE


class EnvironmentProblem(AirlabError):
    """Something about the machine or installed packages (e.g. a backend not installed)."""

    exit_code = EXIT_ENVIRONMENT


class BackendUnavailable(EnvironmentProblem):
    pass


class ProcessLost(EnvironmentProblem):
    """Another process of a run of several stopped answering (it died, or its host or the network
    did): the collective it was to join failed or timed out. The survivors stop with this error;
    the newest checkpoint is whole (checkpoints are written between collectives)."""


class Reported(AirlabError):
    """A failure already reported where it happened (the processes a launcher started printed
    their own lines): the command exits with its code and prints nothing more."""

    def __init__(self, exit_code: int):
        super().__init__("")
        self.exit_code = int(exit_code)


class TrainingDiverged(AirlabError):
    exit_code = EXIT_DIVERGED


class CheckpointError(AirlabError):
    """A checkpoint that cannot be used (missing, corrupt, unsafe)."""

    exit_code = EXIT_USAGE


class OutputClosed(AirlabError):
    """The reader of airlab's output went away (`airlab train ... | head`); a training run saved
    a checkpoint first."""

    exit_code = EXIT_PIPE


class Interrupted(AirlabError):
    """Training stopped by a signal after saving a checkpoint."""

    def __init__(self, signum: int, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.exit_code = 128 + signum


class MainFailed(AirlabError):
    """What every other process of a run raises when a step the main process ran for all of them
    failed: the main process's message, with its exit code (the main process reports its own)."""

    def __init__(self, message: str, hint: str | None, exit_code: int):
        super().__init__(f"the main process stopped the run: {message}", hint)
        self.exit_code = int(exit_code)


# errno values that mean the machine, not airlab, refused a write: a full disk or quota, a file
# size limit, a read-only file system, permissions
_ENV_ERRNOS = {28: "no space left on the device", 122: "disk quota exceeded", 27: "file too large (a file size limit)",
               30: "read-only file system", 13: "permission denied", 1: "operation not permitted",
               20: "a path component is not a directory", 5: "input/output error", 0: "a write failed"}
# the frameworks' writers wrap the OS error in their own exception and text
_ENV_TEXT = (("no space left", 28), ("os error 28", 28), ("storagefull", 28), ("file write failed", 0),
             ("quota exceeded", 122), ("file too large", 27), ("os error 27", 27), ("filetoolarge", 27),
             ("read-only file system", 30), ("os error 30", 30), ("readonlyfilesystem", 30),
             ("permission denied", 13), ("os error 13", 13))


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's first line of text (its type's name when it has none), at most `limit` long."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def environment_cause(exc: BaseException) -> str | None:
    """Why a write failed, when the cause is the machine (disk full, file size limit, read-only,
    permissions), as a few words; None when the exception says nothing of the kind. Looks at
    OSError's errno and, for the frameworks' own writer exceptions (torch's RuntimeError from its
    zip writer, safetensors' SafetensorError), at their text."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _ENV_ERRNOS:
            where = f": {exc.filename}" if exc.filename else ""
            return _ENV_ERRNOS[exc.errno] + where
        text = str(exc).lower().replace(" ", "") if not isinstance(exc, OSError) else ""
        for needle, code in _ENV_TEXT:
            if needle.replace(" ", "") in text:
                return _ENV_ERRNOS[code]
        exc = exc.__cause__ or exc.__context__
    return None
