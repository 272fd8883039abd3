"""/v1/rerank, /rerank, /score and /classify on a tiny one-label reranker, each equal to CrossEncoder.rank /
predict on the same weights."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import sentence_transformers
import torch

import st_backend
from st_backend.server.config import ServerConfig

from .helpers import serve

QUERY = "what is a cat"
DOCS = ["a cat is a small animal", "Paris is in France", "", "cats " * 80, "a cat is a small animal", "dogs"]


@pytest.fixture(scope="module")
def server(tiny_reranker):
    live = serve(ServerConfig(model=None, cross_encoder=tiny_reranker))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def local(tiny_reranker):
    return st_backend.CrossEncoder(tiny_reranker, device="cpu")


def post(server, path: str, body: dict) -> dict:
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_rerank_equals_rank(server, local, path):
    body = post(server, path, {"query": QUERY, "documents": DOCS})
    want = local.rank(QUERY, DOCS)
    assert [r["index"] for r in body["results"]] == [w["corpus_id"] for w in want]  # ties keep input order
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], [w["score"] for w in want], atol=1e-6)
    pairs = local.tokenizer([QUERY] * len(DOCS), DOCS, truncation=True, max_length=64)["input_ids"]  # as ST batches
    assert body["usage"]["total_tokens"] == sum(len(p) for p in pairs)


def test_rerank_top_n_documents_and_objects(server, local):
    docs = [{"text": d} for d in DOCS]
    body = post(server, "/v1/rerank", {"query": QUERY, "documents": docs, "top_n": 2, "return_documents": True})
    want = local.rank(QUERY, DOCS, top_k=2, return_documents=True)
    assert [(r["index"], r["document"]["text"]) for r in body["results"]] == [(w["corpus_id"], w["text"]) for w in want]


def test_score_one_to_many_and_pairwise(server, local):
    body = post(server, "/score", {"text_1": QUERY, "text_2": DOCS})
    np.testing.assert_allclose([d["score"] for d in body["data"]], local.predict([(QUERY, d) for d in DOCS]), atol=1e-6)
    firsts = ["q one", "q two", "q three"]
    body = post(server, "/score", {"text_1": firsts, "text_2": DOCS[:3]})
    np.testing.assert_allclose(
        [d["score"] for d in body["data"]], local.predict(list(zip(firsts, DOCS[:3]))), atol=1e-6
    )
    body = post(server, "/score", {"text_1": [QUERY], "text_2": DOCS[:2]})  # a one-item list is broadcast
    assert len(body["data"]) == 2


def test_classify_pairs_and_single_texts(server, local, tiny_reranker):
    body = post(server, "/classify", {"input": [[QUERY, d] for d in DOCS]})
    logits = local.predict([(QUERY, d) for d in DOCS], activation_fn=torch.nn.Identity())
    np.testing.assert_allclose([d["logits"][0] for d in body["data"]], logits, atol=1e-5)
    np.testing.assert_allclose([d["probs"][0] for d in body["data"]], torch.sigmoid(torch.tensor(logits)), atol=1e-6)
    assert {d["label"] for d in body["data"]} == {"LABEL_0"} and body["data"][0]["num_classes"] == 1
    plain = sentence_transformers.CrossEncoder(tiny_reranker, device="cpu")  # st_backend's predict takes pairs only
    texts = ["just one text", "cats " * 80]
    body = post(server, "/classify", {"input": texts})
    want = [float(plain.predict(t, activation_fn=torch.nn.Identity())) for t in texts]
    np.testing.assert_allclose([d["logits"][0] for d in body["data"]], want, atol=1e-5)
