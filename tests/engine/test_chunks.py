"""Tokenization chunk sizes: small until both rates are known, then lead-sized (device slower) or doubling
(tokenizer slower); the chunks always cover 0..n-1 once, in order, however many workers ask at once."""

import threading

import numpy as np
import pytest

from st_backend.engine.chunks import ChunkPlanner
from st_backend.engine.pipeline import packed_batches
from st_backend.engine.tokenize import Tokenized


class FakeDevice:
    """A DeviceRate stand-in: ``rate`` inputs per device second, ``done`` inputs finished."""

    def __init__(self, rate=None, done=0):
        self._rate, self._done = rate, done

    def rate(self):
        return self._rate

    def done(self):
        return self._done


def sizes(planner, count):
    out = []
    for _ in range(count):
        bound = planner.next()
        if bound is None:
            break
        out.append(bound[1] - bound[0])
    return out


def test_first_chunks_are_small_until_both_rates_are_known():
    device = FakeDevice()
    planner = ChunkPlanner(10_000, cap=1024, workers=4, device=device)
    assert sizes(planner, 3) == [128, 128, 128]
    planner.tokenized(128, 0.1)  # the tokenizer's rate alone is not enough
    assert sizes(planner, 1) == [128]
    device._rate = 1e9
    assert sizes(planner, 1) != [128]


def test_tokenizer_slower_than_device_doubles_to_the_cap():
    device = FakeDevice(rate=10_000.0)  # inputs per device second
    planner = ChunkPlanner(10_000, cap=1024, workers=4, device=device)
    planner.tokenized(1000, 1.0)  # 4 workers x 1,000 inputs/s < 10,000/s
    assert sizes(planner, 5) == [128, 256, 512, 1024, 1024]


def test_device_slower_than_tokenizers_sizes_chunks_by_the_lead():
    device = FakeDevice(rate=2000.0)
    planner = ChunkPlanner(10_000, cap=1024, workers=4, device=device)
    planner.tokenized(1000, 1.0)  # one worker: 1,000 inputs/s; four outpace the device's 2,000/s
    assert sizes(planner, 1) == [128]  # nothing handed out yet: no lead, so the minimum
    planner._start = 600  # 600 handed out, 200 of them done: 0.2 s of device work ahead
    device._done = 200
    assert sizes(planner, 1) == [200]  # what one worker tokenizes in 0.2 s
    device._done = 0  # 800 ahead: 0.4 s
    assert sizes(planner, 1) == [400]
    planner._start = 8000  # far ahead: capped
    assert sizes(planner, 1) == [1024]


@pytest.mark.parametrize("rate", [None, 50.0, 1e9])
def test_chunks_cover_every_input_once_under_concurrent_workers(rate):
    planner = ChunkPlanner(5000, cap=64, workers=8, device=FakeDevice(rate=rate))
    planner.tokenized(10, 1.0)
    got, lock = [], threading.Lock()

    def worker():
        while (bound := planner.next()) is not None:
            with lock:
                got.append(bound)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got.sort()
    assert got[0][0] == 0 and got[-1][1] == 5000
    assert all(a[1] == b[0] for a, b in zip(got, got[1:]))  # contiguous, no overlap
    assert all(0 < stop - start <= 64 for start, stop in got)
    assert planner.exhausted and planner.next() is None


def test_packed_batches_with_a_device_rate_yield_every_input_once():
    lengths = np.random.default_rng(1).integers(1, 30, size=3000).tolist()

    def tokenize(start, stop):
        ids = [np.full(n, i, dtype=np.int64) for i, n in enumerate(lengths[start:stop], start=start)]
        return Tokenized(ids, None, np.array([len(a) for a in ids], dtype=np.int64))

    seen = []
    for batch in packed_batches(
        len(lengths),
        tokenize,
        max_tokens=200,
        max_sequences=16,
        chunk_size=256,
        threads=4,
        device_rate=FakeDevice(rate=100.0),
    ):
        for i, start, stop in zip(batch.indices, batch.cu_seqlens[:-1], batch.cu_seqlens[1:]):
            assert batch.input_ids[start:stop].tolist() == [i] * lengths[i]
        seen.extend(batch.indices.tolist())
    assert sorted(seen) == list(range(len(lengths)))
