"""schemathesis on the server's own OpenAPI document (valid and invalid bodies for every route, a few hundred
requests in all): no 5xx, only documented statuses, responses that match their schemas."""

from __future__ import annotations

import httpx
import pytest

from .helpers import serve_every_kind

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 16  # per operation and mode, at most (hypothesis stops early on small spaces): about 250 requests


@pytest.fixture(scope="module")
def server(tiny_embedder, tiny_reranker, tiny_colbert, tiny_splade):
    live = serve_every_kind(tiny_embedder, tiny_reranker, tiny_colbert, tiny_splade, max_inputs=64)
    yield live
    live.stop()


def test_fuzz_openapi(server):
    # The schemathesis pytest plugin's from_fixture does not run on pytest 9: drive each operation here.
    api = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    paths = {
        "/v1/embeddings",
        "/v1/rerank",
        "/pooling",
        "/score",
        "/v1/score",
        "/classify",
        "/tokenize",
        "/embed_sparse",
    }
    assert paths <= {op.path for op in operations}
    sent = []
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            @given(case=op.as_strategy(generation_mode=mode))
            def fuzz(case):
                sent.append(case.call_and_validate(checks=CHECKS, timeout=30).status_code)

            try:
                fuzz()
            except Unsatisfiable:  # nothing invalid to send (e.g. GET routes without parameters)
                pass
    assert len(sent) >= 150 and max(sent) < 500
    assert 200 in sent  # valid requests got through, not only refusals


def test_serving_after_the_fuzz(server):
    response = httpx.post(f"{server.url}/v1/embeddings", json={"input": ["still", "here"]}, timeout=30)
    assert response.status_code == 200 and len(response.json()["data"]) == 2
    assert 'status="500"' not in httpx.get(f"{server.url}/metrics").text
