"""Cross-request batching, as TEI's queue: one queue per model, filled from the event loop, drained by one worker
thread that merges waiting requests FIFO into one model call up to a token budget.

A request becomes a Job: its rows (texts, pairs or token ids), its token count, a key (requests with equal keys
may share a call: same route kind, role, prompt), and a future on the event loop. The worker takes the oldest job,
adds every later job with the same key while the budget allows (the others keep their places), runs the call, and
hands each job exactly its own slice of the outputs, in its own order, through its ``finish`` (which also runs on
the worker thread, so post-processing and JSON encoding stay off the event loop). While a call runs, new jobs
queue up for the next one. Jobs whose client has gone are dropped before they reach the model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .metrics import Metrics

logger = logging.getLogger("st_backend.server")


class QueueFull(Exception):
    """The model's queue holds ``capacity`` requests already."""


class Closed(Exception):
    """The server is shutting down: no new work."""


@dataclass(eq=False)
class Job:
    key: Hashable
    rows: list
    tokens: int
    future: asyncio.Future
    finish: Callable[[Sequence], Any] = lambda outputs: outputs  # per-request result from its rows' outputs
    enqueued: float = field(default_factory=time.perf_counter)
    gone: bool = False  # the client disconnected: drop before the model

    def dropped(self) -> bool:
        return self.gone or self.future.cancelled()


def _deliver(results: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class Batcher:
    """One model's queue and worker. run(key, rows) -> one output per row, in order (called on the worker)."""

    def __init__(
        self,
        name: str,
        run: Callable[[Hashable, list], Sequence],
        *,
        max_batch_tokens: int,
        capacity: int,
        batching: bool,
        metrics: Metrics,
        workers: int = 1,
    ) -> None:
        self.name = name
        self.run = run
        self.max_batch_tokens = max_batch_tokens
        self.capacity = capacity
        self.batching = batching
        self.metrics = metrics
        self.loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[Job] = []
        self._running = 0
        self._closing = False
        self._cond = threading.Condition()
        # More than one worker (serve --devices): one call in flight per device, each taken from the same queue.
        self._threads = [
            threading.Thread(target=self._work, name=f"st_backend-batcher-{name}-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, job: Job) -> None:
        """Queue a job (event-loop side); QueueFull past capacity (counting the call in flight), Closed at shutdown."""
        with self._cond:
            if self._closing:
                raise Closed(self.name)
            if len(self._queue) + self._running >= self.capacity:
                self.metrics.rejected.inc(self.name)
                raise QueueFull(self.name)
            self._queue.append(job)
            self.metrics.queue_size.set(self.name, value=len(self._queue))
            self._cond.notify()

    def close(self, timeout: float | None = None) -> None:
        """Stop after every queued job has been answered."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def _take(self) -> list[Job] | None:
        """The next call's jobs: the oldest live job and, with batching on, later live jobs of its key that fit."""
        with self._cond:
            while True:
                while not self._queue:
                    if self._closing:
                        return None
                    self._cond.wait()
                live = [j for j in self._queue if not j.dropped()]
                if len(live) < len(self._queue):
                    self.metrics.dropped.inc(self.name, amount=len(self._queue) - len(live))
                if not live:
                    self._queue = []
                    continue
                head, batch, rest = live[0], [live[0]], []
                tokens = head.tokens
                for job in live[1:]:
                    if self.batching and job.key == head.key and tokens + job.tokens <= self.max_batch_tokens:
                        batch.append(job)
                        tokens += job.tokens
                    else:
                        rest.append(job)
                self._queue = rest
                self._running += len(batch)
                self.metrics.queue_size.set(self.name, value=len(rest))
                return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._run_batch(batch)
            except BaseException as exc:  # never let the worker die: answer the batch with the error
                logger.exception("st_backend server: batch on %s failed", self.name)
                self._send([(job.future, None, exc) for job in batch])
            finally:
                with self._cond:
                    self._running -= len(batch)

    def _run_batch(self, batch: list[Job]) -> None:
        start = time.perf_counter()
        m = self.metrics
        for job in batch:
            m.queue_duration.observe(self.name, value=start - job.enqueued)
        rows = [row for job in batch for row in job.rows]
        outputs = self._call(batch, rows)
        took = time.perf_counter() - start
        m.inference.observe(self.name, value=took)
        m.batch_rows.observe(self.name, value=len(rows))
        m.batch_tokens.observe(self.name, value=sum(job.tokens for job in batch))
        m.batch_requests.observe(self.name, value=len(batch))
        results, offset = [], 0
        for job in batch:
            m.request_inference.observe(self.name, value=took)
            part = outputs[offset : offset + len(job.rows)]
            offset += len(job.rows)
            start = time.perf_counter()
            try:
                results.append((job.future, job.finish(part), None))
            except Exception as exc:  # one request's post-processing failed: only it gets the error
                results.append((job.future, None, exc))
            m.serialize.observe(self.name, value=time.perf_counter() - start)
        self._send(results)

    def _call(self, batch: list[Job], rows: list) -> Sequence:
        return self.run(batch[0].key, rows)

    def _send(self, results: list) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(_deliver, results)
