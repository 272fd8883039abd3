"""Repeated calls do not grow memory or open file descriptors: 300 calls of 200 texts each, in-process and with
tokenizer worker processes (pipes), within a stated bound."""

from __future__ import annotations

import os

import pytest
from tiny_models import build_st_dir

import st_backend

CALLS = 300
TEXTS = [f"text number {i} about cats, dogs and the weather " * (1 + i % 5) for i in range(200)]
RSS_GROWTH_MB = 40  # after warm-up; allocator noise and torch's caches stay well below this
FD_GROWTH = 2


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc (Linux)")
@pytest.mark.parametrize("processes", [0, 2])
def test_repeated_calls_keep_memory_and_descriptors_flat(tiny_root, feeding_thread, processes):
    path = str(build_st_dir("bert", tiny_root))
    engine = st_backend.EngineConfig(tokenizer_processes=processes, max_batch_tokens=2048)
    model = st_backend.SentenceTransformer(path, device="cpu", engine=engine)
    for _ in range(20):  # warm-up: allocator pools, worker start-up, tokenizer copies
        model.encode(TEXTS)
    if processes:
        assert model.engine_for(None).tokenizer._processes is not None, "the worker processes did not start"
    rss, fds = rss_mb(), open_fds()
    for _ in range(CALLS):
        model.encode(TEXTS)
    growth = rss_mb() - rss
    assert growth < RSS_GROWTH_MB, f"RSS grew {growth:.1f} MB over {CALLS} calls"
    assert open_fds() - fds <= FD_GROWTH, f"open descriptors {fds} -> {open_fds()}"
