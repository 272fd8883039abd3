"""/v1/embeddings options and /pooling on tiny models, each equal to the Python API call it stands for: prompts,
roles, normalize, Matryoshka dimensions, token embeddings, multi-vector token vectors, token-id input."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
import sentence_transformers
import torch

import st_backend
from st_backend.server.config import ServerConfig

from .helpers import MATRYOSHKA, assert_rows_close, serve

TEXTS = ["a cat sat on the mat", "dogs bark", "", "word " * 100]  # the last is cut at the tiny models' 64


@pytest.fixture(scope="module")
def server(tiny_embedder, tiny_colbert):
    live = serve(ServerConfig(model=tiny_embedder, multi_vector=tiny_colbert, matryoshka_dimensions=MATRYOSHKA))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def local(tiny_embedder):
    return st_backend.SentenceTransformer(tiny_embedder, device="cpu", matryoshka_dimensions=MATRYOSHKA)


@pytest.fixture(scope="module")
def colbert(tiny_colbert):
    return st_backend.MultiVectorEncoder(tiny_colbert, device="cpu")


def names(server) -> dict[str, str]:
    models = httpx.get(f"{server.url}/v1/models").json()["data"]
    return {m["kind"]: m["id"] for m in models}


def post(server, path: str, body: dict) -> dict:
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def vectors(body: dict, field: str = "embedding") -> list:
    return [d[field] for d in body["data"]]


@pytest.mark.parametrize(
    "options, call",
    [
        ({}, lambda m, t: m.encode(t)),
        ({"prompt_name": "query"}, lambda m, t: m.encode(t, prompt_name="query")),
        ({"prompt": "custom: "}, lambda m, t: m.encode(t, prompt="custom: ")),
        ({"input_type": "query"}, lambda m, t: m.encode_query(t)),
        ({"role": "document"}, lambda m, t: m.encode_document(t)),
        ({"input_type": "search_document"}, lambda m, t: m.encode_document(t)),
        ({"normalize": True}, lambda m, t: m.encode(t, normalize_embeddings=True)),
        ({"dimensions": 16}, lambda m, t: m.encode(t, truncate_dim=16)),
        ({"dimensions": 8, "normalize": True}, lambda m, t: m.encode(t, truncate_dim=8, normalize_embeddings=True)),
        ({"dimensions": 32}, lambda m, t: m.encode(t)),
    ],
)
def test_embeddings_equal_python_api(server, local, options, call):
    body = post(server, "/v1/embeddings", {"input": TEXTS, **options})
    assert_rows_close(vectors(body), call(local, TEXTS))


def test_usage_counts_prompt_and_truncation(server, local):
    body = post(server, "/v1/embeddings", {"input": TEXTS, "prompt_name": "query"})
    want = [min(len(local.tokenizer("query: " + t)["input_ids"]), 64) for t in TEXTS]
    assert body["usage"]["prompt_tokens"] == sum(want)


def test_base64_is_little_endian_float32(server, local):
    body = post(server, "/v1/embeddings", {"input": TEXTS, "encoding_format": "base64"})
    got = [np.frombuffer(base64.b64decode(e), dtype="<f4") for e in vectors(body)]
    assert_rows_close(got, local.encode(TEXTS))


def test_pooling_embed_and_token_embed(server, local):
    body = post(server, "/pooling", {"input": TEXTS, "task": "embed"})
    assert_rows_close(vectors(body, "data"), local.encode(TEXTS))
    body = post(server, "/pooling", {"input": TEXTS, "task": "token_embed", "role": "query"})
    want = local.encode_query(TEXTS, output_value="token_embeddings")
    assert [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
    for got, expected in zip(vectors(body, "data"), want):
        assert_rows_close(got, expected.numpy())


def test_pooling_token_embed_multi_vector(server, colbert):
    model = names(server)["multi-vector"]
    for role, call in ((None, colbert.encode), ("query", colbert.encode_query), ("document", colbert.encode_document)):
        body = post(server, "/pooling", {"input": TEXTS, "task": "token_embed", "model": model, "role": role})
        want = call(TEXTS, output_value="token_embeddings")
        for got, expected in zip(vectors(body, "data"), want):
            assert_rows_close(got, np.asarray(expected))


def _padded_plain(path: str, rows: list[list[int]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Plain ST's modules on one right-padded batch of exactly these ids: sentence and token embeddings."""
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        out = plain({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)})
    tokens = [out["token_embeddings"][i, : len(r)].numpy() for i, r in enumerate(rows)]
    return out["sentence_embedding"].numpy(), tokens


def test_token_ids_equal_plain_st(server, local, tiny_embedder):
    rows = [local.tokenizer(t)["input_ids"] for t in TEXTS[:3]] + [[5, 6, 7], [9]]
    sentence, tokens = _padded_plain(tiny_embedder, rows)
    assert_rows_close(vectors(post(server, "/v1/embeddings", {"input": rows})), sentence)
    body = post(server, "/pooling", {"input": rows, "task": "token_embed"})
    for got, want in zip(vectors(body, "data"), tokens):
        assert_rows_close(got, want)
    cut = post(server, "/v1/embeddings", {"input": [list(range(5, 105))]})  # 100 ids: the first 64 are used
    assert cut["usage"]["prompt_tokens"] == 64
    assert_rows_close(vectors(cut), _padded_plain(tiny_embedder, [list(range(5, 69))])[0])
