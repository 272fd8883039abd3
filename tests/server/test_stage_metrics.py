"""/metrics says where a request's time goes: a histogram per stage (parse, tokenization, queue, inference,
serialize), each counting every request that passed through it, on the fast path and on FastAPI's."""

from __future__ import annotations

import re

import httpx
import pytest

from st_backend.server.config import ServerConfig

from .helpers import serve

STAGES = {  # histogram -> its label
    "st_request_parse_duration": "route",
    "st_request_tokenization_duration": "route",
    "st_request_queue_duration": "model",
    "st_request_inference_duration": "model",
    "st_request_serialize_duration": "model",
}


@pytest.fixture(scope="module")
def server(tiny_embedder):
    live = serve(ServerConfig(model=tiny_embedder))
    yield live
    live.stop()


def stage_counts(server, label: str) -> dict[str, tuple[int, float]]:
    """Each stage histogram's (count, sum) for ``label`` (a route or the model)."""
    text = httpx.get(f"{server.url}/metrics").text
    out = {}
    for name, kind in STAGES.items():
        count = re.search(rf'^{name}_count{{{kind}="{re.escape(label)}"}} (\d+)$', text, re.M)
        total = re.search(rf'^{name}_sum{{{kind}="{re.escape(label)}"}} (\S+)$', text, re.M)
        out[name] = (int(count.group(1)), float(total.group(1))) if count else (0, 0.0)
    return out


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/embeddings", {"input": ["one text", "and another"]}),  # the fast path
        ("/pooling", {"input": ["one text"], "task": "token_embed"}),  # FastAPI's routing
    ],
)
def test_every_stage_counts_each_request(server, path, body):
    model = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
    label = {"route": path, "model": model}
    before = {kind: stage_counts(server, label[kind]) for kind in ("route", "model")}
    for _ in range(3):
        assert httpx.post(f"{server.url}{path}", json=body).status_code == 200
    for name, kind in STAGES.items():
        count, total = stage_counts(server, label[kind])[name]
        was_count, was_total = before[kind][name]
        assert count == was_count + 3, (name, count, was_count)
        assert total > was_total, name


def test_the_stages_are_declared_histograms(server):
    assert httpx.post(f"{server.url}/v1/embeddings", json={"input": "a"}).status_code == 200
    text = httpx.get(f"{server.url}/metrics").text
    for name in STAGES:
        assert f"# TYPE {name} histogram" in text
    assert re.search(r'^st_request_parse_duration_bucket\{route="/v1/embeddings",le="0.0001"\} \d+$', text, re.M)
