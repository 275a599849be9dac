"""Serving many callers at once: concurrent requests for one model are run together, one batched forward and
backward pass instead of one per request.

`Batcher.run(items, key)` is called from any number of threads (the studio runs a handler per request).
There is no background thread and no timer: the first caller to find the model idle runs a batch of
everything waiting with its key, up to `max_batch` items, and hands each caller its own results; callers
arriving meanwhile wait and go in the next batch. A lone caller runs at once, so batching adds no latency;
under load, the batches grow by themselves with the queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Job:
    items: list
    key: Hashable
    results: list | None = None
    error: BaseException | None = None
    done: bool = False
    size: int = field(init=False)

    def __post_init__(self):
        self.size = len(self.items)


class Batcher:
    """Runs `work(items, key) -> results` (one result per item, in order) on batches gathered from callers.

    Items of one call always stay in one batch. If `work` raises, every caller in that batch gets the error,
    so check what can be checked per caller before `run`.
    """

    def __init__(self, work: Callable[[list, Hashable], list], *, max_batch: int = 16):
        self.work = work
        self.max_batch = max_batch
        self.pending: list[_Job] = []
        self.busy = False
        self.cond = threading.Condition()
        self.batches = 0  # how many batches ran, for tests and benchmarks
        self.largest = 0  # the most items one batch held

    def run(self, items: list, key: Hashable = None) -> list:
        """`work` on `items` (in a batch with other callers' items of the same key); returns their results."""
        if not items:
            return []
        job = _Job(list(items), key)
        with self.cond:
            self.pending.append(job)
            while not job.done:
                if self.busy:
                    self.cond.wait()
                    continue
                batch = self._take()
                self.busy = True
                self.cond.release()
                try:
                    self._run(batch)
                finally:
                    self.cond.acquire()
                    self.busy = False
                    self.cond.notify_all()
        if job.error is not None:
            raise job.error
        return job.results

    def _take(self) -> list[_Job]:
        """The oldest waiting job and, behind it, the waiting jobs with its key while they fit."""
        first = self.pending[0]
        batch, size = [], 0
        for job in list(self.pending):
            if job.key == first.key and (not batch or size + job.size <= self.max_batch):
                batch.append(job)
                size += job.size
                self.pending.remove(job)
        return batch

    def _run(self, batch: list[_Job]) -> None:
        items = [item for job in batch for item in job.items]
        self.batches += 1
        self.largest = max(self.largest, len(items))
        try:
            results = self.work(items, batch[0].key)
            if len(results) != len(items):
                raise RuntimeError(f"batch work returned {len(results)} results for {len(items)} items")
        except BaseException as e:  # noqa: BLE001 - handed to each caller of the batch, raised there
            for job in batch:
                job.error, job.done = e, True
            return
        start = 0
        for job in batch:
            job.results, job.done = results[start : start + job.size], True
            start += job.size
