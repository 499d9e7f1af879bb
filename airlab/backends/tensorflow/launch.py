"""`airlab train CONFIG --nproc N` on TensorFlow: N replicas of tf.distribute.MirroredStrategy in
this one process (N GPUs, or N logical CPU devices), not N processes. The launcher only says so to
the backend, through AIRLAB_REPLICAS, before TensorFlow's runtime starts; the run goes on here.

Several hosts are tf.distribute's own business: start `airlab train CONFIG` on every host with
TF_CONFIG naming them all (MultiWorkerMirroredStrategy; see distribute.py), without --nproc.
"""

from __future__ import annotations

import os

from airlab.backends.tensorflow import distribute
from airlab.errors import UsageError

UNIT = "replicas"  # what --nproc counts on this backend (the batch is split among them)


def launch(nproc: int, argv: list[str], max_restarts: int = 0) -> int | None:
    """Train on `nproc` replicas in this process: sets AIRLAB_REPLICAS and returns None ("go on in
    this process"). `argv` (the command line without --nproc) is not needed: nothing is started."""
    if nproc < 1:
        raise UsageError(f"--nproc {nproc}: expected 1 or more replicas")
    if max_restarts:
        raise UsageError("--max-restarts restarts torchrun's process group; TensorFlow's replicas run in one process",
                         hint="leave out --max-restarts (resume a stopped run with airlab train --resume RUN_DIR)")
    where = distribute.cluster()
    if where is not None and nproc > 1:
        raise UsageError(f"--nproc {nproc} with a TF_CONFIG of {where.world_size} workers: MultiWorkerMirroredStrategy "
                         "already uses every visible GPU of each worker",
                         hint="leave out --nproc (choose each worker's GPUs with CUDA_VISIBLE_DEVICES)")
    os.environ[distribute.REPLICAS_ENV] = str(nproc)
    return None
