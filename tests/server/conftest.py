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


@pytest.fixture(scope="session")
def tiny_splade(tiny_root) -> str:
    """A SPLADE SparseEncoder, [MLMTransformer, SpladePooling("max")], on a random tiny BertForMaskedLM, with query
    and document prompts (as tests/test_sparse_encoder.py builds them)."""
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling
    from tiny_models import MAX_LEN, load_tokenizer

    from st_backend.bench.factory import cached_build, model_config, seed_for

    def build_mlm(path) -> None:
        tok = load_tokenizer("bert", tiny_root)
        tok.model_max_length = MAX_LEN
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_for("bert", "mlm"))
            model = transformers.BertForMaskedLM(model_config("bert", tok)).eval()
        model.save_pretrained(path)
        tok.save_pretrained(path)

    def build(path) -> None:
        mlm = cached_build(tiny_root / "server-mlm" / "bert", build_mlm)
        modules = [MLMTransformer(str(mlm)), SpladePooling("max")]
        sentence_transformers.SparseEncoder(modules=modules, prompts=PROMPTS, device="cpu").save(str(path))

    return str(cached_build(tiny_root / "server-splade" / "bert", build))
