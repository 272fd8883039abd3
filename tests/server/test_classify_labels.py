"""/classify on a three-label classifier: logits, softmax probabilities and config.id2label labels, equal to
CrossEncoder.predict."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

import st_backend
from st_backend.server.config import ServerConfig

from .helpers import serve

PAIRS = [["a man eats", "a person eats"], ["it rains", "the sun is out"], ["", ""]]


@pytest.fixture(scope="module")
def server(tiny_classifier):
    live = serve(ServerConfig(model=None, cross_encoder=tiny_classifier))
    yield live
    live.stop()


def test_classify_three_labels(server, tiny_classifier):
    local = st_backend.CrossEncoder(tiny_classifier, device="cpu")
    body = httpx.post(f"{server.url}/classify", json={"input": PAIRS}).json()
    logits = local.predict([tuple(p) for p in PAIRS], activation_fn=torch.nn.Identity(), apply_softmax=False)
    np.testing.assert_allclose([d["logits"] for d in body["data"]], logits, atol=1e-5)
    probs = torch.softmax(torch.tensor(logits), dim=1).numpy()
    np.testing.assert_allclose([d["probs"] for d in body["data"]], probs, atol=1e-6)
    labels = local.config.id2label
    assert [d["label"] for d in body["data"]] == [labels[int(i)] for i in probs.argmax(1)]
    assert all(d["num_classes"] == 3 for d in body["data"])


def test_rank_routes_need_one_label(server):
    response = httpx.post(f"{server.url}/v1/rerank", json={"query": "q", "documents": ["d"]})
    assert response.status_code == 400 and "one output label" in response.json()["error"]["message"]
