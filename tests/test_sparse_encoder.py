"""st_backend.SparseEncoder (SPLADE) against plain ST's on the same tiny random masked-LM weights: active indices
and values of encode / encode_query / encode_document, prompts, max_active_dims, dense rows, empty and over-length
texts, both poolings and activations, chunked MLM heads, inference-free Router models and ST's multi-process API."""

from __future__ import annotations

import logging

import pytest
import sentence_transformers
import torch
import transformers
from sentence_transformers.sparse_encoder.modules import (
    MLMTransformer,
    Router,
    SparseStaticEmbedding,
    SpladePooling,
    Transformer,
)
from tiny_models import MAX_LEN, load_tokenizer

import st_backend
from st_backend.bench.factory import cached_build, model_config, seed_for
from st_backend.models import _fallback, heads

TEXTS = [
    "The cat sat on the mat.",
    "",
    "a",
    "Paris is the capital of France, and Berlin is the capital of Germany! " * 6,  # past MAX_LEN tokens
    "what is sparse retrieval?",
    "word " * 80,
    "tokens, punctuation; and: more.",
    "",
]
MLM_CLASSES = {
    "bert": "BertForMaskedLM",
    "distilbert": "DistilBertForMaskedLM",
    "xlm-roberta": "XLMRobertaForMaskedLM",
    "roberta": "RobertaForMaskedLM",
    "camembert": "CamembertForMaskedLM",
    "electra": "ElectraForMaskedLM",
    "mpnet": "MPNetForMaskedLM",
    "modernbert": "ModernBertForMaskedLM",
}


def mlm_dir(arch: str, root):
    """A random-weight ``*ForMaskedLM`` checkpoint on the factory's tiny tokenizer and config of ``arch``."""

    def build(path) -> None:
        tok = load_tokenizer(arch, root)
        tok.model_max_length = MAX_LEN
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_for(arch, "mlm"))
            model = getattr(transformers, MLM_CLASSES[arch])(model_config(arch, tok)).eval()
        model.save_pretrained(path)
        tok.save_pretrained(path)

    return cached_build(root / "mlm" / arch, build)


def splade_dir(arch: str, root, strategy: str = "max", activation: str = "relu", prompts=None):
    """A saved SPLADE SparseEncoder: [MLMTransformer, SpladePooling(strategy, activation)]."""
    name = f"{arch}-{strategy}-{activation}" + ("-prompts" if prompts else "")

    def build(path) -> None:
        modules = [MLMTransformer(str(mlm_dir(arch, root))), SpladePooling(strategy, activation)]
        sentence_transformers.SparseEncoder(modules=modules, prompts=prompts, device="cpu").save(str(path))

    return cached_build(root / "splade" / name, build)


def pair(path, **kwargs):
    return (
        st_backend.SparseEncoder(str(path), device="cpu", **kwargs),
        sentence_transformers.SparseEncoder(str(path), device="cpu", **kwargs),
    )


def assert_same(got, want, what: str = "output") -> None:
    """Same structure, layout, shape, dtype, device and coalescing; same active indices; values within 1e-5 of the
    row's scale (the project's tolerance)."""
    assert type(got) is type(want), f"{what}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, list):
        assert len(got) == len(want), what
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{what}[{i}]")
        return
    assert (got.layout, got.shape, got.dtype, got.device) == (want.layout, want.shape, want.dtype, want.device), what
    assert not got.is_inference(), f"{what}: an inference tensor (ST's output is not)"
    if want.is_sparse:
        assert got.is_coalesced() == want.is_coalesced(), what
        got, want = got.coalesce(), want.coalesce()
        assert torch.equal(got.indices(), want.indices()), f"{what}: active dimensions differ"
        got, want = got.values(), want.values()
    else:
        assert torch.equal(got != 0, want != 0), f"{what}: active dimensions differ"
    if want.numel():
        scale = max(1.0, float(want.abs().max()))
        assert float((got - want).abs().max()) <= 1e-5 * scale, f"{what}: values differ"


def ran_packed(model: st_backend.SparseEncoder, task=None) -> bool:
    return not isinstance(model.engine_for(task), str)


@pytest.fixture
def no_fallback(caplog):
    """Fails the test if any call ran ST's own path (the one-time note, said again after clearing)."""
    _fallback._said.clear()
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        yield
    notes = [r.getMessage() for r in caplog.records if "own path" in r.getMessage()]
    assert not notes, notes


CALLS = [
    ("encode", {}),
    ("encode", {"batch_size": 1}),
    ("encode", {"batch_size": 32, "max_active_dims": 5}),
    ("encode", {"convert_to_sparse_tensor": False}),
    ("encode", {"convert_to_tensor": False}),
    ("encode", {"convert_to_sparse_tensor": False, "max_active_dims": 3, "save_to_cpu": True}),
    ("encode", {"prompt": "query: "}),
    ("encode_query", {}),
    ("encode_document", {"batch_size": 2}),
]


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
@pytest.mark.parametrize("strategy,activation", [("max", "relu"), ("sum", "log1p_relu")])
def test_encode_matches_st(tiny_root, no_fallback, arch, strategy, activation):
    fast, plain = pair(splade_dir(arch, tiny_root, strategy, activation))
    for method, kwargs in CALLS:
        want = getattr(plain, method)(TEXTS, **kwargs)
        assert_same(getattr(fast, method)(TEXTS, **kwargs), want, f"{arch} {method}{kwargs}")
    assert_same(fast.encode("one text"), plain.encode("one text"), "one text")
    assert_same(fast.encode([""]), plain.encode([""]), "empty string")
    mixed = [("a query", "a document"), {"text": "a dict"}, "a text"]
    assert_same(fast.encode(mixed), plain.encode(mixed), "a pair and a dict")
    for kwargs in ({}, {"convert_to_sparse_tensor": False}, {"convert_to_tensor": False}):
        assert_same(fast.encode([], **kwargs), plain.encode([], **kwargs), f"no input {kwargs}")
    assert ran_packed(fast) and ran_packed(fast, "query") and ran_packed(fast, "document")
    emb = fast.encode(TEXTS[:3])
    assert_same(fast.similarity(emb, emb), plain.similarity(emb, emb), "similarity")
    assert fast.decode(emb, top_k=3) == plain.decode(emb, top_k=3)


def test_prompts(tiny_root, no_fallback):
    path = splade_dir("bert", tiny_root, prompts={"query": "query: ", "document": "passage: "})
    fast, plain = pair(path)
    for method, kwargs in (
        ("encode_query", {}),
        ("encode_document", {}),
        ("encode", {"prompt_name": "query"}),
        ("encode", {"prompt": "search: ", "max_active_dims": 4}),
    ):
        assert_same(getattr(fast, method)(TEXTS, **kwargs), getattr(plain, method)(TEXTS, **kwargs), method)


@pytest.mark.parametrize("arch", ["xlm-roberta", "roberta", "camembert", "electra", "mpnet", "modernbert"])
def test_other_families(tiny_root, no_fallback, arch):
    fast, plain = pair(splade_dir(arch, tiny_root))
    assert_same(fast.encode(TEXTS), plain.encode(TEXTS), arch)
    assert ran_packed(fast)


@pytest.mark.parametrize("strategy,activation", [("max", "log1p_relu"), ("sum", "relu")])
def test_chunked_head(tiny_root, no_fallback, monkeypatch, strategy, activation):
    """Three tokens per MLM-head chunk: several inputs per chunk and inputs over several chunks both pool right."""
    fast, plain = pair(splade_dir("bert", tiny_root, strategy, activation))
    monkeypatch.setattr(heads, "MAX_LOGITS", 3 * fast.get_embedding_dimension())
    texts = TEXTS + ["a b", "c"]
    assert_same(fast.encode(texts, max_active_dims=6), plain.encode(texts, max_active_dims=6))


def test_fill_mask_transformer_and_dimension(tiny_root, no_fallback):
    """A Transformer(transformer_task="fill-mask") pipeline built in code: packed, and SpladePooling learns its
    output size at the first call as ST's forward does, without rebuilding the engine at the next."""

    def modules():
        return [Transformer(str(mlm_dir("bert", tiny_root)), transformer_task="fill-mask"), SpladePooling("max")]

    fast = st_backend.SparseEncoder(modules=modules(), device="cpu")
    plain = sentence_transformers.SparseEncoder(modules=modules(), device="cpu")
    assert fast[1].embedding_dimension is None and plain[1].embedding_dimension is None
    assert fast.get_embedding_dimension() == plain.get_embedding_dimension()  # the hidden size, before a call
    assert_same(fast.encode(TEXTS), plain.encode(TEXTS))
    assert fast.get_embedding_dimension() == plain.get_embedding_dimension() == len(fast.tokenizer)
    engine = fast.engine_for(None)
    fast.encode(TEXTS[:2])
    assert fast.engine_for(None) is engine


def test_router_inference_free(tiny_root, caplog):
    """Inference-free SPLADE: queries through SparseStaticEmbedding (ST's own path, said once), documents packed."""
    _fallback._said.clear()
    hf = str(mlm_dir("bert", tiny_root))

    def model(cls):
        tok = transformers.AutoTokenizer.from_pretrained(hf)
        weight = torch.rand(len(tok), generator=torch.Generator().manual_seed(0))
        router = Router.for_query_document(
            query_modules=[SparseStaticEmbedding(tokenizer=tok, weight=weight, frozen=True)],
            document_modules=[MLMTransformer(hf), SpladePooling("max")],
        )
        return cls(modules=[router], device="cpu")

    fast, plain = model(st_backend.SparseEncoder), model(sentence_transformers.SparseEncoder)
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        for method, kwargs in (
            ("encode_document", {}),
            ("encode", {"max_active_dims": 4}),
            ("encode_query", {}),
            ("encode_query", {"max_active_dims": 2}),
        ):
            assert_same(getattr(fast, method)(TEXTS, **kwargs), getattr(plain, method)(TEXTS, **kwargs), method)
    assert ran_packed(fast, "document") and ran_packed(fast, None) and not ran_packed(fast, "query")
    notes = [r.getMessage() for r in caplog.records if "own path" in r.getMessage()]
    assert len(notes) == 1 and "SparseStaticEmbedding" in notes[0], notes


def test_multi_process_pool(tiny_root):
    """ST's multi-process API: rows come back sparse, in input order, as ST's."""
    fast, plain = pair(splade_dir("bert", tiny_root))
    pool = fast.start_multi_process_pool(["cpu", "cpu"])
    try:
        assert_same(fast.encode(TEXTS * 3, pool=pool, chunk_size=5), plain.encode(TEXTS * 3))
        dense = fast.encode(TEXTS, pool=pool, convert_to_sparse_tensor=False)
        assert_same(dense, plain.encode(TEXTS, convert_to_sparse_tensor=False))
    finally:
        fast.stop_multi_process_pool(pool)


def test_bench_task(tiny_root):
    """``st-backend bench --task sparse``: the task's calls, token counts and fidelity metric on a tiny model."""
    from st_backend.bench.tasks import TASKS

    task = TASKS["sparse"]
    assert task.plain_class == "SparseEncoder"
    fast, plain = pair(splade_dir("bert", tiny_root))
    inputs = list(TEXTS)  # the task's inputs are the corpus texts
    name, value = task.compare(task.default_call(plain, inputs), task.default_call(fast, inputs))
    assert name == "min cosine" and value > 0.99999
    assert task.tuned_call(fast, inputs, 4).shape == (len(TEXTS), fast.get_embedding_dimension())
    assert list(task.tokens(fast, inputs)) == [int(m.sum()) for m in plain.preprocess(inputs)["attention_mask"]]
