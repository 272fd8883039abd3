"""ST's multi-process API on st_backend's models (st_backend/models/pool.py): two CPU workers, each running the
packed engine, outputs equal to one process row by row, work shared by characters, killed workers.

Every pool call runs in a thread with a join timeout, so a hang fails the test instead of stalling the run.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from colbert_models import build_colbert_dir
from tiny_models import build_hf_dir, build_st_dir

import st_backend
from st_backend.models.pool import MIN_CHUNK_CHARS, input_weight, plan_chunks, worker_info

TIMEOUT_S = 180  # one pool call, start-up included, on two busy cores


def texts(n_short: int = 400, n_long: int = 6, seed: int = 0) -> list[str]:
    """A few long documents (longer than the model reads) first, then many short sentences."""
    rng = random.Random(seed)
    words = "the cat sat on a mat while late interaction models rank passages by meaning and words".split()
    long = [" ".join(rng.choice(words) for _ in range(600)) for _ in range(n_long)]
    short = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 12))) for _ in range(n_short)]
    return long + short


def in_thread(fn, timeout: float = TIMEOUT_S):
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"the pool call was still running after {timeout}s: it hangs")
    if "error" in box:
        raise box["error"]
    return box["value"]


def assert_rows_equal(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g, dtype=np.float64).ravel(), np.asarray(w, dtype=np.float64).ravel()
        assert g.shape == w.shape
        assert np.abs(g - w).max() <= 1e-5
        assert g @ w / max(np.linalg.norm(g) * np.linalg.norm(w), 1e-30) >= 0.99999


def descendants() -> set[int]:
    """Live processes under this one (multiprocessing's resource tracker aside: it serves the whole run)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[0] != "Z" and b"resource_tracker" not in cmdline:
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def assert_packed(pool, engines: dict):
    """Every worker ran st_backend's engine (never ST's padded path) and the reported backends."""
    info = worker_info(pool)
    assert len(info) == len(pool["workers"])
    for worker in info:
        assert worker["engines"] == engines, worker
        assert worker["fallbacks"] == [], worker
        assert worker["threads"] == 1
    return info


@pytest.fixture(scope="module")
def minilm(default_model_path):
    return st_backend.SentenceTransformer(default_model_path, device="cpu")


@pytest.fixture(scope="module")
def pool(minilm):
    before = descendants()
    pool = minilm.start_multi_process_pool(["cpu", "cpu"])
    pids = {p.pid for p in pool["processes"]}
    assert pids <= descendants() - before
    yield pool
    minilm.stop_multi_process_pool(pool)
    assert descendants() - before == set(), "processes left running after stop_multi_process_pool"


def _finish(chunk_weights: list[int], workers: int = 2) -> list[float]:
    """When each of equally fast workers is done, each taking the next chunk as soon as it is free."""
    finish = [0.0] * workers
    for w in chunk_weights:
        finish[finish.index(min(finish))] += w
    return finish


def test_plan_shares_characters_not_texts():
    """Long documents at the end of the input: chunks of bounded weight, heaviest first, end on small chunks, so
    the workers finish together; ST's chunks of equal text counts, in input order, end on one heavy chunk."""
    items = texts(n_short=2000, n_long=40)
    items = items[40:] + items[:40]
    weights = [input_weight(t, max_chars=1024) for t in items]
    chunks = plan_chunks(weights, workers=2)
    assert sorted(i for c in chunks for i in c) == list(range(len(items)))
    total = sum(weights)
    chunk_weights = [sum(weights[i] for i in c) for c in chunks]
    assert all(w <= total / 4 + 1032 for w in chunk_weights)  # a chunk: at most half of one worker's share
    assert chunk_weights[-1] <= max(total / 16, MIN_CHUNK_CHARS)  # the last chunk is small
    ours = _finish(chunk_weights)
    assert abs(ours[0] - ours[1]) <= max(total / 16, MIN_CHUNK_CHARS)
    size = -(-len(items) // 20)  # ST 6.2's default: ten chunks per worker, in input order
    st = _finish([sum(weights[i : i + size]) for i in range(0, len(items), size)])
    assert abs(st[0] - st[1]) > 4 * abs(ours[0] - ours[1])


def test_encode_pool_equals_one_process(minilm, pool):
    items = texts()
    random.Random(1).shuffle(items)
    want = minilm.encode(items)
    got = in_thread(lambda: minilm.encode(items, pool=pool))
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert_rows_equal(got, want)
    # Work was shared by characters: each worker answered a fair part of them.
    info = assert_packed(pool, {"None": ["reference"]})
    chars = [w["last_call"]["chars"] for w in info]
    assert min(chars) >= 0.15 * sum(chars), chars
    # Tensors, normalised, token embeddings (ragged lists), a chunk_size cap, a single text.
    got = in_thread(lambda: minilm.encode(items, pool=pool, convert_to_tensor=True, normalize_embeddings=True))
    assert isinstance(got, torch.Tensor)
    assert_rows_equal(got, want / np.linalg.norm(want, axis=1, keepdims=True))
    few = items[:60]
    got = in_thread(lambda: minilm.encode(few, pool=pool, output_value="token_embeddings", chunk_size=7))
    assert_rows_equal(got, minilm.encode(few, output_value="token_embeddings"))
    assert_rows_equal([in_thread(lambda: minilm.encode(items[0], pool=pool))], [want[0]])


def test_encode_device_list(tiny_root):
    """encode(device=[...]) starts a pool for the call and stops it before returning."""
    model = st_backend.SentenceTransformer(str(build_st_dir("bert", tiny_root)), device="cpu")
    items = texts(n_short=200)
    want = model.encode(items)
    before = descendants()
    got = in_thread(lambda: model.encode(items, device=["cpu", "cpu"]))
    assert_rows_equal(got, want)
    assert descendants() - before == set()


def test_cross_encoder_pool(tiny_root):
    model = st_backend.CrossEncoder(str(build_hf_dir("bert", tiny_root, task="seq-cls")), device="cpu")
    items = texts(n_short=300)
    pairs = [(items[(7 * i) % len(items)], d) for i, d in enumerate(items)]
    want = model.predict(pairs)
    before = descendants()
    pool = model.start_multi_process_pool(["cpu", "cpu"])
    try:
        got = in_thread(lambda: model.predict(pairs, pool=pool))
        assert_rows_equal(got, want)
        ranked = in_thread(lambda: model.rank("the cat", items[:50], pool=pool))
        assert [r["corpus_id"] for r in ranked] == [r["corpus_id"] for r in model.rank("the cat", items[:50])]
        assert_packed(pool, {"score": ["reference"]})
    finally:
        model.stop_multi_process_pool(pool)
    assert descendants() - before == set()


def test_multi_vector_encoder_pool(tiny_root):
    expansion = {"strategy": "fixed", "attend": True, "length": 12}  # attended expansion runs packed
    model = st_backend.MultiVectorEncoder(
        str(build_colbert_dir("st", "bert", tiny_root, query_expansion=expansion)), device="cpu"
    )
    items = texts(n_short=200)
    queries = items[6:40]
    want_docs, want_queries = model.encode_document(items), model.encode_query(queries)
    before = descendants()
    pool = model.start_multi_process_pool(["cpu", "cpu"])
    try:
        assert_rows_equal(in_thread(lambda: model.encode_document(items, pool=pool)), want_docs)
        assert_rows_equal(in_thread(lambda: model.encode_query(queries, pool=pool)), want_queries)
        info = worker_info(pool)
        for worker in info:
            assert worker["fallbacks"] == [] and set(worker["engines"]) <= {"document", "query"}
            assert all(backends == ["reference"] for backends in worker["engines"].values())
    finally:
        model.stop_multi_process_pool(pool)
    assert descendants() - before == set()


def _kill_when_busy(pool) -> int:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        busy = [w for w in pool["workers"] if w.alive and w.busy is not None]
        if busy:
            os.kill(busy[0].process.pid, signal.SIGKILL)
            return busy[0].process.pid
        time.sleep(0.005)
    pytest.fail("no worker became busy")


def test_killed_worker(minilm, pool, caplog):
    """SIGKILL a worker mid-call: its chunk runs again on the live one (every row, in order); kill the last one
    mid-call: the call fails saying so, and never hangs. Runs last in this module: it uses up the shared pool."""
    items = texts(n_short=600)
    want = minilm.encode(items)
    call = {}
    thread = threading.Thread(target=lambda: call.update(out=minilm.encode(items, pool=pool)), daemon=True)
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        thread.start()
        killed = _kill_when_busy(pool)
        thread.join(TIMEOUT_S)
    assert not thread.is_alive(), "the call hung after a worker was killed"
    assert_rows_equal(call["out"], want)
    assert f"pid {killed}" in caplog.text and "running it again on a live worker" in caplog.text
    assert sum(w.alive for w in pool["workers"]) == 1

    errors = {}

    def run():
        try:
            minilm.encode(items, pool=pool)
        except RuntimeError as exc:
            errors["error"] = str(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    _kill_when_busy(pool)
    thread.join(TIMEOUT_S)
    assert not thread.is_alive(), "the call hung after the last worker was killed"
    assert "every worker of this multi-process pool has died" in errors["error"]
    assert "start a new one" in errors["error"]
