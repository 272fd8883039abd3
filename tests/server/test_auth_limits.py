"""--api-key (every route but /health and /metrics needs the bearer key) and the body-size limit (413)."""

from __future__ import annotations

import httpx
import pytest

from st_backend.server.config import ServerConfig

from .helpers import serve

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(tiny_embedder):
    live = serve(ServerConfig(model=tiny_embedder, api_key=KEY, max_body_bytes=2000))
    yield live
    live.stop()


def auth(key: str = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("path", ["/v1/models", "/info", "/openapi.json", "/docs"])
def test_get_routes_need_the_key(server, path):
    assert httpx.get(f"{server.url}{path}").status_code == 401
    assert httpx.get(f"{server.url}{path}", headers=auth()).status_code == 200


def test_missing_and_wrong_key(server):
    response = httpx.post(f"{server.url}/v1/embeddings", json={"input": "a"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and "no Authorization header" in error["message"]
    assert response.headers["www-authenticate"] == "Bearer"
    response = httpx.post(f"{server.url}/v1/embeddings", json={"input": "a"}, headers=auth("wrong"))
    assert response.status_code == 401 and "does not match" in response.json()["error"]["message"]
    response = httpx.post(f"{server.url}/nowhere", json={}, headers=auth("wrong"))
    assert response.status_code == 401  # unknown paths say nothing before the key is right


def test_open_routes(server):
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert httpx.get(f"{server.url}/metrics").status_code == 200


def test_head_on_the_service_routes(server):
    for path in ("/health", "/metrics"):
        response = httpx.head(f"{server.url}{path}")
        assert response.status_code == 200 and response.content == b"", path


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_scheme_is_case_insensitive(server, scheme):
    """RFC 9110 section 11.1: the authentication scheme is case-insensitive; the key itself is not."""
    ok = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"{scheme} {KEY}"})
    assert ok.status_code == 200
    wrong = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"{scheme} {KEY.upper()}"})
    assert wrong.status_code == 401
    assert httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Basic {KEY}"}).status_code == 401


def test_openai_client_with_key(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    assert len(client.embeddings.create(model=_name(server), input=["a", "b"]).data) == 2
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model=_name(server), input=["a"])


def _name(server) -> str:
    return httpx.get(f"{server.url}/v1/models", headers=auth()).json()["data"][0]["id"]


def test_openapi_declares_bearer(server):
    doc = httpx.get(f"{server.url}/openapi.json", headers=auth()).json()
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["paths"]["/v1/embeddings"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/health"]["get"]


def test_body_too_large(server):
    big = {"input": ["x" * 3000]}
    response = httpx.post(f"{server.url}/v1/embeddings", json=big, headers=auth())
    assert response.status_code == 413
    assert (
        "at most 2000" in response.json()["error"]["message"]
        and "--max-body-bytes" in response.json()["error"]["message"]
    )

    def chunks():  # no Content-Length: read up to the limit, then refused
        yield b'{"input": ["'
        for _ in range(10):
            yield b"x" * 500
        yield b'"]}'

    response = httpx.post(f"{server.url}/v1/embeddings", content=chunks(), headers=auth())
    assert response.status_code == 413
    small = httpx.post(f"{server.url}/v1/embeddings", content=iter([b'{"input": ', b'"ok"}']), headers=auth())
    assert small.status_code == 200, small.text


def test_headers_past_the_limit_are_refused(server):
    """64 MiB of headers used to get a 200 past --max-body-bytes; past 64 KiB they are a 431 now."""
    from st_backend.server.auth import MAX_HEADER_BYTES

    big = {f"x-filler-{i}": "y" * 4000 for i in range(MAX_HEADER_BYTES // 4000 + 2)}
    response = httpx.get(f"{server.url}/health", headers=big)
    assert response.status_code == 431 and response.json()["error"]["code"] == "headers_too_large"
    assert httpx.get(f"{server.url}/health", headers={"x-small": "y" * 1000}).status_code == 200
