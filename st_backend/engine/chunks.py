"""How big each tokenization chunk is, decided when a worker takes it.

The device gets its first batch after a small chunk, not a full one. After that, chunks grow. Where the device
is the slower side (BERT-base on an H100), a chunk must be ready before the device runs out of work, so its
size follows the lead the tokenizers have built up. Where tokenizing is the slower side (all-MiniLM-L6-v2),
chunks double up to the cap, since each chunk has a fixed cost.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

import torch


def chunk_bounds(n: int, chunk_size: int, first: int | None = None) -> Iterator[tuple[int, int]]:
    """(start, stop) slices of 0..n-1: the first ``first`` items (default chunk_size // 8), then doubling up to
    chunk_size: the schedule when the device's rate is unknown."""
    size = max(1, min(chunk_size, first or chunk_size // 8))
    start = 0
    while start < n:
        stop = min(n, start + size)
        yield start, stop
        start, size = stop, min(chunk_size, 2 * size)


class DeviceRate:
    """Inputs the device has finished, and how many it finishes per second of its own time, read from CUDA
    events without waiting on them (the feeding thread asks while the caller's thread records)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque = deque()  # (begin event, end event, inputs), in launch order
        self._done = 0
        self._seconds = 0.0

    def begin(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def end(self, begin: torch.cuda.Event, inputs: int) -> None:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        with self._lock:
            self._pending.append((begin, event, inputs))

    def _poll(self) -> None:
        while self._pending and self._pending[0][1].query():
            begin, end, inputs = self._pending.popleft()
            self._seconds += begin.elapsed_time(end) / 1000
            self._done += inputs

    def done(self) -> int:
        with self._lock:
            self._poll()
            return self._done

    def rate(self) -> float | None:
        """Inputs per second of device time, or None before the first batch has finished."""
        with self._lock:
            self._poll()
            return self._done / self._seconds if self._seconds > 0 else None


class ChunkPlanner:
    """Hands out (start, stop) chunks of 0..n-1 in order, each sized when a worker asks for it.

    Until both rates are known, chunks are ``first`` inputs. Then, when ``workers`` tokenizers outpace the
    device, a chunk holds what one worker can tokenize before the device finishes the inputs handed out so
    far (between ``first`` and ``cap``); otherwise chunks double up to ``cap``. Without a DeviceRate (no
    CUDA), the schedule is chunk_bounds'.
    """

    def __init__(self, n: int, cap: int, workers: int, device: DeviceRate | None = None) -> None:
        self.n, self.cap, self.workers, self.device = n, cap, max(1, workers), device
        self.first = max(1, cap // 8)
        self._lock = threading.Lock()
        self._start = 0
        self._last = 0
        self._texts = 0  # tokenized so far, and the seconds the workers took (summed over workers)
        self._seconds = 0.0
        self._fixed = chunk_bounds(n, cap) if device is None else None

    def tokenized(self, inputs: int, seconds: float) -> None:
        with self._lock:
            self._texts += inputs
            self._seconds += seconds

    @property
    def exhausted(self) -> bool:
        return self._start >= self.n

    def next(self) -> tuple[int, int] | None:
        """The next chunk, or None once 0..n-1 is handed out."""
        with self._lock:
            if self._fixed is not None:
                bound = next(self._fixed, None)
                if bound is not None:
                    self._start = bound[1]
                return bound
            if self._start >= self.n:
                return None
            size = min(self.n - self._start, self._size())
            bound = (self._start, self._start + size)
            self._start, self._last = bound[1], size
            return bound

    def _size(self) -> int:
        tokenize = self._texts / self._seconds if self._seconds > 0 else None  # one worker's inputs per second
        device = self.device.rate()
        if tokenize is None or device is None:
            return self.first
        if self.workers * tokenize <= device:  # tokenizing is the slower side: fewer, larger chunks
            return min(self.cap, max(self.first, 2 * self._last))
        lead = (self._start - self.device.done()) / device  # seconds of device work handed out, not yet done
        return min(self.cap, max(self.first, int(tokenize * lead)))
