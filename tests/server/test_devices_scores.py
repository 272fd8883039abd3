"""``serve --devices cpu`` with an embedding, a multi-vector and a sparse model: scoring on the embedding and
multi-vector models and the sparse routes run in the device process and equal the library calls (the front end's
copies hold no weights: the sparse size comes from the device)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

import st_backend
from st_backend.server.config import ServerConfig

from .helpers import serve
from .test_sparse_routes import TEXTS, assert_entries

QUERY = "what is a cat"
DOCS = ["a cat is a small animal", "Paris is in France", "", "cats " * 80]


@pytest.fixture(scope="module")
def server(tiny_embedder, tiny_colbert, tiny_splade):
    config = ServerConfig(
        model=tiny_embedder, multi_vector=tiny_colbert, sparse=tiny_splade, devices=("cpu",), device_timeout=120
    )
    live = serve(config)
    yield live
    live.stop()


def post(server, path: str, body: dict):
    response = httpx.post(f"{server.url}{path}", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_scores_and_sparse_on_a_device(server, tiny_embedder, tiny_colbert, tiny_splade):
    names = {m["kind"]: m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]}
    embedder = st_backend.SentenceTransformer(tiny_embedder, device="cpu")
    body = post(server, "/score", {"text_1": QUERY, "text_2": DOCS})  # no cross-encoder: the embedding model
    want = embedder.similarity(embedder.encode_query([QUERY]), embedder.encode_document(DOCS))[0]
    np.testing.assert_allclose([d["score"] for d in body["data"]], want, atol=1e-5)

    colbert = st_backend.MultiVectorEncoder(tiny_colbert, device="cpu")
    body = post(server, "/rerank", {"query": QUERY, "documents": DOCS, "model": names["multi-vector"]})
    want = colbert.rank(QUERY, DOCS)
    assert [r["index"] for r in body["results"]] == [w["corpus_id"] for w in want]
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], [w["score"] for w in want], atol=1e-5)

    sparse = st_backend.SparseEncoder(tiny_splade, device="cpu")
    assert_entries(post(server, "/embed_sparse", {"inputs": TEXTS, "role": "query"}), sparse.encode_query(TEXTS))
    body = post(server, "/pooling", {"input": TEXTS, "task": "embed", "model": names["sparse"]})
    want = sparse.encode(TEXTS, convert_to_sparse_tensor=False).numpy()
    np.testing.assert_allclose([d["data"] for d in body["data"]], want, atol=1e-5)
    info = next(m for m in httpx.get(f"{server.url}/info").json()["models"] if m["kind"] == "sparse")
    assert info["dimension"] == want.shape[1] and info["devices"] == ["cpu"]
