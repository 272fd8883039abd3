"""/openapi.json says what the server accepts: bodies the server always refuses are outside the document, and a
walk over the document's request schemas finds the server's answers where the document puts its bounds (list
sizes, enums, ranges): a body the document admits is answered, one it refuses is refused."""

from __future__ import annotations

import httpx
import pytest

from st_backend.server.config import ServerConfig

from .helpers import serve, serve_every_kind

jsonschema = pytest.importorskip("jsonschema")

MAX_INPUTS = 4
# The smallest body each request schema takes.
BASE = {
    "EmbeddingRequest": {"input": "a"},
    "PoolingRequest": {"input": "a"},
    "RerankRequest": {"query": "q", "documents": ["d"]},
    "ScoreRequest": {"text_1": "a", "text_2": ["b"]},
    "ClassifyRequest": {"input": "a"},
    "TokenizeRequest": {"input": "a"},
    "EmbedSparseRequest": {"inputs": "a"},
}


@pytest.fixture(scope="module")
def server(tiny_embedder, tiny_reranker, tiny_colbert, tiny_splade):
    live = serve_every_kind(tiny_embedder, tiny_reranker, tiny_colbert, tiny_splade, max_inputs=MAX_INPUTS)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def doc(server) -> dict:
    return httpx.get(f"{server.url}/openapi.json").json()


@pytest.fixture(scope="module")
def models(server) -> dict[str, dict]:
    """Every spelling of each served model -> its /info entry."""
    out = {}
    for m in httpx.get(f"{server.url}/info").json()["models"]:
        for alias in (m["name"], m["path"], f"sentence-transformers/{m['name']}"):
            out[alias] = m
    return out


def routes(doc: dict) -> dict[str, str]:
    """POST path -> the name of its request schema."""
    out = {}
    for path, ops in doc["paths"].items():
        ref = ops.get("post", {}).get("requestBody", {}).get("content", {}).get("application/json", {})
        if "$ref" in ref.get("schema", {}):
            out[path] = ref["schema"]["$ref"].rsplit("/", 1)[1]
    return out


def admits(doc: dict, schema: str, body) -> bool:
    root = {"$ref": f"#/components/schemas/{schema}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(root).is_valid(body)


def answered(server, path: str, body) -> int:
    return httpx.post(f"{server.url}{path}", json=body, timeout=30).status_code


def name_of(models: dict, kind: str) -> str:
    return next(m["name"] for m in models.values() if m["kind"] == kind)


REFUSED = [
    # (path, body): the server refuses each whatever else the body holds
    ("/v1/embeddings", {"input": []}),
    ("/v1/embeddings", {"input": ["a"] * (MAX_INPUTS + 1)}),
    ("/v1/embeddings", {"input": [[5], []]}),
    ("/v1/embeddings", {"input": [5, 10**6]}),
    ("/v1/embeddings", {"input": "a", "dimensions": 12}),
    ("/v1/embeddings", {"input": "a", "dimensions": 64}),
    ("/v1/embeddings", {"input": "a", "model": "no-such-model"}),
    ("/v1/embeddings", {"input": "a", "model": "cross-encoder"}),
    ("/v1/embeddings", {"input": "a", "prompt_name": "no-such-prompt"}),
    ("/pooling", {"input": "a", "max_active_dims": 0}),
    ("/v1/rerank", {"query": "q", "documents": []}),
    ("/v1/rerank", {"query": "q", "documents": ["d"] * (MAX_INPUTS + 1)}),
    ("/score", {"text_2": ["a"]}),
    ("/score", {"text_1": "a", "queries": "b", "text_2": ["c"]}),
    ("/score", {"text_1": "a", "text_2": []}),
    ("/classify", {"input": []}),
    ("/classify", {"input": "a", "model": "embedding"}),
    ("/tokenize", {}),
    ("/tokenize", {"input": "a", "prompt": "b"}),
    ("/tokenize", {"input": []}),
    ("/embed_sparse", {"inputs": "a", "truncation_direction": "left"}),
    ("/embed_sparse", {"inputs": ["a"] * (MAX_INPUTS + 1)}),
]


@pytest.mark.parametrize("path, body", REFUSED, ids=[f"{p} {b}"[:60] for p, b in REFUSED])
def test_bodies_the_server_refuses_are_outside_the_document(server, doc, models, path, body):
    body = dict(body)
    if body.get("model") in ("embedding", "cross-encoder"):  # a served model of the other kind
        body["model"] = name_of(models, body["model"])
    status = answered(server, path, body)
    assert 400 <= status < 500, status
    assert not admits(doc, routes(doc)[path], body), f"the document admits {body}, which gets a {status}"


def test_the_document_lists_only_what_is_served(tiny_embedder):
    """Without a cross-encoder or a sparse model, /classify and /embed_sparse are not in the document; /pooling
    has no embed_sparse task, no max_active_dims."""
    live = serve(ServerConfig(model=tiny_embedder))
    try:
        doc = httpx.get(f"{live.url}/openapi.json").json()
        for path in ("/classify", "/embed_sparse"):
            assert path not in doc["paths"]
            assert answered(live, path, {"input": "a", "inputs": "a"}) == 400
        body = {"input": "a", "task": "embed_sparse"}
        assert not admits(doc, "PoolingRequest", body) and answered(live, "/pooling", body) == 400
        body = {"input": "a", "max_active_dims": 4}
        assert not admits(doc, "PoolingRequest", body) and answered(live, "/pooling", body) == 400
        assert admits(doc, "PoolingRequest", {"input": "a"}) and answered(live, "/pooling", {"input": "a"}) == 200
    finally:
        live.stop()


def _variants(prop: dict, model_of) -> list:
    """Values of one property at the document's bounds: (value, extra fields it needs) pairs."""
    out = []
    for member in prop.get("anyOf", [prop]):
        for value in member.get("enum", ()):
            out.append((value, model_of(value)))
        if member.get("type") == "array":
            item = "a" if member.get("items", {}).get("type") == "string" else None
            if item is not None:
                for n in {
                    member.get("minItems", 0),
                    member["minItems"] - 1,
                    member["maxItems"],
                    member["maxItems"] + 1,
                }:
                    out.append(([item] * n, {}) if n >= 0 else None)
        if member.get("type") == "integer" and "maximum" in member:
            out += [(member["maximum"], {}), (member["maximum"] + 1, {})]
    return [v for v in out if v is not None]


def test_a_walk_over_the_document_meets_the_servers_answers(server, doc, models):
    served_by = {"prompt_name": {}}
    for m in models.values():
        for prompt in m["prompts"]:
            served_by["prompt_name"].setdefault(prompt, m["name"])
    checked = 0
    for path, schema in routes(doc).items():
        base = BASE[schema]
        assert admits(doc, schema, base) and answered(server, path, base) == 200, path
        for field, prop in doc["components"]["schemas"][schema]["properties"].items():
            if field in ("model", "task") and schema == "PoolingRequest":
                continue  # which model serves which task: the document cannot pair them (tested in test_embed_routes)

            def model_of(value, field=field):
                if field == "prompt_name":  # a prompt name is one of some served model's
                    return {"model": served_by["prompt_name"][value]}
                return {}

            for value, extra in _variants(prop, model_of):
                body = {**base, **extra, field: value}
                if field in ("queries", "data_1"):
                    body.pop("text_1")  # one of each side
                if field in ("text_1", "queries", "data_1") and isinstance(value, list) and len(value) > 1:
                    body["text_2"] = ["b"] * len(value)  # a list scores pairwise: as many on each side
                if field in ("documents", "items", "data_2"):
                    body.pop("text_2")
                if field == "prompt" and schema == "TokenizeRequest":
                    body.pop("input")
                status = answered(server, path, body)
                assert admits(doc, schema, body) == (status == 200), (path, body, status)
                checked += 1
    assert checked > 100
