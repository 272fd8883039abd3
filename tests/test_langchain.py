"""LangChain integration with the real langchain-core (and langchain-classic / langchain-huggingface when
installed): embeddings equal encode_query / encode_document, retrieval finds the right documents, the reranker
reorders by the cross-encoder's scores, async methods keep the event loop free."""

from __future__ import annotations

import asyncio
import tempfile
import time

import numpy as np
import pytest

pytest.importorskip("langchain_core")
from langchain_core.documents import Document  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from tiny_models import build_st_dir  # noqa: E402

import st_backend  # noqa: E402
from st_backend.adapters.langchain import STBackendCrossEncoder, STBackendEmbeddings, huggingface_embeddings  # noqa: E402

CORPUS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "A recipe for pancakes needs flour, eggs, milk and a pinch of salt.",
    "Jupiter is the largest planet in the Solar System.",
    "To reset your card PIN, open the banking app and choose Security.",
]


@pytest.fixture(scope="module")
def minilm(default_model_path):
    return st_backend.SentenceTransformer(default_model_path, device="cpu")


def test_embeddings_equal_encode_query_and_document_with_prompts(tiny_root):
    path = build_st_dir("bert", tiny_root, prompts={"query": "query: ", "document": "passage: "}, include_prompt=False)
    model = st_backend.SentenceTransformer(str(path), device="cpu")
    emb = STBackendEmbeddings(model, encode_kwargs={"batch_size": 2})
    docs = emb.embed_documents(CORPUS)
    np.testing.assert_allclose(docs, model.encode_document(CORPUS), atol=1e-6)
    np.testing.assert_allclose(emb.embed_query("where is Paris?"), model.encode_query("where is Paris?"), atol=1e-6)
    # the prompts reached the model: query and document embeddings of one text differ
    assert not np.allclose(emb.embed_query(CORPUS[0]), docs[0])


@pytest.mark.parametrize(
    "query,expected",
    [
        ("Which planet is the biggest?", 4),
        ("How do I change the PIN of my card?", 5),
        ("What do I need to make pancakes?", 3),
    ],
)
def test_retriever_over_in_memory_store_returns_the_right_document(minilm, query, expected):
    store = InMemoryVectorStore.from_texts(CORPUS, STBackendEmbeddings(minilm))
    hits = store.as_retriever(search_kwargs={"k": 2}).invoke(query)
    assert hits[0].page_content == CORPUS[expected]


@pytest.fixture(scope="module")
def cross_encoder(default_model_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = tempfile.mkdtemp(prefix="st_backend_lc_ce_")
    import torch

    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(default_model_path, num_labels=1).save_pretrained(path)
    AutoTokenizer.from_pretrained(default_model_path).save_pretrained(path)
    return st_backend.CrossEncoder(path, device="cpu")


def test_cross_encoder_scores_equal_predict(cross_encoder):
    pairs = [("where is the tower?", doc) for doc in CORPUS]
    np.testing.assert_allclose(STBackendCrossEncoder(cross_encoder).score(pairs), cross_encoder.predict(pairs))
    assert STBackendCrossEncoder(cross_encoder).score([]) == []


def test_reranker_reorders_by_cross_encoder_scores(cross_encoder):
    classic = pytest.importorskip("langchain_classic.retrievers.document_compressors")
    query = "where is the tower?"
    docs = [Document(page_content=text) for text in CORPUS]
    reranker = classic.CrossEncoderReranker(model=STBackendCrossEncoder(cross_encoder), top_n=4)
    out = [d.page_content for d in reranker.compress_documents(docs, query)]
    scores = cross_encoder.predict([(query, text) for text in CORPUS])
    want = [CORPUS[i] for i in np.argsort(-scores, kind="stable")[:4]]
    assert out == want
    assert out != CORPUS[:4]  # it reordered


def test_async_embeddings_do_not_block_the_event_loop(minilm):
    emb = STBackendEmbeddings(minilm)
    texts = CORPUS * 200

    async def main():
        ticks = []

        async def ticker():
            while True:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        vectors = await emb.aembed_documents(texts)
        query = await emb.aembed_query("Which planet is the biggest?")
        task.cancel()
        return vectors, query, ticks

    vectors, query, ticks = asyncio.run(main())
    assert len(vectors) == len(texts) and len(query) == 384
    assert len(ticks) > 5  # the loop kept running while the model encoded
    np.testing.assert_allclose(vectors[:6], minilm.encode_document(CORPUS), atol=1e-6)


def test_huggingface_embeddings_one_liner(default_model_path):
    pytest.importorskip("langchain_huggingface")
    import sentence_transformers

    emb = huggingface_embeddings(model_name=default_model_path, model_kwargs={"device": "cpu"})
    assert isinstance(emb._client, st_backend.SentenceTransformer)
    assert sentence_transformers.SentenceTransformer is not st_backend.SentenceTransformer  # restored
    plain = sentence_transformers.SentenceTransformer(default_model_path, device="cpu")
    np.testing.assert_allclose(emb.embed_documents(CORPUS), plain.encode(CORPUS), atol=1e-5)
    np.testing.assert_allclose(emb.embed_query("Paris"), plain.encode("Paris"), atol=1e-5)
