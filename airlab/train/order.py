"""Which examples each step trains on: a pure function of (seed, epoch) and the step.

The run loop reads its batches from here, and so does a backend that prepares batches ahead of
time (the streaming path's prefetch thread) or needs the epoch of a step (augmentation keyed to
(seed, epoch, index)): one source, so what is prefetched is what the loop asks for.
"""

from __future__ import annotations

import threading

import numpy as np

from airlab.tasks import Task


class BatchOrder:
    """Step (0-based) -> (epoch, this process's share of the global batch: positions in the
    training split, or window starts for a language model). Thread-safe; remembers two epochs."""

    def __init__(self, task: Task, n: int, seed: int, context: int | None, batch_size: int,
                 steps_per_epoch: int, total_steps: int, rank: int = 0, world: int = 1, share: int | None = None):
        self.task, self.n, self.seed, self.context = task, n, seed, context
        self.batch_size, self.steps_per_epoch, self.total_steps = batch_size, steps_per_epoch, total_steps
        self.rank, self.world = rank, world
        self.share = share if share is not None else batch_size // world
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def epoch_order(self, epoch: int) -> np.ndarray:
        with self._lock:
            order = self._orders.get(epoch)
            if order is None:
                order = self.task.epoch_indices(self.n, self.seed, epoch, self.context)
                self._orders[epoch] = order
                for old in sorted(self._orders)[:-2]:
                    del self._orders[old]
            return order

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def global_batch(self, step: int) -> np.ndarray:
        epoch, pos = divmod(step, self.steps_per_epoch)
        return self.epoch_order(epoch)[pos * self.batch_size:(pos + 1) * self.batch_size]

    def share_of(self, index: np.ndarray) -> np.ndarray:
        """This process's contiguous share of a global batch."""
        if self.world > 1:
            return index[self.rank * self.share:(self.rank + 1) * self.share]
        return index

    def at(self, step: int) -> tuple[int, np.ndarray]:
        """(epoch, this process's examples) of step `step` (0-based)."""
        return self.epoch_of(step), self.share_of(self.global_batch(step))


__all__ = ["BatchOrder"]
