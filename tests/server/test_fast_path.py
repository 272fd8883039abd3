"""/v1/embeddings' fast path (server/fast_path.py): a body the schema takes as it is runs the route's code without
FastAPI's routing; every other body goes to FastAPI, which answers as without the fast path."""

from __future__ import annotations

import socket
import time

import httpx
import orjson
import pytest

import st_backend
from st_backend.server import fast_path
from st_backend.server.config import ServerConfig

from .helpers import assert_rows_close, serve

TEXTS = ["a cat sat on the mat", "dogs bark"]


@pytest.fixture(scope="module")
def server(tiny_embedder):
    live = serve(ServerConfig(model=tiny_embedder))
    yield live
    live.stop()


@pytest.fixture()
def taken(monkeypatch):
    """How many requests the fast path answered."""
    calls = []
    embed = fast_path.embed

    async def counted(*args, **kwargs):
        calls.append(1)
        return await embed(*args, **kwargs)

    monkeypatch.setattr(fast_path, "embed", counted)
    return calls


def post(server, body: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/embeddings", content=body, headers={"content-type": "application/json"})


def test_plain_body_takes_the_fast_path_other_bodies_fastapi(server, tiny_embedder, taken):
    want = st_backend.SentenceTransformer(tiny_embedder, device="cpu").encode(TEXTS)
    plain = post(server, orjson.dumps({"input": TEXTS}))
    assert plain.status_code == 200 and len(taken) == 1
    assert_rows_close([d["embedding"] for d in plain.json()["data"]], want)
    # A byte-order mark: pydantic's JSON parser refuses it, Python's json (FastAPI's) reads it.
    bom = post(server, b"\xef\xbb\xbf" + orjson.dumps({"input": TEXTS}))
    assert bom.status_code == 200 and len(taken) == 1
    assert bom.content == plain.content
    wrong = post(server, orjson.dumps({"input": 5}))
    assert wrong.status_code == 422 and len(taken) == 1
    assert wrong.json()["error"]["param"] == "input" and "Invalid request" in wrong.json()["error"]["message"]


def test_route_errors_on_the_fast_path_are_the_routes(server, taken):
    unknown = post(server, orjson.dumps({"input": "a", "model": "nope"}))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    dims = post(server, orjson.dumps({"input": "a", "dimensions": 7}))
    assert dims.status_code == 400 and dims.json()["error"]["param"] == "dimensions" and len(taken) == 1


def test_a_body_in_two_parts_reaches_fastapi_whole(server, tiny_embedder, taken):
    body = orjson.dumps({"input": TEXTS})
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"Connection: close\r\n\r\n" + body[:10])
        time.sleep(0.3)  # the server has read the first part as its own message by now
        sock.sendall(body[10:])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status, _, payload = reply.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), reply[:300]
    want = st_backend.SentenceTransformer(tiny_embedder, device="cpu").encode(TEXTS)
    assert_rows_close([d["embedding"] for d in orjson.loads(payload)["data"]], want)
    assert not taken
