"""The batcher alone (no HTTP, no model): FIFO merging by key under the token budget, each job its own rows,
dropped jobs never reach the model, the switch that turns merging off, capacity, and draining on close."""

from __future__ import annotations

import asyncio
import threading

import pytest

from st_backend.server.batcher import Batcher, Job, QueueFull
from st_backend.server.metrics import Metrics


class Recorder:
    """A model call that records each call's key and rows; the first call waits until released."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, key, rows):
        self.started.set()
        self.release.wait(10)
        self.calls.append((key, list(rows)))
        return [f"{key}:{r}" for r in rows]


def run_jobs(specs, *, budget=100, batching=True, capacity=100, drop=()):
    """Submit one job per (key, rows, tokens) while the first call is held, then release; results and calls."""
    recorder = Recorder()

    async def main():
        loop = asyncio.get_running_loop()
        batcher = Batcher(
            "m", recorder, max_batch_tokens=budget, capacity=capacity, batching=batching, metrics=Metrics()
        )
        batcher.start(loop)
        first = Job("hold", ["h"], 1, loop.create_future())
        batcher.submit(first)
        await asyncio.to_thread(recorder.started.wait, 10)
        jobs = [Job(key, rows, tokens, loop.create_future()) for key, rows, tokens in specs]
        for i, job in enumerate(jobs):
            batcher.submit(job)
            if i in drop:
                job.gone = True
        recorder.release.set()
        live = [j.future for i, j in enumerate(jobs) if i not in drop]
        results = await asyncio.wait_for(asyncio.gather(first.future, *live), 10)
        batcher.close(5)
        return results[1:], batcher

    results, batcher = asyncio.run(main())
    return results, recorder.calls[1:], batcher


def test_merges_same_key_fifo_and_each_job_gets_its_rows():
    specs = [("a", ["1", "2"], 2), ("b", ["3"], 1), ("a", ["4"], 1), ("a", ["5", "6", "7"], 3)]
    results, calls, _ = run_jobs(specs)
    assert calls == [("a", ["1", "2", "4", "5", "6", "7"]), ("b", ["3"])]
    assert results == [["a:1", "a:2"], ["b:3"], ["a:4"], ["a:5", "a:6", "a:7"]]


def test_token_budget_splits_calls():
    specs = [("a", ["1"], 60), ("a", ["2"], 50), ("a", ["3"], 40)]
    _, calls, _ = run_jobs(specs, budget=100)
    assert calls == [("a", ["1", "3"]), ("a", ["2"])]  # 2 does not fit beside 1; 3 does; 2 heads the next call


def test_no_batching_runs_each_job_alone():
    specs = [("a", ["1"], 1), ("a", ["2"], 1)]
    results, calls, _ = run_jobs(specs, batching=False)
    assert calls == [("a", ["1"]), ("a", ["2"])] and results == [["a:1"], ["a:2"]]


def test_dropped_jobs_never_reach_the_model():
    specs = [("a", ["1"], 1), ("a", ["gone"], 1), ("a", ["3"], 1)]
    results, calls, batcher = run_jobs(specs, drop={1})
    assert calls == [("a", ["1", "3"])] and results == [["a:1"], ["a:3"]]
    assert batcher.metrics.dropped.value("m") == 1


def test_capacity_counts_the_running_call():
    with pytest.raises(QueueFull):
        run_jobs([("a", ["1"], 1), ("a", ["2"], 1)], capacity=2)


def test_a_failing_call_answers_its_jobs_and_the_worker_lives_on():
    calls = []

    def run(key, rows):
        calls.append(rows)
        if key == "bad":
            raise RuntimeError("model broke")
        return rows

    async def main():
        loop = asyncio.get_running_loop()
        batcher = Batcher("m", run, max_batch_tokens=10, capacity=10, batching=True, metrics=Metrics())
        batcher.start(loop)
        bad, good = Job("bad", ["x"], 1, loop.create_future()), Job("ok", ["y"], 1, loop.create_future())
        batcher.submit(bad)
        with pytest.raises(RuntimeError, match="model broke"):
            await asyncio.wait_for(bad.future, 10)
        batcher.submit(good)
        assert await asyncio.wait_for(good.future, 10) == ["y"]
        batcher.close(5)

    asyncio.run(main())
