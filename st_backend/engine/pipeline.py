"""Token batches for the device, in the order they are ready.

On CUDA, worker threads tokenize chunks of the input ahead of the GPU (the Rust tokenizer releases the GIL),
each chunk in slices on every worker at once, and a producer thread packs and pins each chunk's batches while
the caller computes the previous ones; the caller copies them with non_blocking=True. On CPU one chunk holds
everything, so batches follow one global length sort (the reference attention backend pads inside attention,
where sorting saves work).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np

from .packing import PackedBatch, pack
from .prefix import joined_prefix
from .scheduler import plan_batches
from .timing import device_work, host
from .tokenizer import FEEDING, Tokenized

_DONE = object()
AHEAD = 3  # chunks submitted for tokenization ahead of the one being packed
PIN_MIN_TOKENS = 1024


def _chunk_batches(
    tokens: Tokenized, start: int, max_tokens: int, max_sequences: int, pin: bool, profile, padded: bool = False
) -> Iterator[PackedBatch]:
    for indices in plan_batches(tokens.lengths, max_tokens, max_sequences, padded):
        with host(profile, "pack + pin (producer)"):
            batch = pack(tokens.ids, tokens.type_ids, indices, offset=start, prefix=tokens.prefix)
            # Pinning costs more than it saves for a small batch (a single query's): its copy is short anyway.
            batch = batch.pin_memory() if pin and batch.num_tokens >= PIN_MIN_TOKENS else batch
        yield batch


def _mark_feeding() -> None:
    FEEDING.active = True  # this thread may hand its slices to the tokenizer worker processes


def chunk_bounds(n: int, chunk_size: int, first: int | None = None) -> Iterator[tuple[int, int]]:
    """(start, stop) slices of 0..n-1: the first ``first`` items (default chunk_size // 8), then doubling up to
    chunk_size, so the device gets its first batch after a small chunk instead of a full one."""
    size = max(1, min(chunk_size, first or chunk_size // 8))
    start = 0
    while start < n:
        stop = min(n, start + size)
        yield start, stop
        start, size = stop, min(chunk_size, 2 * size)


def slices(
    start: int, stop: int, parts: int, min_size: int = 1, weights: np.ndarray | None = None, min_weight: int = 0
) -> list[tuple[int, int]]:
    """start..stop cut into at most ``parts`` slices of at least ``min_size`` items (one if shorter), or, with
    ``weights`` (the cost of each of the n inputs, e.g. characters), into slices of near-equal weight: as many as
    ``min_size`` items or ``min_weight`` weight per slice allow, so a few long texts are shared out too."""
    n = stop - start
    count = n // max(1, min_size)
    if weights is not None:
        w = np.cumsum(weights[start:stop], dtype=np.int64)
        total = int(w[-1]) if n else 0
        count = max(count, total // max(1, min_weight)) if min_weight else count
    count = max(1, min(parts, count, n))
    if weights is None or not total:
        cuts = [start + n * i // count for i in range(count + 1)]
    else:  # the first input past each equal share of the weight starts a slice
        inner = np.searchsorted(w, [total * i / count for i in range(1, count)], side="left") + 1
        cuts = sorted({start, stop, *(start + int(c) for c in inner if 0 < c < n)})
    return list(zip(cuts[:-1], cuts[1:]))


def join(parts: list[Tokenized]) -> Tokenized:
    """One Tokenized of consecutive slices' (each slice's inputs in order)."""
    if len(parts) == 1:
        return parts[0]
    types = [p.type_ids for p in parts]
    if any(t is None for t in types) and not all(t is None for t in types):
        raise RuntimeError("tokenized slices of one chunk disagree on token type ids")
    return Tokenized(
        ids=[a for p in parts for a in p.ids],
        type_ids=None if types[0] is None else [a for t in types for a in t],
        lengths=np.concatenate([p.lengths for p in parts]),
        prefix=joined_prefix([p.prefix for p in parts]),
    )


def packed_batches(
    n: int,
    tokenize: Callable[[int, int], Tokenized],
    *,
    max_tokens: int,
    max_sequences: int,
    chunk_size: int | None = None,
    threads: int = 1,
    pin: bool = False,
    prefetch: int = 4,
    min_slice: int = 1,
    weights: np.ndarray | None = None,
    min_slice_weight: int = 0,
    profile=None,
    padded: bool = False,
) -> Iterator[PackedBatch]:
    """Yield PackedBatches covering items 0..n-1 once each. ``tokenize(start, stop)`` tokenizes a slice.

    chunk_size None: tokenize everything here, then batch (one global sort). Otherwise chunks (growing to
    chunk_size, see chunk_bounds) are each cut into up to ``threads`` slices (at least ``min_slice`` inputs or
    ``min_slice_weight`` of ``weights``, each slice near-equal in weight: see slices), tokenized at once by
    ``threads`` workers, joined, sorted and packed (and pinned if ``pin``) by a producer
    thread, ``prefetch`` batches ahead. A chunk is ready as soon as every worker has done a share of it, so the
    device's first batch, and each after it, waits for a fraction of a chunk's tokenization instead of all of it.
    profile: an engine Profile that times tokenization, packing and the consumer's waits.
    """
    if n == 0:
        return
    if profile is not None:
        plain_tokenize = tokenize

        def tokenize(start: int, stop: int) -> Tokenized:
            with profile.host("tokenize (summed over threads)"):
                return plain_tokenize(start, stop)

    if chunk_size is None or chunk_size >= n:
        yield from _chunk_batches(tokenize(0, n), 0, max_tokens, max_sequences, pin, profile, padded)
        return

    out: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            bounds = chunk_bounds(n, chunk_size)
            with ThreadPoolExecutor(
                max_workers=threads, thread_name_prefix="st_backend-tokenize", initializer=_mark_feeding
            ) as pool:

                def submit(bound: tuple[int, int]) -> tuple[int, list]:
                    return bound[0], [
                        pool.submit(tokenize, a, b)
                        for a, b in slices(*bound, threads, min_slice, weights, min_slice_weight)
                    ]

                pending = deque(submit(bound) for bound in islice(bounds, AHEAD))
                while pending and not stop.is_set():
                    start, futures = pending.popleft()
                    bound = next(bounds, None)
                    if bound is not None:
                        pending.append(submit(bound))
                    tokens = join([future.result() for future in futures])
                    for batch in _chunk_batches(tokens, start, max_tokens, max_sequences, pin, profile, padded):
                        if not put(batch):
                            return
                for _, futures in pending:
                    for future in futures:
                        future.cancel()
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    producer = threading.Thread(target=produce, name="st_backend-pack", daemon=True)
    producer.start()
    try:
        while True:
            with host(profile, "waiting for a batch (consumer)"):
                item = out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        producer.join()


def forward_batches(
    runner,
    n: int,
    tokenize: Callable[[int, int], Tokenized],
    device,
    *,
    max_tokens: int,
    max_sequences: int,
    feeding: dict,
    profile=None,
    progress=None,
) -> Iterator[tuple[PackedBatch, object]]:
    """(batch on ``device``, its packed last hidden states) for every batch; the caller's work on each pair is
    timed as part of the consumer's step. ``progress``: a tqdm bar advanced by each batch's inputs."""
    # A backend that pads inside attention (the reference) gets batches of like lengths (scheduler.plan_batches).
    padded = bool(getattr(getattr(runner, "backend", None), "pads", False))
    batches = packed_batches(
        n, tokenize, max_tokens=max_tokens, max_sequences=max_sequences, profile=profile, padded=padded, **feeding
    )
    for batch in batches:
        with host(profile, "copy + forward + head (consumer)"), device_work(profile):
            batch = batch.to(device, non_blocking=True)
            yield batch, runner.forward(batch)
        if progress is not None:
            progress.update(len(batch.indices))
