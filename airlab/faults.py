"""Fault injection for the reliability tests: `AIRLAB_FAULT` names faults to stage in a run.

    AIRLAB_FAULT=kill_at_step:K          SIGKILL this process right after optimizer step K
    AIRLAB_FAULT=kill_in_save:K:I        SIGKILL while saving checkpoint K, after its I-th file (from 1)
    AIRLAB_FAULT=nan_at_step:K           the loss of step K becomes NaN
    AIRLAB_FAULT=inf_grad_at_step:K      a gradient of step K becomes +Inf
    AIRLAB_FAULT=oom_at_batch:B          every training step with a micro-batch larger than B runs out of memory
    AIRLAB_FAULT=fail_write_at_save:K    writing checkpoint K fails with "No space left on device"
    AIRLAB_FAULT=signal_at:PHASE:S       send signal S (2, 15, 1) to this process when the run reaches
                                         PHASE: start (directory claimed, before the data), built (data
                                         and model ready), finish (after the last step, before the final
                                         evaluation), summary (before summary.json is written)

Several faults are separated by commas. Steps count from 1 (the step that `metrics.jsonl` shows).
In a run of several processes every process stages them, unless AIRLAB_FAULT_RANK=R names the one
process (by its rank) that does: a single rank that dies, runs out of memory or meets a NaN. A
group that torchrun's elastic agent restarted (--max-restarts) stages none: the fault happened once.
Nothing here runs unless the variable is set; a malformed value is a usage error.
"""

from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass, field

from airlab.errors import UsageError

ENV = "AIRLAB_FAULT"
RANK_ENV = "AIRLAB_FAULT_RANK"
_ARITY = {"kill_at_step": 1, "kill_in_save": 2, "nan_at_step": 1, "inf_grad_at_step": 1, "oom_at_batch": 1,
          "fail_write_at_save": 1, "signal_at": 2}
PHASES = ("start", "built", "finish", "summary")


class FakeOutOfMemory(RuntimeError):
    """Raised by the `oom_at_batch` fault; backends treat it as their framework's OOM error."""


@dataclass
class Faults:
    specs: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def from_env(cls, value: str | None = None) -> "Faults":
        value = os.environ.get(ENV, "") if value is None else value
        if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0").strip() not in ("", "0"):
            value = ""  # a restarted group: the staged fault has happened
        only = os.environ.get(RANK_ENV, "").strip()
        if only:
            from airlab.train.process import env_rank

            if not only.isdigit():
                raise UsageError(f"{RANK_ENV}: expected a rank (0, 1, ...), got {only!r}")
            if int(only) != env_rank():
                value = ""  # another process's faults
        specs: dict[str, tuple[int, ...]] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, *args = item.split(":")
            if name == "signal_at" and args and args[0] in PHASES:
                args = [str(PHASES.index(args[0])), *args[1:]]
            if name not in _ARITY or len(args) != _ARITY[name] or not all(a.isdigit() for a in args):
                raise UsageError(f"{ENV}: cannot read {item!r}",
                                 hint="expected one of: " + ", ".join(
                                     f"{n}:{':'.join(['N'] * k)}" for n, k in _ARITY.items() if n != "signal_at")
                                 + ", signal_at:PHASE:S (PHASE one of " + ", ".join(PHASES) + ")")
            specs[name] = tuple(int(a) for a in args)
        return cls(specs)

    def __bool__(self) -> bool:
        return bool(self.specs)

    def _is(self, name: str, *args: int) -> bool:
        return self.specs.get(name) == args

    # hooks -----------------------------------------------------------------------------------
    def after_step(self, step: int) -> None:
        if self._is("kill_at_step", step):
            os.kill(os.getpid(), signal.SIGKILL)

    def at(self, phase: str) -> None:
        spec = self.specs.get("signal_at")
        if spec is not None and PHASES[spec[0]] == phase:
            os.kill(os.getpid(), spec[1])

    def nan_loss(self, step: int) -> bool:
        return self._is("nan_at_step", step)

    def inf_grad(self, step: int) -> bool:
        return self._is("inf_grad_at_step", step)

    def check_batch(self, batch_size: int) -> None:
        limit = self.specs.get("oom_at_batch")
        if limit is not None and batch_size > limit[0]:
            raise FakeOutOfMemory(f"injected out of memory at micro-batch {batch_size} (oom_at_batch:{limit[0]})")

    def during_save(self, step: int, files_written: int) -> None:
        spec = self.specs.get("kill_in_save")
        if spec is not None and spec[0] == step and files_written == spec[1]:
            os.kill(os.getpid(), signal.SIGKILL)
        if self._is("fail_write_at_save", step):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected: fail_write_at_save)")


NONE = Faults()
