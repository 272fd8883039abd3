"""``serve --devices cpu,cpu``: one engine process per device behind one front end. Answers equal a local call row
by row, calls spread over both devices, a device killed mid-traffic has its calls retried on the other (or, when
that fails too, answered 503) and comes back, and shutdown leaves no device process behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

import st_backend
from st_backend.server import devices
from st_backend.server.cli import config_from, run
from st_backend.server.config import ServerConfig

from .helpers import MATRYOSHKA, LiveServer, serve
from .test_cli_shutdown import free_port, parse
from .test_concurrency import check, expected, make_requests

WAIT_S = 120  # every wait on a busy 2-core machine: a restart imports torch and loads the model again


@pytest.fixture(scope="module")
def server(tiny_embedder, tiny_reranker):
    config = ServerConfig(
        model=tiny_embedder,
        cross_encoder=tiny_reranker,
        matryoshka_dimensions=MATRYOSHKA,
        devices=("cpu", "cpu"),
        device_timeout=WAIT_S,
    )
    live = serve(config)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def local(tiny_embedder, tiny_reranker):
    embedder = st_backend.SentenceTransformer(tiny_embedder, device="cpu", matryoshka_dimensions=MATRYOSHKA)
    return embedder, st_backend.CrossEncoder(tiny_reranker, device="cpu")


async def _fire(url: str, requests: list, concurrency: int = 16) -> list[httpx.Response]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as client:

        async def one(path, body):
            async with limit:
                return await client.post(path, json=body)

        return await asyncio.gather(*(one(p, b) for p, b in requests))


def fire(url: str, requests: list) -> list[httpx.Response]:
    return asyncio.run(_fire(url, requests))


def in_background(url: str, requests: list) -> tuple[threading.Thread, dict]:
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(responses=fire(url, requests)), daemon=True)
    thread.start()
    return thread, out


def _stat(pid: int) -> list[str] | None:
    """/proc's fields after the command name (state, ppid, ...), None once the process is gone (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def children(pid: int) -> dict[int, str]:
    """pid -> command line of every live child of ``pid``."""
    out = {}
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else None
        if fields is not None and fields[0] != "Z" and int(fields[1]) == pid:
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    out[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
            except FileNotFoundError:
                pass
    return out


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=30).json()


def metrics_text(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=30).text


def metric(text: str, name: str, worker: int) -> float:
    match = re.search(rf'^{name}{{worker="{worker}",device="cpu"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def kill_when_busy(pool: devices.DevicePool, index: int, traffic: threading.Thread) -> int:
    """SIGKILL the device's process while it holds a call it cannot have answered; its pid. (Frozen first, and
    killed only once the front end has read every answer the process sent before it froze.)"""
    d = pool.devices[index]
    while traffic.is_alive():
        if d.state == "ready" and d.pending:
            pid = d.pid
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.2)
            if d.pending:
                os.kill(pid, signal.SIGKILL)
                return pid
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.0005)
    raise AssertionError(f"device {index} never held a call while the requests ran")


def wait_back(url: str, index: int, old_pid: int) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        entry = health(url)["devices"][index]
        if entry["state"] == "ready" and entry["pid"] != old_pid:
            return entry
        time.sleep(0.25)
    raise AssertionError(f"device {index} did not come back: {health(url)}")


def test_answers_equal_local_calls_and_spread_over_devices(server, local):
    requests = make_requests(seed=1)[:60]
    responses = fire(server.url, requests)
    for (path, body), response in zip(requests, responses):
        assert response.status_code == 200, response.text
        check(path, body, response.json(), expected(*local, path, body))
    state = health(server.url)
    assert state["status"] == "ok" and [d["state"] for d in state["devices"]] == ["ready", "ready"]
    assert all(d["calls"] > 0 for d in state["devices"]), state
    text = httpx.get(f"{server.url}/metrics").text
    assert all(metric(text, "st_device_calls", i) > 0 and metric(text, "st_device_up", i) == 1 for i in (0, 1))
    info = httpx.get(f"{server.url}/info").json()
    assert all(m["devices"] == ["cpu", "cpu"] for m in info["models"])


def test_killed_devices_calls_are_retried_or_503_and_they_come_back(server, local, monkeypatch):
    pool = server.app.state.st.bridge.pool
    # Device 0 dies holding a call: the other device answers its lost calls.
    requests = make_requests(seed=2)[:80]
    thread, out = in_background(server.url, requests)
    first = kill_when_busy(pool, 0, thread)
    thread.join(WAIT_S)
    assert not thread.is_alive(), "requests hung after a device died"
    for (path, body), response in zip(requests, out["responses"]):
        assert response.status_code == 200, response.text
        check(path, body, response.json(), expected(*local, path, body))
    assert metric(metrics_text(server.url), "st_device_lost_calls", 0) >= 1

    # Device 1 dies (device 0 may still be restarting) holding a call with no second try left: MAX_TRIES=1
    # stands in for a call whose retry's device died too. It is a clear 503; the others wait for a restart.
    monkeypatch.setattr(devices, "MAX_TRIES", 1)
    requests = [("/v1/embeddings", {"input": [f"text {i} " * 20 for i in range(8)]}) for _ in range(60)]
    thread, out = in_background(server.url, requests)
    second = kill_when_busy(pool, 1, thread)
    thread.join(WAIT_S)
    assert not thread.is_alive(), "requests hung after a device died"
    statuses = [r.status_code for r in out["responses"]]
    assert set(statuses) <= {200, 503} and 503 in statuses, statuses
    failed = next(r for r in out["responses"] if r.status_code == 503)
    error = failed.json()["error"]
    assert error["code"] == "device_lost" and error["type"] == "service_unavailable" and "died" in error["message"]
    assert failed.headers["retry-after"] == "5"

    for index, pid in enumerate((first, second)):
        assert wait_back(server.url, index, pid)["restarts"] == 1 and not alive(pid)
        assert metric(metrics_text(server.url), "st_device_restarts", index) == 1
    assert health(server.url)["status"] == "ok"


def test_shutdown_stops_every_device_process(server):
    pids = [d["pid"] for d in health(server.url)["devices"]]
    assert all(alive(p) for p in pids)
    server.stop()
    assert not any(alive(p) for p in pids)
    assert all(d["state"] == "stopped" for d in server.app.state.st.bridge.health())


def test_a_device_that_cannot_load_fails_the_start_with_its_reason(tiny_embedder):
    from st_backend.server.app import create_app

    before = children(os.getpid())
    live = LiveServer(create_app(ServerConfig(model=tiny_embedder, devices=("cuda:99",))))
    with pytest.raises(RuntimeError, match=r"cuda:99 \(worker 0\) could not load the models: "):
        live.start(WAIT_S)
    live.stop()
    left = {pid: cmd for pid, cmd in children(os.getpid()).items() if pid not in before}
    assert all("resource_tracker" in cmd for cmd in left.values()), left  # multiprocessing's own helper


def test_devices_flag():
    config = config_from(parse(["--devices", "cuda:0, cuda:1", "--device-timeout", "30"]))
    assert (config.devices, config.device_timeout) == (("cuda:0", "cuda:1"), 30.0)
    assert config_from(parse([])).devices is None
    with pytest.raises(SystemExit, match="not both"):
        run(parse(["--device", "cpu", "--devices", "cpu,cpu"]))


def test_cli_sigterm_to_the_group_drains_and_stops_the_device(tiny_embedder):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [tiny_embedder, "--port", str(port), "--devices", "cpu", "--log-level", "warning"]
    code = f"import sys; from st_backend.server.cli import main; sys.exit(main({argv!r}))"
    # A session of its own: SIGTERM goes to the whole group, as a terminal's Ctrl-C or systemd's stop would.
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        pids = [d["pid"] for d in health(url)["devices"]]
        assert set(children(proc.pid)) >= set(pids)
        n, texts = 8, [f"row {i} about a quiet evening by the river, with more words to embed" for i in range(64)]
        thread, out = in_background(url, [("/v1/embeddings", {"input": texts})] * n)
        while thread.is_alive():  # every request accepted before the signal
            found = re.search(r'st_request_input_length_count{route="/v1/embeddings"} (\d+)', metrics_text(url))
            if found and int(found.group(1)) >= n:
                break
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGTERM)  # the device process ignores it and finishes the drain
        thread.join(WAIT_S)
        assert [r.status_code for r in out["responses"]] == [200] * n
        assert proc.wait(WAIT_S) in (0, -signal.SIGTERM)
        assert not any(alive(p) for p in pids)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the device process too
            proc.wait()


def test_a_broken_cuda_context_ends_the_device_process():
    # The process answers the call, then exits so the supervisor starts a fresh one (every later call would fail).
    from st_backend.server.device_process import _device_is_broken

    assert _device_is_broken(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not _device_is_broken(ValueError("input 3 is empty"))
    assert not _device_is_broken(RuntimeError("shape mismatch"))


def test_an_unreadable_message_stops_the_device_instead_of_hanging_it():
    """The device's inbox thread ends the device (the supervisor then restarts it and retries its calls) when
    a message does not unpickle, instead of dying alone and leaving the device waiting forever."""
    import pickle
    import queue

    from st_backend.server.device_process import _inbox

    class Conn:
        def __init__(self):
            self.messages = [("call", 1, "m", ("embed",), ["a"])]

        def recv(self):
            if self.messages:
                return self.messages.pop(0)
            raise pickle.UnpicklingError("invalid load key")

    inbox: queue.SimpleQueue = queue.SimpleQueue()
    thread = threading.Thread(target=_inbox, args=(Conn(), inbox), daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert inbox.get(timeout=1)[0] == "call"
    assert inbox.get(timeout=1) is None
