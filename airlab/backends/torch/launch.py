"""`airlab train CONFIG --nproc N` on PyTorch: N local processes through torch.distributed.run,
the launcher behind `torchrun`, with a standalone rendezvous on a free port (as `torchrun
--standalone` and `tune run` do). airlab adds no launcher of its own: this only builds torchrun's
arguments, runs its elastic agent in this process, and turns its outcome into airlab's exit codes.

Each process runs `python -m airlab ARGV` with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT set, and joins the process group (airlab/backends/torch/distributed.py).
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from airlab.errors import EXIT_ENVIRONMENT, EXIT_UNEXPECTED, UsageError
from airlab.train import threads
from airlab.train.process import LAUNCHED_ENV

UNIT = "processes"  # what --nproc counts on this backend (the batch is split among them)


def _quiet_agent():
    """The elastic agent's log lines (its OMP_NUM_THREADS notice, its failure table, "Received 15
    death signal") stay off the terminal: the processes report their own errors, and the launcher
    says which one was killed. Each of torch's loggers has its own level, so each is set."""
    saved = {}
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            log = logging.getLogger(name)
            saved[name] = log.level
            log.setLevel(logging.CRITICAL)
    return saved


def _restore_loggers(saved: dict) -> None:
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def torchrun_args(nproc: int, argv: list[str], *, max_restarts: int = 0) -> list[str]:
    """torchrun's command line for N local processes of `python -m airlab ARGV`."""
    # the agent handles these signals in this process (and passes them on to every process); one
    # this process was started with ignored (nohup, a background job) stays ignored, as everywhere
    handled = [name for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
               if signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN]
    return ["--standalone", "--nnodes=1", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
            "--monitor-interval=0.2", f"--signals-to-handle={','.join(handled)}", "-m", "airlab", *argv]


def launch(nproc: int, argv: list[str], *, max_restarts: int = 0) -> int:
    """Run `airlab ARGV` in `nproc` local processes; return the exit code of the run: the main
    process's, or the code of the process that failed first when the main process did not."""
    if nproc < 1:
        raise UsageError(f"--nproc {nproc}: expected at least 1 process")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ[LAUNCHED_ENV] = str(nproc)  # the processes' hints say how to resume: --nproc N
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores (torchrun itself would set 1)
        os.environ["OMP_NUM_THREADS"] = str(max(1, threads.usable_cores() // nproc))
    args = get_args_parser().parse_args(torchrun_args(nproc, argv, max_restarts=max_restarts))
    saved = _quiet_agent()
    try:
        run(args)
        return 0
    except ChildFailedError as e:
        return _outcome(e.failures)
    except SignalException as e:  # the agent stopped every process with the same signal first
        return 128 + int(e.sigval)
    finally:
        _restore_loggers(saved)


def _outcome(failures: dict) -> int:
    """The launcher's exit code, and one line naming a process that was killed. The elastic agent
    stops the other processes with SIGTERM once one has failed, so a SIGTERM death is a
    consequence; a process killed by another signal (SIGKILL: the out-of-memory killer, kill -9)
    is the cause, which it could not report itself: exit 4, as for a lost process."""
    killed = sorted(rank for rank, f in failures.items() if int(f.exitcode) < 0 and -int(f.exitcode) != signal.SIGTERM)
    if killed:
        rank = killed[0]
        f = failures[rank]
        sig = -int(f.exitcode)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        sys.stderr.write(f"error: process {rank} of the run (pid {f.pid}) was killed by {name}; the others were "
                         "stopped\n")
        return EXIT_ENVIRONMENT
    main = failures.get(0)
    if main is not None and int(main.exitcode) > 0:
        return int(main.exitcode)
    for rank in sorted(failures):
        if int(failures[rank].exitcode) > 0:
            return int(failures[rank].exitcode)
    return 128 + signal.SIGTERM if failures else EXIT_UNEXPECTED
