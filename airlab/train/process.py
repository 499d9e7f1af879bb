"""The process role of a run: which process this is (rank, world size, is-main), which process
writes, and how the processes of one run take the decisions they must share.

A run is one process today; a run of several (torchrun, tf.distribute) is the same run loop in
every process. The rules that keep such a run sane are kept here, in one place:

- **Only the main process writes.** Claiming and locking the run directory, config.yaml,
  env.json, status.json, metrics, checkpoints, samples and the summary are the main process's;
  the loop asks `role.is_main`, or runs the write through `role.on_main`, which also shares its
  outcome (the run directory's path, a checkpoint's path, or the failure) with every process.
- **Shared decisions are taken together.** Whether to stop (a signal, a closed output, early
  stopping), whether a step was non-finite or ran out of memory: every process asks the role at
  the same point of the loop (`any`, `max`, `agree`), and all of them act on the same answer.
  Nothing waits in a collective for a decision another process took alone.

The role is framework-free. The collectives it needs, an element-wise reduction of a few numbers
and a broadcast of a few bytes from the main process, are primitives a backend supplies (DESIGN
rule 2: torch.distributed and tf.distribute are imported only under airlab/backends/): the
`Collective` protocol below. One process needs none: `Local` answers every question itself.
"""

from __future__ import annotations

import json
import signal
from typing import Any, Callable, Protocol, Sequence

from airlab.errors import EXIT_UNEXPECTED, AirlabError, ConfigError, EnvironmentProblem, MainFailed

MAIN = 0  # the rank of the main process: the one that writes


class Collective(Protocol):
    """What a backend supplies for a run of several processes (e.g. over torch.distributed with
    gloo or nccl, or tf.distribute). Every process calls each method at the same point, in the
    same order; a process that dies ends the others' calls with an error (the backend's timeout),
    never a hang."""

    rank: int  # 0 .. world_size - 1; rank 0 is the main process
    world_size: int

    def all_reduce(self, values: Sequence[float], op: str) -> list[float]:
        """The element-wise reduction of `values` over every process; `op` is "sum", "max" or
        "min". A few numbers (float64 on the wire: integers up to 2**53 are exact)."""

    def broadcast(self, data: bytes) -> bytes:
        """The main process's `data` on every process (what the others pass is ignored)."""

    def gather(self, data: bytes) -> list[bytes] | None:
        """Every process's `data`, in rank order, on the main process; None on the others."""

    # optional: `close(ok: bool)`, called once when the run ends in this process (ok: every process
    # reached the end together): a collective that made its process group takes it down


class Local:
    """The role of a run of one process: rank 0 of 1, the main process; every decision is its own."""

    rank = MAIN
    world_size = 1
    is_main = True

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def max(self, values: Sequence[float]) -> list[float]:
        return list(values)

    def sum(self, values: Sequence[float]) -> list[float]:
        return list(values)

    def mean(self, metrics: dict[str, float]) -> dict[str, float]:
        return dict(metrics)

    def agree(self, value: Any) -> Any:
        return value

    def gather(self, value: Any) -> list[Any]:
        return [value]

    def barrier(self) -> None:
        pass

    def on_main(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        return fn(*args, **kwargs)

    def close(self, ok: bool) -> None:
        pass

    def __repr__(self) -> str:
        return "Local()"


class Group:
    """The role of one process of several, on a backend's `Collective`."""

    def __init__(self, collective: Collective):
        self.collective = collective
        self.rank = int(collective.rank)
        self.world_size = int(collective.world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"Expected 0 <= rank < world_size. Received: rank={self.rank}, "
                             f"world_size={self.world_size}")

    @property
    def is_main(self) -> bool:
        return self.rank == MAIN

    def any(self, flag: bool) -> bool:
        """True on every process when `flag` is true on any of them."""
        return self.collective.all_reduce([1.0 if flag else 0.0], "max")[0] > 0

    def max(self, values: Sequence[float]) -> list[float]:
        """The element-wise maximum over every process: several flags or codes in one collective."""
        return list(self.collective.all_reduce([float(v) for v in values], "max"))

    def sum(self, values: Sequence[float]) -> list[float]:
        """The element-wise sum over every process (float64: exact for float32 values and zeros)."""
        return list(self.collective.all_reduce([float(v) for v in values], "sum"))

    def mean(self, metrics: dict[str, float]) -> dict[str, float]:
        """The mean over every process of each metric (every process has the same keys): each
        process's mean over an equal share of the batches is the mean over the whole batches."""
        keys = sorted(metrics)
        totals = self.sum([metrics[k] for k in keys])
        return {k: v / self.world_size for k, v in zip(keys, totals)}

    def agree(self, value: Any) -> Any:
        """The main process's `value` (JSON data: None, numbers, strings, lists, dicts) on every process."""
        data = json.dumps(value).encode("utf-8") if self.is_main else b""
        return json.loads(self.collective.broadcast(data).decode("utf-8"))

    def gather(self, value: Any) -> list[Any] | None:
        """Every process's `value` (JSON data), in rank order, on the main process; None elsewhere."""
        parts = self.collective.gather(json.dumps(value).encode("utf-8"))
        return None if parts is None else [json.loads(p.decode("utf-8")) for p in parts]

    def barrier(self) -> None:
        self.collective.all_reduce([0.0], "sum")

    def on_main(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Run `fn` on the main process only and give its result (JSON data) to every process.
        When it fails there, the main process raises its own error and every other process a
        `MainFailed` with the same exit code: no process goes on alone, none waits for ever."""
        if not self.is_main:
            outcome = self.agree(None)
            if outcome["ok"]:
                return outcome["value"]
            raise MainFailed(outcome["message"], outcome["hint"], outcome["exit_code"])
        try:
            value = fn(*args, **kwargs)
        except BaseException as e:
            self.agree(_failure(e))
            raise
        self.agree({"ok": True, "value": value})
        return value

    def close(self, ok: bool) -> None:
        """The run has ended in this process: the backend's collective takes down the process group
        it made, if any (after a last barrier when every process ended well), so that no process
        exits with the group's threads still running."""
        close = getattr(self.collective, "close", None)
        if close is not None:
            close(ok)

    def __repr__(self) -> str:
        return f"Group(rank={self.rank}, world_size={self.world_size})"


Role = Local | Group


def _failure(e: BaseException) -> dict:
    """An exception as data every process can read: its first line, hint and exit code."""
    if isinstance(e, AirlabError):
        message, hint, code = e.message, e.hint, e.exit_code
    elif isinstance(e, KeyboardInterrupt):
        message, hint, code = "interrupted", None, 128 + signal.SIGINT
    elif hasattr(e, "signum"):  # airlab.signals.SignalReceived
        message, hint, code = f"{signal.Signals(e.signum).name} received", None, 128 + int(e.signum)
    else:
        message, hint, code = f"{type(e).__name__}: {e}", None, EXIT_UNEXPECTED
    first = (str(message).splitlines() or [""])[0]
    return {"ok": False, "message": first, "hint": hint, "exit_code": code}


LAUNCHED_ENV = "AIRLAB_NPROC"  # set by `airlab train --nproc N` (PyTorch) for the processes it starts
TIMEOUT_ENV = "AIRLAB_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0  # how long a collective waits for a process that does not answer


def collective_timeout_s(env=None) -> float:
    """AIRLAB_DIST_TIMEOUT: seconds every backend's collectives wait for a process that does not
    answer before they fail (ProcessLost); 300 when unset."""
    import os

    raw = (os.environ if env is None else env).get(TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds") from None
    if not value > 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return value


def launcher_int(name: str, default: int | None = None) -> int | None:
    """An integer a launcher sets (RANK, WORLD_SIZE, LOCAL_RANK); `default` when unset."""
    import os

    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise EnvironmentProblem(f"{name}={raw!r}: expected an integer (set by the launcher, e.g. torchrun)") from None


def env_rank() -> int:
    """This process's rank as its launcher's variables give it, before any process group exists:
    RANK (torchrun, srun torchrun, Kubeflow, Ray) or TF_CONFIG's task index (tf.distribute); 0 when
    none is set. The CLI uses it to print an error every process hits alike only once."""
    import os

    raw = os.environ.get("RANK")
    if raw is not None and raw.strip().isdigit():
        return int(raw)
    tf_config = os.environ.get("TF_CONFIG")
    if tf_config:
        try:
            parsed = json.loads(tf_config)
            task = parsed.get("task") or {}
            index = int(task.get("index", 0))
        except (ValueError, TypeError, AttributeError):
            return 0
        if task.get("type") == "chief":
            return 0
        return index + (1 if "chief" in (parsed.get("cluster") or {}) else 0)
    return 0


def role_for(backend_cls, config) -> Local | Group:
    """The role of this process in a run of `config` on `backend_cls`: a Group when the backend
    finds this process is one of several (its `collective(config)` returns a Collective of more
    than one process: started by torchrun, or with TF_CONFIG), else Local."""
    make = getattr(backend_cls, "collective", None)
    collective = make(config) if make is not None else None
    if collective is None or int(collective.world_size) == 1:
        return Local()
    return Group(collective)


__all__ = ["Collective", "Group", "Local", "MAIN", "MainFailed", "Role", "env_rank", "role_for"]
