"""Fixtures of the server tests: the tiny models they serve (built once per session by tests/tiny_models.py)."""

from __future__ import annotations

import pytest

from .helpers import PROMPTS


@pytest.fixture(scope="session")
def tiny_embedder(tiny_root) -> str:
    from tiny_models import build_st_dir

    return str(build_st_dir("bert", tiny_root, prompts=PROMPTS))


@pytest.fixture(scope="session")
def tiny_reranker(tiny_root) -> str:
    from tiny_models import build_hf_dir

    return str(build_hf_dir("bert", tiny_root, task="seq-cls", num_labels=1))


@pytest.fixture(scope="session")
def tiny_classifier(tiny_root) -> str:
    from tiny_models import build_hf_dir

    return str(build_hf_dir("bert", tiny_root, task="seq-cls", num_labels=3))


@pytest.fixture(scope="session")
def tiny_colbert(tiny_root) -> str:
    from colbert_models import build_colbert_dir

    return str(build_colbert_dir("st", "bert", tiny_root))
