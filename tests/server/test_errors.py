"""Each class of bad input gets its status and an OpenAI-style nested error naming what was wrong and where, and
the server keeps serving afterwards."""

from __future__ import annotations

import httpx
import pytest

from st_backend.server.config import ServerConfig

from .helpers import serve


@pytest.fixture(scope="module")
def server(tiny_embedder, tiny_reranker):
    config = ServerConfig(model=tiny_embedder, cross_encoder=tiny_reranker, max_inputs=8, max_input_tokens=200)
    live = serve(config)
    yield live
    live.stop()


def embedder(server) -> str:
    return next(m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"] if m["kind"] == "embedding")


CASES = [
    # (name, method, path, body (dict / raw bytes), status, code, words the message must hold, param)
    ("malformed json", "POST", "/v1/embeddings", b'{"input": ', 400, "invalid_json", ["not valid JSON"], None),
    ("not an object", "POST", "/v1/embeddings", b"[1, 2]", 422, "invalid_type", ["body"], None),
    ("missing input", "POST", "/v1/embeddings", {"model": None}, 422, None, ["input", "Field required"], "input"),
    ("input a number", "POST", "/v1/embeddings", {"input": 5}, 422, "invalid_type", ["input"], "input"),
    ("mixed input", "POST", "/v1/embeddings", {"input": [1, "a"]}, 422, None, ["input[1]"], None),
    ("bad format", "POST", "/v1/embeddings", {"input": "a", "encoding_format": "hex"}, 422, None,
     ["encoding_format", "'float' or 'base64'"], "encoding_format"),
    ("dimensions a string", "POST", "/v1/embeddings", {"input": "a", "dimensions": "8"}, 422, None, ["dimensions"],
     "dimensions"),
    ("dimensions zero", "POST", "/v1/embeddings", {"input": "a", "dimensions": 0}, 422, None, ["dimensions"],
     "dimensions"),
    ("truncate a string", "POST", "/v1/embeddings", {"input": "a", "truncate": "yes"}, 422, None, ["truncate"],
     "truncate"),
    ("empty input", "POST", "/v1/embeddings", {"input": []}, 400, "empty_input", ["must not be empty"], "input"),
    ("empty token list", "POST", "/v1/embeddings", {"input": [[5], []]}, 400, "empty_input", ["input[1]"],
     "input[1]"),
    ("token id past vocab", "POST", "/v1/embeddings", {"input": [[5, 2**70]]}, 400, "invalid_token_id",
     ["input[0]", "vocabulary"], "input[0]"),
    ("too many inputs", "POST", "/v1/embeddings", {"input": ["a"] * 9}, 400, "too_many_inputs", ["9", "at most 8"],
     "input"),
    ("too many tokens", "POST", "/v1/embeddings", {"input": ["word " * 60] * 4}, 400, "too_many_tokens",
     ["256 tokens", "at most 200"], "input"),
    ("too long, no truncation", "POST", "/v1/embeddings", {"input": ["ok", "word " * 80], "truncate": False}, 400,
     "input_too_long", ["input[1]", "162 tokens", "limit of 64"], "input[1]"),
    ("undeclared dimensions", "POST", "/v1/embeddings", {"input": "a", "dimensions": 16}, 400,
     "unsupported_dimensions", ["declares no Matryoshka", "32", "--matryoshka-dimensions"], "dimensions"),
    ("dimensions too large", "POST", "/v1/embeddings", {"input": "a", "dimensions": 64}, 400,
     "unsupported_dimensions", ["64", "larger", "32"], "dimensions"),
    ("unknown prompt", "POST", "/v1/embeddings", {"input": "a", "prompt_name": "nope"}, 400, "unknown_prompt",
     ["'nope'", "['document', 'query']"], "prompt_name"),
    ("prompt with ids", "POST", "/v1/embeddings", {"input": [[5, 6]], "prompt": "x"}, 400, None, ["token-id"],
     "prompt"),
    ("roles disagree", "POST", "/v1/embeddings", {"input": "a", "input_type": "query", "role": "document"}, 400,
     None, ["disagree"], "role"),
    ("unknown model", "POST", "/v1/embeddings", {"input": "a", "model": "gpt-9"}, 404, "model_not_found",
     ["'gpt-9'", "served models"], "model"),
    ("empty documents", "POST", "/v1/rerank", {"query": "q", "documents": []}, 400, "empty_input", ["documents"],
     "documents"),
    ("document without text", "POST", "/v1/rerank", {"query": "q", "documents": [{"txt": "d"}]}, 422, None,
     ["documents[0]"], None),
    ("score lengths", "POST", "/score", {"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, 400, "length_mismatch",
     ["2 texts", "3"], "text_2"),
    ("tokenize nothing", "POST", "/tokenize", {}, 400, "missing_input", ["input is required"], "input"),
    ("lone surrogate", "POST", "/v1/embeddings", b'{"input": ["ok", "a\\ud800b"]}', 422, None,
     ["input[1]", "not valid UTF-8"], None),
    ("not utf-8", "POST", "/v1/embeddings", b'{"input": "\xff\xfe"}', 400, None, ["could not be parsed"], None),
    ("nested too deeply", "POST", "/v1/embeddings", b'{"input": ' + b"[" * 50000 + b"]" * 50000 + b"}", 400, None,
     ["could not be parsed"], None),
    ("unknown route", "POST", "/v1/chat/completions", {}, 404, None, ["No route", "/v1/chat/completions"], None),
    ("wrong method", "GET", "/v1/embeddings", None, 405, None, ["GET", "not allowed"], None),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(server, case):
    _, method, path, body, status, code, words, param = case
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
    response = httpx.request(method, f"{server.url}{path}", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"], error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


def test_wrong_model_kind(server):
    # (rerank and score take an embedding model too: tests/server/test_bi_scores.py)
    response = httpx.post(f"{server.url}/classify", json={"input": ["q"], "model": embedder(server)})
    assert response.status_code == 400 and "embedding model" in response.json()["error"]["message"]
    response = httpx.post(f"{server.url}/embed_sparse", json={"inputs": "q"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "model_not_loaded" and "--sparse" in error["message"]


def test_form_content_type_is_read_as_json(server):
    # curl -d without -H sends application/x-www-form-urlencoded; the body is JSON all the same.
    response = httpx.post(f"{server.url}/v1/embeddings", content=b'{"input": "a"}',
                          headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert response.status_code == 200


def test_still_serving_after_the_bad_requests(server):
    response = httpx.post(f"{server.url}/v1/embeddings", json={"input": ["fine", "also fine"]})
    assert response.status_code == 200 and len(response.json()["data"]) == 2
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'st_request_count{route="/v1/embeddings",status="400"}' in metrics
    assert 'status="500"' not in metrics
