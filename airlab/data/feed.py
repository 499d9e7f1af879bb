"""The streaming path's prefetch: the batches of the steps to come, prepared in a background
thread while the device computes the current one.

A backend gives `Prefetcher` a `prepare(step)` that gathers the step's examples on the host (from
a memory-mapped cache or an in-memory array; numpy's fancy indexing and the copy into pinned
memory release the GIL) and returns whatever the backend wants to find ready: host arrays, pinned
tensors. `get(step)` returns that step's batch, waiting only when the thread has not prepared it
yet. Asked for a step again (a step retried after running out of memory), it returns the same
batch; asked for a step out of order (a resume, an evaluation in between does not count), it
starts over from there. An exception in `prepare` is raised by `get` for that step.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

_POLL_S = 0.1


class Prefetcher:
    def __init__(self, prepare: Callable[[int], Any], end: int, depth: int = 3):
        self.prepare, self.end, self.depth = prepare, end, max(1, depth)
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._current: tuple[int, Any] | None = None
        self.waits = 0  # gets that found their batch not ready (the device waited for the host)

    def _run(self, first: int, q: queue.Queue, stop: threading.Event) -> None:
        for step in range(first, self.end):
            if stop.is_set():
                return
            try:
                item = (step, self.prepare(step), None)
            except BaseException as e:  # handed to get(), which raises it in the main thread
                item = (step, None, e)
            while not stop.is_set():
                try:
                    q.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return

    def _start(self, first: int) -> None:
        self._halt()
        self._queue, self._stop = queue.Queue(maxsize=self.depth), threading.Event()
        self._thread = threading.Thread(target=self._run, args=(first, self._queue, self._stop),
                                        name="airlab-prefetch", daemon=True)
        self._thread.start()

    def _halt(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = self._queue = self._stop = None

    def get(self, step: int) -> Any:
        if self._current is not None and self._current[0] == step:
            return self._current[1]
        if step >= self.end:
            return self.prepare(step)
        if self._thread is None:
            self._start(step)
        while True:
            if self._queue.empty():
                self.waits += 1
            got, item, error = self._queue.get()
            if got < step:
                continue  # a step the loop did not ask for (cannot happen in order; harmless)
            if got > step:  # asked for an earlier step than prepared: start over from it
                self._start(step)
                continue
            if error is not None:
                self._halt()
                raise error
            self._current = (got, item)
            return item

    def close(self) -> None:
        self._halt()
        self._current = None


__all__ = ["Prefetcher"]
