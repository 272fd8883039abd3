"""``serve --sparse``: TEI's /embed_sparse and vLLM-style /pooling (task embed_sparse, and embed: dense rows) on a
tiny SPLADE model, each equal to SparseEncoder.encode / encode_query / encode_document on the same weights (the
same active indices, values within 1e-5)."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
import torch

import st_backend
from st_backend.server.config import ServerConfig

from .helpers import serve

TEXTS = ["The cat sat on the mat.", "", "a", "word " * 80, "what is sparse retrieval?", "tokens, punctuation; more."]


@pytest.fixture(scope="module")
def server(tiny_embedder, tiny_splade):
    live = serve(ServerConfig(model=tiny_embedder, sparse=tiny_splade, max_inputs=16))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def local(tiny_splade):
    return st_backend.SparseEncoder(tiny_splade, device="cpu")


def names(server) -> dict[str, str]:
    return {m["kind"]: m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]}


def post(server, path: str, body: dict, status: int = 200):
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert response.status_code == status, response.text
    return response.json()


def rows_of(sparse: torch.Tensor) -> list[tuple[list[int], np.ndarray]]:
    """(active indices, values) of each row of ST's (n, vocab) sparse output, sorted by index."""
    dense = sparse.to_dense()
    return [(torch.nonzero(r).flatten().tolist(), r[r != 0].numpy()) for r in dense]


def assert_entries(got: list[list[dict]], want: torch.Tensor) -> None:
    expected = rows_of(want)
    assert len(got) == len(expected)
    for i, (entries, (indices, values)) in enumerate(zip(got, expected)):
        assert [e["index"] for e in entries] == indices, f"row {i}: active indices differ"
        assert all(e["value"] != 0 for e in entries)
        np.testing.assert_allclose([e["value"] for e in entries], values, atol=1e-5, err_msg=f"row {i}")


@pytest.mark.parametrize(
    "options, call",
    [
        ({}, lambda m, t: m.encode(t)),
        ({"input_type": "query"}, lambda m, t: m.encode_query(t)),
        ({"role": "document"}, lambda m, t: m.encode_document(t)),
        ({"prompt_name": "query"}, lambda m, t: m.encode(t, prompt_name="query")),
        ({"prompt": "search: "}, lambda m, t: m.encode(t, prompt="search: ")),
        ({"max_active_dims": 4}, lambda m, t: m.encode(t, max_active_dims=4)),
        ({"role": "query", "max_active_dims": 2}, lambda m, t: m.encode_query(t, max_active_dims=2)),
    ],
)
def test_embed_sparse_equals_encode(server, local, options, call):
    body = post(server, "/embed_sparse", {"inputs": TEXTS, **options})
    assert_entries(body, call(local, TEXTS))


def test_embed_sparse_one_text_and_usage(server, local):
    body = post(server, "/embed_sparse", {"inputs": "The cat sat on the mat."})
    assert len(body) == 1  # TEI: a list of rows for one text too
    assert_entries(body, local.encode(["The cat sat on the mat."]))
    body = post(server, "/pooling", {"input": TEXTS, "task": "embed_sparse", "role": "query"})
    want = [min(len(local.tokenizer("query: " + t)["input_ids"]), 64) for t in TEXTS]
    assert body["usage"]["prompt_tokens"] == sum(want)


def test_pooling_embed_sparse_and_dense(server, local):
    model = names(server)["sparse"]
    body = post(server, "/pooling", {"input": TEXTS, "task": "embed_sparse", "role": "document"})  # the sparse model
    assert body["model"] == model and [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
    assert_entries([d["data"] for d in body["data"]], local.encode_document(TEXTS))
    # task embed on the sparse model: dense vocabulary-sized rows, as encode(convert_to_sparse_tensor=False)
    want = local.encode(TEXTS, convert_to_sparse_tensor=False, max_active_dims=5).numpy()
    assert want.shape[1] == len(local.tokenizer)
    for fmt in ("float", "base64"):
        body = post(server, "/pooling", {"input": TEXTS, "task": "embed", "model": model, "max_active_dims": 5,
                                         "encoding_format": fmt})  # fmt: skip
        rows = [d["data"] for d in body["data"]]
        if fmt == "base64":
            rows = [np.frombuffer(base64.b64decode(r), dtype="<f4") for r in rows]
        got = np.asarray(rows)
        assert np.array_equal(got != 0, want != 0)
        np.testing.assert_allclose(got, want, atol=1e-5)
    # without a model name, task embed stays on the embedding model
    assert post(server, "/pooling", {"input": TEXTS[:1], "task": "embed"})["model"] == names(server)["embedding"]


def test_sparse_model_is_listed_and_tokenizes(server, local):
    model = names(server)["sparse"]
    info = next(m for m in httpx.get(f"{server.url}/info").json()["models"] if m["kind"] == "sparse")
    assert info["dimension"] == len(local.tokenizer) and info["engine"]["path"] == "packed"
    body = post(server, "/tokenize", {"input": "a cat", "model": model})
    assert body["data"][0]["ids"] == local.tokenizer("a cat")["input_ids"]


@pytest.mark.parametrize(
    "path, body, status, param, words",
    [
        ("/embed_sparse", {"inputs": []}, 400, "inputs", ["must not be empty"]),
        ("/embed_sparse", {"inputs": ["a"] * 17}, 400, "inputs", ["at most 16"]),
        ("/embed_sparse", {"inputs": ["ok", "word " * 80], "truncate": False}, 400, "inputs[1]", ["limit of 64"]),
        ("/embed_sparse", {"inputs": "a", "truncation_direction": "left"}, 400, "truncation_direction", ["right"]),
        ("/embed_sparse", {"inputs": "a", "prompt_name": "nope"}, 400, "prompt_name", ["'nope'"]),
        ("/embed_sparse", {"inputs": 5}, 422, "inputs", []),
        ("/embed_sparse", {"inputs": "a", "max_active_dims": 0}, 422, "max_active_dims", []),
        ("/pooling", {"input": [[5, 6]], "task": "embed_sparse"}, 400, "input", ["texts, not token ids"]),
        ("/pooling", {"input": "a", "task": "embed_sparse", "dimensions": 8}, 400, "dimensions", ["dense"]),
        ("/pooling", {"input": "a", "task": "embed_sparse", "normalize": True}, 400, "normalize", ["dense"]),
        ("/pooling", {"input": "a", "task": "embed_sparse", "encoding_format": "base64"}, 400, "encoding_format",
         ["float"]),
        ("/pooling", {"input": "a", "task": "embed", "max_active_dims": 3}, 400, "max_active_dims", ["sparse"]),
    ],
)  # fmt: skip
def test_sparse_errors(server, path, body, status, param, words):
    error = post(server, path, body, status=status)["error"]
    assert error["param"] == param, error
    for word in words:
        assert word in error["message"], error["message"]


def test_wrong_kinds(server):
    error = post(server, "/embed_sparse", {"inputs": "a", "model": names(server)["embedding"]}, status=400)["error"]
    assert error["code"] == "wrong_model_kind"
    error = post(server, "/pooling", {"input": "a", "task": "token_embed", "model": names(server)["sparse"]}, 400)
    assert error["error"]["code"] == "wrong_model_kind"


@pytest.fixture(scope="module")
def router_splade(tiny_splade, tiny_root) -> str:
    """Inference-free SPLADE: a Router with SparseStaticEmbedding for queries, the tiny SPLADE's MLM for documents."""
    import sentence_transformers
    import transformers
    from sentence_transformers.sparse_encoder.modules import (
        MLMTransformer,
        Router,
        SparseStaticEmbedding,
        SpladePooling,
    )

    from st_backend.bench.factory import cached_build

    def build(path) -> None:
        tok = transformers.AutoTokenizer.from_pretrained(tiny_splade)
        weight = torch.rand(len(tok), generator=torch.Generator().manual_seed(0))
        router = Router.for_query_document(
            query_modules=[SparseStaticEmbedding(tokenizer=tok, weight=weight, frozen=True)],
            document_modules=[MLMTransformer(tiny_splade), SpladePooling("max")],
        )
        sentence_transformers.SparseEncoder(modules=[router], device="cpu").save(str(path))

    return str(cached_build(tiny_root / "server-splade" / "router", build))


def test_inference_free_router(router_splade):
    local = st_backend.SparseEncoder(router_splade, device="cpu")
    live = serve(ServerConfig(model=None, sparse=router_splade))
    try:
        for options, call in (({"role": "query"}, local.encode_query), ({"role": "document"}, local.encode_document)):
            assert_entries(post(live, "/embed_sparse", {"inputs": TEXTS, **options}), call(TEXTS))
    finally:
        live.stop()
