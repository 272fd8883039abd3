"""/v1/embeddings' fast path (server/fast_path.py): a body the schema takes as it is runs the route's code without
FastAPI's routing; every other body goes to FastAPI, which answers as without the fast path."""

from __future__ import annotations

import asyncio
import types

import httpx
import orjson
import pytest
import sentence_transformers

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
    want = sentence_transformers.SentenceTransformer(tiny_embedder, device="cpu").encode(TEXTS)  # plain ST
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


def test_plain_answer_has_fastapis_status_and_headers(server, taken):
    body = orjson.dumps({"input": "a"})
    fast = post(server, body)
    slow = post(server, b"\xef\xbb\xbf" + body)  # the same request on FastAPI's path
    assert len(taken) == 1 and fast.content == slow.content
    keep = ("content-type", "content-length")
    assert {k: fast.headers[k] for k in keep} == {k: slow.headers[k] for k in keep}


def test_an_unexpected_error_is_a_500_with_the_nested_body_and_the_server_keeps_serving(server, monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(fast_path, "embed", broken)
    failed = post(server, orjson.dumps({"input": "a"}))
    assert failed.status_code == 500 and failed.headers["content-type"] == "application/json"
    assert failed.json()["error"]["message"].startswith("Internal error (RuntimeError: boom)")
    monkeypatch.undo()
    assert post(server, orjson.dumps({"input": "a"})).status_code == 200


class _Inner:
    """The app behind the fast path: records the messages it reads."""

    def __init__(self) -> None:
        self.messages = []

    async def __call__(self, scope, receive, send) -> None:
        while True:
            message = await receive()
            self.messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                return


def _through(messages: list[dict]) -> list[dict]:
    inner = _Inner()
    layer = fast_path.FastEmbeddings(inner, st=types.SimpleNamespace(ready=True))
    queue = list(messages)

    async def receive():
        return queue.pop(0)

    async def send(message):
        raise AssertionError(f"the fast path answered: {message}")

    scope = {"type": "http", "path": "/v1/embeddings", "method": "POST", "headers": []}
    asyncio.run(layer(scope, receive, send))
    return inner.messages


def test_a_body_in_two_messages_reaches_fastapi_whole_and_in_order():
    parts = [
        {"type": "http.request", "body": b'{"inp', "more_body": True},
        {"type": "http.request", "body": b'ut": "a"}', "more_body": False},
    ]
    assert _through([dict(p) for p in parts]) == parts


def test_a_disconnect_before_the_body_reaches_fastapi_as_it_came():
    assert _through([{"type": "http.disconnect"}]) == [{"type": "http.disconnect"}]


def test_a_body_the_schema_refuses_reaches_fastapi_unchanged():
    message = {"type": "http.request", "body": b'{"input": 5}', "more_body": False}
    assert _through([dict(message)]) == [message]
