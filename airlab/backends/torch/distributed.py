"""PyTorch across processes: torch.distributed, started by torchrun (or `airlab train --nproc N`,
which starts torchrun's own launcher), by `srun torchrun`, a Kubeflow TrainJob or Ray Train.

A process is one of several when the launcher's standard variables say so (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), or when a process group already exists (Ray Train creates
one before it calls the training function): then it joins that group (or uses the existing one
as is) with gloo on CPU and nccl on CUDA, one device per local rank.

The run loop's shared decisions (airlab.train.process) travel over a gloo group as float64
tensors on the CPU, also when the gradients travel over nccl: they are a few numbers, and gloo
gives every collective a timeout, so a process that dies or hangs ends the others' waits with
`ProcessLost` instead of a hang. Nothing is pickled: bytes travel as uint8 tensors.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Sequence

import torch
import torch.distributed as dist

from airlab.errors import EnvironmentProblem, ProcessLost
from airlab.train.process import collective_timeout_s, launcher_int

_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
timeout_s = collective_timeout_s  # AIRLAB_DIST_TIMEOUT (airlab.train.process)


def launched_world_size() -> int:
    """The world size the launcher's variables name (1 when none do)."""
    return launcher_int("WORLD_SIZE") or 1


def local_rank() -> int:
    return launcher_int("LOCAL_RANK") or 0


def _wants_cuda(config) -> bool:
    device = str(config.device)
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def join(config) -> "TorchCollective | None":
    """This process's collective when it is one of several processes of a run, else None.
    Joins the launcher's process group (env:// rendezvous) unless one exists already."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() == 1:
            return None
        return TorchCollective.over(dist.group.WORLD)
    world = launched_world_size()
    if world <= 1:
        return None
    missing = [v for v in _LAUNCH_VARS if not os.environ.get(v)]
    if missing:
        raise EnvironmentProblem(f"WORLD_SIZE={world} but {', '.join(missing)} is not set: this process cannot "
                                 "join the others", hint="start the run with torchrun (or airlab train --nproc N)")
    if not dist.is_available():
        raise EnvironmentProblem("this torch build has no torch.distributed", hint="install a standard torch wheel")
    cuda = _wants_cuda(config)
    if cuda:
        if not torch.cuda.is_available():
            raise EnvironmentProblem(f"device: {config.device} in a run of {world} processes, but torch sees no CUDA "
                                     "device", hint="use device: cpu (gloo), or a CUDA build of torch")
        index = local_rank()
        if index >= torch.cuda.device_count():
            raise EnvironmentProblem(
                f"local rank {index} has no GPU of its own: {torch.cuda.device_count()} visible on this host",
                hint="start at most as many processes per host as it has GPUs (--nproc / --nproc-per-node)")
        torch.cuda.set_device(index)  # one device per local rank: "cuda" and "auto" now mean this one
    backend = "nccl" if cuda else "gloo"
    try:
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s()), **_restart_store(world))
    except Exception as e:  # a rendezvous that failed or timed out
        raise ProcessLost(f"could not join the process group ({backend}, world size {world}): {_first_line(e)}",
                          hint="check MASTER_ADDR/MASTER_PORT and that every process was started") from None
    return TorchCollective.over(dist.group.WORLD, owned=True)


def _restart_store(world: int) -> dict:
    """A group that torchrun's elastic agent restarted (--max-restarts) meets in the agent's store,
    which still holds what the processes before it wrote there: the addresses gloo's processes
    publish to find each other. A process that reads a dead one's address fails to connect
    ("Connection refused"). Keys prefixed by the restart count keep each attempt's apart; the
    first attempt uses env:// as it is."""
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0").strip()
    if restart in ("", "0") or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                          timeout=timedelta(seconds=timeout_s()))
    return {"store": dist.PrefixStore(f"airlab/restart-{restart}", store), "rank": launcher_int("RANK"),
            "world_size": world}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _cause(e: BaseException) -> str:
    """gloo's and nccl's error text without the source location and the advice after it:
    "Read error [127.0.0.1]:43402: Connection reset by peer"."""
    text = (str(e).strip().splitlines() or [""])[0]
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ", 1)[0][:200]


def is_collective_failure(e: BaseException) -> bool:
    """Whether a framework error is a collective that failed under this process (a peer died or
    hung: gloo's "Connection reset by peer", NCCL's watchdog), not a bug."""
    if isinstance(e, dist.DistError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(w in text for w in ("gloo", "nccl", "connection reset",
                                                                     "connection closed", "timed out"))


def lost(e: BaseException, what: str) -> ProcessLost:
    """The error a process raises when a collective failed under it (a peer died or hung)."""
    return ProcessLost(f"another process of the run stopped answering during {what} ({_cause(e)})")


class TorchCollective:
    """airlab.train.process.Collective over torch.distributed: decisions on a gloo group."""

    def __init__(self, group, rank: int, world_size: int, backend: str, *, owned: bool = False):
        self.group = group
        self.rank = rank
        self.world_size = world_size
        self.backend = backend  # the gradients' backend: "gloo" or "nccl"
        self.owned = owned  # airlab made the process group (not Ray, say): airlab takes it down

    def close(self, ok: bool) -> None:
        """Take down the process group airlab made, after a last barrier, when the run ended well
        in every process. After a failure the process exits as it is: taking down a group whose
        peer died can wait on that peer, and the error must reach the user first."""
        if not ok or not self.owned or not dist.is_initialized():
            return
        try:
            dist.barrier(group=self.group)
            dist.destroy_process_group()
        except (RuntimeError, dist.DistError):
            pass

    @classmethod
    def over(cls, world, *, owned: bool = False) -> "TorchCollective":
        backend = str(dist.get_backend(world))
        # decisions over gloo (CPU tensors, with a timeout) also when the gradients use nccl
        group = world if backend == "gloo" else dist.new_group(backend="gloo",
                                                               timeout=timedelta(seconds=timeout_s()))
        return cls(group, dist.get_rank(), dist.get_world_size(), backend, owned=owned)

    def all_reduce(self, values: Sequence[float], op: str) -> list[float]:
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        try:
            dist.all_reduce(t, op=_OPS[op], group=self.group)
        except (RuntimeError, dist.DistError) as e:
            raise lost(e, "a shared decision") from None
        return t.tolist()

    def broadcast(self, data: bytes) -> bytes:
        try:
            n = torch.tensor([len(data) if self.rank == 0 else 0], dtype=torch.int64)
            dist.broadcast(n, 0, group=self.group)
            size = int(n.item())
            if size == 0:
                return b""
            buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if self.rank == 0
                   else torch.empty(size, dtype=torch.uint8))
            dist.broadcast(buf, 0, group=self.group)
        except (RuntimeError, dist.DistError) as e:
            raise lost(e, "a broadcast from the main process") from None
        return data if self.rank == 0 else buf.numpy().tobytes()

    def gather(self, data: bytes) -> list[bytes] | None:
        """Every process's bytes, in rank order, on the main process (None elsewhere)."""
        try:
            sizes = self.all_reduce([len(data) if r == self.rank else 0 for r in range(self.world_size)], "sum")
            longest = int(max(sizes))
            buf = torch.zeros(max(longest, 1), dtype=torch.uint8)
            if data:
                buf[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            parts = [torch.empty_like(buf) for _ in range(self.world_size)]
            dist.all_gather(parts, buf, group=self.group)
        except (RuntimeError, dist.DistError) as e:
            raise lost(e, "a gather of every process's state") from None
        if self.rank != 0:
            return None
        return [p[:int(s)].numpy().tobytes() for p, s in zip(parts, sizes)]


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process in the process group in use; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
