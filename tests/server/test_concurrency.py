"""Many concurrent mixed requests (sizes, options, routes): each response holds exactly its own rows, in its own
order (checked against a local call on the same inputs), while /metrics shows calls holding several requests."""

from __future__ import annotations

import asyncio
import base64
import random
import re

import httpx
import numpy as np
import pytest

import st_backend
from st_backend.server.config import ServerConfig

from .helpers import MATRYOSHKA, assert_rows_close, serve

N_REQUESTS = 240
CONCURRENCY = 32


@pytest.fixture(scope="module")
def server(tiny_embedder, tiny_reranker):
    live = serve(ServerConfig(model=tiny_embedder, cross_encoder=tiny_reranker, matryoshka_dimensions=MATRYOSHKA))
    yield live
    live.stop()


def make_requests(seed: int = 0) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    words = "alpha beta gamma delta cat dog house river stone light".split()
    out = []
    for i in range(N_REQUESTS):
        n = rng.choice([1, 1, 2, 3, 8, 16, 40])
        texts = [f"request {i} row {j} " + " ".join(rng.choices(words, k=rng.randint(0, 40))) for j in range(n)]
        kind = rng.choice(
            ["plain", "base64", "query", "document", "prompt", "normalize", "dims", "tokens", "rerank", "score"]
        )
        body = {"input": texts}
        if kind == "base64":
            body["encoding_format"] = "base64"
        elif kind in ("query", "document"):
            body["role"] = kind
        elif kind == "prompt":
            body["prompt_name"] = "query"
        elif kind == "normalize":
            body["normalize"] = True
        elif kind == "dims":
            body.update(dimensions=rng.choice(MATRYOSHKA[1:]), normalize=rng.random() < 0.5)
        elif kind == "tokens":
            body["task"] = "token_embed"
        elif kind == "rerank":
            body = {"query": f"query {i}", "documents": texts}
        elif kind == "score":
            body = {"text_1": f"query {i}", "text_2": texts}
        path = {"tokens": "/pooling", "rerank": "/v1/rerank", "score": "/score"}.get(kind, "/v1/embeddings")
        out.append((path, body))
    return out


def expected(embedder, reranker, path: str, body: dict):
    if path == "/v1/rerank":
        return reranker.rank(body["query"], body["documents"])
    if path == "/score":
        return reranker.predict([(body["text_1"], t) for t in body["text_2"]])
    texts = body["input"]
    if path == "/pooling":
        return [t.numpy() for t in embedder.encode(texts, output_value="token_embeddings")]
    call = {"query": embedder.encode_query, "document": embedder.encode_document}.get(body.get("role"), embedder.encode)
    kwargs = {"normalize_embeddings": body.get("normalize", False), "truncate_dim": body.get("dimensions")}
    if "prompt_name" in body:
        kwargs["prompt_name"] = body["prompt_name"]
    return call(texts, **kwargs)


def check(path: str, body: dict, got: dict, want) -> None:
    if path == "/v1/rerank":
        assert [r["index"] for r in got["results"]] == [w["corpus_id"] for w in want]
        np.testing.assert_allclose(
            [r["relevance_score"] for r in got["results"]], [w["score"] for w in want], atol=1e-5
        )
    elif path == "/score":
        np.testing.assert_allclose([d["score"] for d in got["data"]], want, atol=1e-5)
    elif path == "/pooling":
        assert [d["index"] for d in got["data"]] == list(range(len(want)))
        for row, w in zip(got["data"], want):
            assert_rows_close(row["data"], w)
    else:
        rows = [d["embedding"] for d in got["data"]]
        if body.get("encoding_format") == "base64":
            rows = [np.frombuffer(base64.b64decode(r), dtype="<f4") for r in rows]
        assert_rows_close(rows, want)


async def fire(url: str, requests: list[tuple[str, dict]]) -> list:
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=CONCURRENCY)) as client:

        async def one(path, body):
            async with limit:
                response = await client.post(path, json=body)
                assert response.status_code == 200, response.text
                return response.json()

        return await asyncio.gather(*(one(p, b) for p, b in requests))


def test_concurrent_mixed_requests_get_their_own_rows(server, tiny_embedder, tiny_reranker):
    embedder = st_backend.SentenceTransformer(tiny_embedder, device="cpu", matryoshka_dimensions=MATRYOSHKA)
    reranker = st_backend.CrossEncoder(tiny_reranker, device="cpu")
    requests = make_requests()
    answers = asyncio.run(fire(server.url, requests))
    for (path, body), got in zip(requests, answers):
        check(path, body, got, expected(embedder, reranker, path, body))
    metrics = httpx.get(f"{server.url}/metrics").text
    name = re.escape(
        next(m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"] if m["kind"] == "embedding")
    )
    single = int(re.search(rf'st_batch_requests_bucket{{model="{name}",le="1"}} (\d+)', metrics).group(1))
    calls = int(re.search(rf'st_batch_requests_count{{model="{name}"}} (\d+)', metrics).group(1))
    assert calls - single > 0, "no model call held rows of more than one request"
