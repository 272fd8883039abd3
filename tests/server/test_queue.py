"""Queue behaviour with a deliberately slow model call: a full queue answers 429 with Retry-After, and a request
whose client disconnected while queued is dropped before it reaches the model."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from st_backend.server.bridge import Bridge
from st_backend.server.config import ServerConfig

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
