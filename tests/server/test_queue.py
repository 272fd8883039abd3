"""Queue behaviour with a deliberately slow model call: a full queue answers 429 with Retry-After, and a request
whose client disconnected while queued is dropped before it reaches the model."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from st_backend.server.bridge import Bridge
from st_backend.server.config import ServerConfig
from st_backend.server.ops import Encode

from .helpers import serve


class SlowBridge(Bridge):
    """Calls holding the text "slow" wait on ``gate``; every row the model sees is recorded."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[str] = []
        self.gate = threading.Event()
        self.running = threading.Event()

    def run(self, served, key, rows):
        self.seen += [r for r in rows if isinstance(r, str)]
        if "slow" in rows:
            self.running.set()
            self.gate.wait(20)
        return super().run(served, key, rows)


@pytest.fixture(scope="module")
def slow(tiny_embedder):
    bridge = SlowBridge(tiny_embedder)
    live = serve(ServerConfig(model=tiny_embedder, queue_capacity=2), bridge)
    yield live, bridge
    bridge.gate.set()
    live.stop()


def hold(live, bridge) -> threading.Thread:
    """Start a request that occupies the model until bridge.gate is set."""
    bridge.gate.clear()
    bridge.running.clear()
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(r=httpx.post(f"{live.url}/v1/embeddings", json={"input": "slow"}, timeout=30))
    )
    thread.result = result
    thread.start()
    assert bridge.running.wait(20)
    return thread


def test_full_queue_is_429_with_retry_after(slow):
    live, bridge = slow
    holder = hold(live, bridge)
    queued = threading.Thread(
        target=lambda: httpx.post(f"{live.url}/v1/embeddings", json={"input": "queued"}, timeout=30)
    )
    queued.start()
    time.sleep(0.5)  # running + queued = the capacity of 2
    response = httpx.post(f"{live.url}/v1/embeddings", json={"input": "refused"}, timeout=30)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1" and "--queue-capacity" in response.json()["error"]["message"]
    bridge.gate.set()
    holder.join(20)
    queued.join(20)
    assert holder.result["r"].status_code == 200
    assert "refused" not in bridge.seen


def test_disconnected_client_is_dropped_before_the_model(slow):
    live, bridge = slow
    holder = hold(live, bridge)
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection while queued
        httpx.post(f"{live.url}/v1/embeddings", json={"input": ["gone-client"]}, timeout=0.5)
    time.sleep(0.3)
    bridge.gate.set()
    holder.join(20)
    after = httpx.post(f"{live.url}/v1/embeddings", json={"input": "after"}, timeout=30)
    assert after.status_code == 200
    assert "gone-client" not in bridge.seen and "after" in bridge.seen
    metrics = httpx.get(f"{live.url}/metrics").text
    assert 'st_request_dropped{model="' in metrics


def test_merged_calls_draw_no_progress_bar(tiny_embedder, monkeypatch):
    """At log level INFO, ST's encode shows a progress bar per call unless told not to: the server's merged calls
    must draw none (it was one logged bar per merged call)."""
    import logging

    from st_backend.engine import engine as engine_module

    def no_bar(*args, **kwargs):
        raise AssertionError("a progress bar was drawn for a merged call")

    monkeypatch.setattr(engine_module, "tqdm", no_bar)
    st_logger = logging.getLogger("sentence_transformers")
    level = st_logger.level
    st_logger.setLevel(logging.INFO)
    try:
        bridge = Bridge(tiny_embedder)
        bridge.load()
        served = next(iter(bridge.served.values()))
        out = bridge.run(served, Encode(), ["a text", "another text"])
        assert out.shape[0] == 2
    finally:
        st_logger.setLevel(level)


def test_a_long_text_does_not_hold_up_health(tiny_embedder):
    """One request with a multi-megabyte text: its token count runs off the event loop (it ran on it for fewer than
    16 texts), so /health answers within 50 ms (best of three probes a round) the whole time."""
    import time

    import httpx

    live = serve(ServerConfig(model=tiny_embedder, max_body_bytes=16 << 20))
    try:
        import random

        rng = random.Random(0)
        words = [
            "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 12))) for _ in range(5000)
        ]
        text = " ".join(rng.choice(words) for _ in range(1_200_000))  # ~8 MB of varied words
        done = threading.Event()
        result = {}

        def long_request() -> None:
            result["r"] = httpx.post(f"{live.url}/v1/embeddings", json={"input": text}, timeout=120)
            done.set()

        thread = threading.Thread(target=long_request)
        thread.start()
        worst, rounds = 0.0, 0
        with httpx.Client() as client:
            client.get(f"{live.url}/health")
            while not done.is_set() and rounds < 400:
                best = float("inf")
                for _ in range(3):  # best of three: the machine's own hiccups are not the server's
                    start = time.perf_counter()
                    assert client.get(f"{live.url}/health", timeout=10).status_code == 200
                    best = min(best, time.perf_counter() - start)
                worst, rounds = max(worst, best), rounds + 1
                time.sleep(0.01)
        thread.join(120)
        assert result["r"].status_code == 200 and len(result["r"].json()["data"]) == 1
        assert rounds >= 3, "the long request finished before /health was probed: make it longer"
        assert worst < 0.05, f"/health took {worst * 1e3:.0f} ms while a long text was counted"
    finally:
        live.stop()
