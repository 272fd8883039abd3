"""Token batches for the device, in the order they are ready.

On CUDA, worker threads tokenize chunks of the input ahead of the GPU (the Rust tokenizer releases the GIL)
and a producer thread packs and pins each chunk's batches while the caller computes the previous ones; the
caller copies them with non_blocking=True. On CPU one chunk holds everything, so batches follow one global
length sort (the reference attention backend pads inside attention, where sorting saves work).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from .chunks import ChunkPlanner, DeviceRate
from .packing import PackedBatch, pack
from .profile import device_work, host
from .scheduler import plan_batches
from .tokenize import Tokenized

_DONE = object()


def _chunk_batches(
    tokens: Tokenized, start: int, max_tokens: int, max_sequences: int, pin: bool, profile
) -> Iterator[PackedBatch]:
    for indices in plan_batches(tokens.lengths, max_tokens, max_sequences):
        with host(profile, "pack + pin (producer)"):
            batch = pack(tokens.ids, tokens.type_ids, indices, offset=start, prefix=tokens.prefix)
            batch = batch.pin_memory() if pin else batch
        yield batch


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
    profile=None,
    device_rate: DeviceRate | None = None,
) -> Iterator[PackedBatch]:
    """Yield PackedBatches covering items 0..n-1 once each. ``tokenize(start, stop)`` tokenizes a slice.

    chunk_size None: tokenize everything here, then batch (one global sort). Otherwise chunks of at most
    chunk_size, each sized when a worker takes it (engine/chunks.py, from ``device_rate`` where given), are
    tokenized by ``threads`` workers and packed (and pinned if ``pin``) by a producer thread, ``prefetch``
    batches ahead.
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
        yield from _chunk_batches(tokenize(0, n), 0, max_tokens, max_sequences, pin, profile)
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

    planner = ChunkPlanner(n, chunk_size, threads, device_rate)

    def take() -> tuple[int, Tokenized] | None:
        bound = planner.next()
        if bound is None:
            return None
        begin = time.perf_counter()
        tokens = tokenize(*bound)
        planner.tokenized(bound[1] - bound[0], time.perf_counter() - begin)
        return bound[0], tokens

    def produce() -> None:
        try:
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="st_backend-tokenize") as pool:
                # Two chunks per worker in flight; each is sized when a worker takes it, not when queued.
                pending = deque(pool.submit(take) for _ in range(2 * threads))
                while pending and not stop.is_set():
                    future = pending.popleft()
                    if not planner.exhausted:
                        pending.append(pool.submit(take))
                    chunk = future.result()
                    if chunk is None:  # another worker took the last chunk
                        continue
                    for batch in _chunk_batches(chunk[1], chunk[0], max_tokens, max_sequences, pin, profile):
                        if not put(batch):
                            return
                for future in pending:
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
    chunked = torch.device(device).type == "cuda" and feeding.get("chunk_size") is not None
    rate = DeviceRate() if chunked else None  # sizes the tokenization chunks (engine/chunks.py)
    batches = packed_batches(
        n, tokenize, max_tokens=max_tokens, max_sequences=max_sequences, profile=profile, device_rate=rate, **feeding
    )
    for batch in batches:
        with host(profile, "copy + forward + head (consumer)"), device_work(profile):
            begin = rate.begin() if rate is not None else None
            batch = batch.to(device, non_blocking=True)
            yield batch, runner.forward(batch)
            if rate is not None:
                rate.end(begin, len(batch.indices))
        if progress is not None:
            progress.update(len(batch.indices))
