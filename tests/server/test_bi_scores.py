"""/score, /v1/score, /v1/rerank and /rerank on an embedding model (the model's similarity of encode_query and
encode_document) and on a multi-vector model (MaxSim, as MultiVectorEncoder.rank / similarity), each equal to the
library call on the same tiny weights; the cross-encoder stays the default when one is served."""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np
import pytest
import torch

import st_backend
from st_backend.server.config import ServerConfig

from .helpers import PROMPTS, serve

QUERY = "what is a cat"
DOCS = ["a cat is a small animal", "Paris is in France", "", "cats " * 80, "a cat is a small animal", "dogs"]
FIRSTS = ["q one", "a cat", "word " * 90]
ATOL = 1e-5


@pytest.fixture(scope="module")
def dot_embedder(tiny_root) -> str:
    from tiny_models import build_st_dir

    return str(build_st_dir("bert", tiny_root, prompts=PROMPTS, similarity_fn_name="dot"))


@pytest.fixture(scope="module")
def server(tiny_embedder, tiny_reranker, tiny_colbert):
    config = ServerConfig(model=tiny_embedder, cross_encoder=tiny_reranker, multi_vector=tiny_colbert)
    live = serve(config)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def dot_server(dot_embedder):
    live = serve(ServerConfig(model=dot_embedder))  # no cross-encoder: scoring defaults to the embedding model
    yield live
    live.stop()


@pytest.fixture(scope="module")
def embedder(tiny_embedder):
    return st_backend.SentenceTransformer(tiny_embedder, device="cpu")


@pytest.fixture(scope="module")
def colbert(tiny_colbert):
    return st_backend.MultiVectorEncoder(tiny_colbert, device="cpu")


def names(server) -> dict[str, str]:
    return {m["kind"]: m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]}


def post(server, path: str, body: dict, status: int = 200) -> dict:
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert response.status_code == status, response.text
    return response.json()


def scores(body: dict) -> list[float]:
    assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    return [d["score"] for d in body["data"]]


def ranked(values) -> list[tuple[int, float]]:
    """CrossEncoder.rank's order: best first, equal scores in input order."""
    values = torch.as_tensor(values).float()
    order = torch.sort(values, descending=True, stable=True).indices.tolist()
    return [(i, float(values[i])) for i in order]


def assert_ranked(body: dict, want: list[tuple[int, float]]) -> None:
    assert [r["index"] for r in body["results"]] == [i for i, _ in want]
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], [s for _, s in want], atol=ATOL)


# -- embedding model ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_rerank_embedding_equals_similarity(server, embedder, path):
    body = post(server, path, {"query": QUERY, "documents": DOCS, "model": names(server)["embedding"]})
    want = embedder.similarity(embedder.encode_query([QUERY]), embedder.encode_document(DOCS))[0]
    assert embedder.similarity_fn_name == "cosine"
    assert_ranked(body, ranked(want))
    assert body["model"] == names(server)["embedding"]


def test_rerank_embedding_top_n_and_documents(server, embedder):
    request = {"query": QUERY, "documents": [{"text": d} for d in DOCS], "top_n": 2, "return_documents": True}
    body = post(server, "/v1/rerank", {**request, "model": names(server)["embedding"]})
    want = ranked(embedder.similarity(embedder.encode_query([QUERY]), embedder.encode_document(DOCS))[0])[:2]
    assert_ranked(body, want)
    assert [r["document"]["text"] for r in body["results"]] == [DOCS[i] for i, _ in want]


@pytest.mark.parametrize("path", ["/score", "/v1/score"])
@pytest.mark.parametrize("sides", [("text_1", "text_2"), ("queries", "documents"), ("queries", "items"),
                                   ("data_1", "data_2")])  # fmt: skip
def test_score_embedding_one_to_many_and_pairwise(server, embedder, path, sides):
    model = names(server)["embedding"]
    first, second = sides
    body = post(server, path, {first: QUERY, second: DOCS, "model": model})
    want = embedder.similarity(embedder.encode_query([QUERY]), embedder.encode_document(DOCS))[0]
    np.testing.assert_allclose(scores(body), want, atol=ATOL)
    body = post(server, path, {first: [QUERY], second: DOCS[:2], "model": model})  # a one-item list: one to many
    np.testing.assert_allclose(scores(body), want[:2], atol=ATOL)
    body = post(server, path, {first: FIRSTS, second: DOCS[:3], "model": model})
    want = embedder.similarity_pairwise(embedder.encode_query(FIRSTS), embedder.encode_document(DOCS[:3]))
    np.testing.assert_allclose(scores(body), want, atol=ATOL)


def test_score_embedding_prompts_go_to_the_query_side(server, embedder):
    model = names(server)["embedding"]
    documents = embedder.encode_document(DOCS)
    for options, kwargs in (
        ({"prompt_name": "document"}, {"prompt_name": "document"}),
        ({"prompt": "x: "}, {"prompt": "x: "}),
    ):
        body = post(server, "/score", {"text_1": QUERY, "text_2": DOCS, "model": model, **options})
        want = embedder.similarity(embedder.encode_query([QUERY], **kwargs), documents)[0]
        np.testing.assert_allclose(scores(body), want, atol=ATOL)
    # The query and document prompts differ, so the roles matter: encode() on both sides gives other scores.
    plain = embedder.similarity(embedder.encode([QUERY]), embedder.encode(DOCS))[0]
    assert not np.allclose(scores(post(server, "/score", {"text_1": QUERY, "text_2": DOCS, "model": model})), plain)


def test_score_embedding_usage(server, embedder):
    body = post(server, "/score", {"text_1": QUERY, "text_2": DOCS, "model": names(server)["embedding"]})
    count = [
        min(len(embedder.tokenizer(t)["input_ids"]), 64) for t in ["query: " + QUERY] + [f"passage: {d}" for d in DOCS]
    ]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == sum(count)  # the query counted once


def test_similarity_fn_name_and_default_model(dot_server, dot_embedder):
    local = st_backend.SentenceTransformer(dot_embedder, device="cpu")
    assert local.similarity_fn_name == "dot"
    queries, documents = local.encode_query([QUERY]), local.encode_document(DOCS)
    body = post(dot_server, "/score", {"text_1": QUERY, "text_2": DOCS})  # no model: the embedding model
    np.testing.assert_allclose(scores(body), local.similarity(queries, documents)[0], atol=ATOL)
    assert not np.allclose(scores(body), torch.cosine_similarity(torch.tensor(queries), torch.tensor(documents)))
    assert_ranked(
        post(dot_server, "/rerank", {"query": QUERY, "documents": DOCS}),
        ranked(local.similarity(queries, documents)[0]),
    )
    error = post(dot_server, "/classify", {"input": ["a"]}, status=400)["error"]
    assert error["code"] == "model_not_loaded" and "--cross-encoder" in error["message"]


# -- multi-vector model -------------------------------------------------------------------------------------


def test_rerank_multi_vector_equals_rank(server, colbert):
    model = names(server)["multi-vector"]
    for path in ("/v1/rerank", "/rerank"):
        body = post(server, path, {"query": QUERY, "documents": DOCS, "model": model})
        assert_ranked(body, [(w["corpus_id"], w["score"]) for w in colbert.rank(QUERY, DOCS)])
    body = post(
        server, "/v1/rerank", {"query": QUERY, "documents": DOCS, "model": model, "top_n": 3, "return_documents": True}
    )
    want = colbert.rank(QUERY, DOCS, top_k=3, return_documents=True)
    assert [(r["index"], r["document"]["text"]) for r in body["results"]] == [(w["corpus_id"], w["text"]) for w in want]


def test_score_multi_vector_equals_maxsim(server, colbert):
    model = names(server)["multi-vector"]
    body = post(server, "/v1/score", {"text_1": QUERY, "text_2": DOCS, "model": model})
    want = colbert.similarity(colbert.encode_query([QUERY]), colbert.encode_document(DOCS))[0]
    np.testing.assert_allclose(scores(body), want, atol=ATOL)
    body = post(server, "/score", {"queries": FIRSTS, "documents": DOCS[:3], "model": model})
    queries, documents = colbert.encode_query(FIRSTS), colbert.encode_document(DOCS[:3])
    want = [float(colbert.similarity([q], [d])[0, 0]) for q, d in zip(queries, documents)]
    np.testing.assert_allclose(scores(body), want, atol=ATOL)


# -- the cross-encoder stays the default; errors ------------------------------------------------------------


def test_cross_encoder_is_the_default(server, tiny_reranker):
    reranker = st_backend.CrossEncoder(tiny_reranker, device="cpu")
    body = post(server, "/v1/score", {"text_1": QUERY, "text_2": DOCS})
    assert body["model"] == names(server)["cross-encoder"]
    np.testing.assert_allclose(scores(body), reranker.predict([(QUERY, d) for d in DOCS]), atol=1e-6)
    body = post(server, "/score", {"queries": FIRSTS, "documents": DOCS[:3]})
    np.testing.assert_allclose(scores(body), reranker.predict(list(zip(FIRSTS, DOCS[:3]))), atol=1e-6)
    body = post(server, "/rerank", {"query": QUERY, "documents": DOCS})
    assert_ranked(body, [(w["corpus_id"], w["score"]) for w in reranker.rank(QUERY, DOCS)])


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({"text_1": "a", "queries": "b", "text_2": "c"}, "text_1", ["given twice", "text_1, queries"]),
        ({"text_2": "c"}, "text_1", ["text_1 / queries / data_1", "missing"]),
        ({"text_1": ["a", "b"], "documents": ["c", "d", "e"]}, "documents", ["text_1 has 2", "documents 3"]),
        ({"text_1": "a", "text_2": ["ok", "word " * 80], "truncate": False}, "text_2[1]", ["limit of 64"]),
        ({"text_1": "word " * 80, "text_2": ["ok"], "truncate": False}, "text_1[0]", ["limit of 64"]),
        ({"text_1": "a", "text_2": "b", "prompt_name": "nope"}, "prompt_name", ["'nope'"]),
        ({"text_1": "a", "text_2": []}, "text_2", ["must not be empty"]),
    ],
)
def test_score_errors(server, body, param, words):
    for model in ("embedding", "multi-vector"):
        error = post(server, "/score", {**body, "model": names(server)[model]}, status=400)["error"]
        assert error["param"] == param, error
        for word in words:
            assert word in error["message"], error["message"]


def test_concurrent_scores_merge_and_keep_their_rows(server, embedder):
    """Concurrent /score and /v1/embeddings requests on the embedding model: each answer equals its own library
    call, and the embedding model's calls held rows of several requests."""
    model = names(server)["embedding"]
    requests = []
    for i in range(48):
        docs = [f"request {i} document {j} " + "word " * (i % 7) for j in range(1 + i % 5)]
        if i % 3:
            requests.append(("/score", {"text_1": f"query {i}", "text_2": docs, "model": model}))
        else:
            requests.append(("/v1/embeddings", {"input": docs, "model": model, "input_type": "query"}))

    async def fire():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(client.post(path, json=body) for path, body in requests))

    answers = asyncio.run(fire())
    for (path, body), response in zip(requests, answers):
        assert response.status_code == 200, response.text
        if path == "/score":
            want = embedder.similarity(
                embedder.encode_query([body["text_1"]]), embedder.encode_document(body["text_2"])
            )[0]
            np.testing.assert_allclose(scores(response.json()), want, atol=ATOL)
        else:
            got = [d["embedding"] for d in response.json()["data"]]
            np.testing.assert_allclose(got, embedder.encode_query(body["input"]), atol=ATOL)
    metrics = httpx.get(f"{server.url}/metrics").text
    name = re.escape(model)
    single = int(re.search(rf'st_batch_requests_bucket{{model="{name}",le="1"}} (\d+)', metrics).group(1))
    calls = int(re.search(rf'st_batch_requests_count{{model="{name}"}} (\d+)', metrics).group(1))
    assert calls - single > 0, "no model call held rows of more than one request"
