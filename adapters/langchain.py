"""LangChain on st_backend: ``Embeddings`` (documents through ``encode_document``, queries through
``encode_query``, prompts honoured), a ``BaseCrossEncoder`` for ``CrossEncoderReranker``, and a one-liner that
runs langchain-huggingface's ``HuggingFaceEmbeddings`` on st_backend.

Installed as ``st_backend.adapters.langchain``; needs ``langchain-core`` (imported here, never by st_backend).
"""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.cross_encoders import BaseCrossEncoder
from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor

from st_backend import CrossEncoder, SentenceTransformer


class STBackendEmbeddings(Embeddings):
    """LangChain embeddings from an st_backend (or plain ST) SentenceTransformer.

    model: a loaded model, or a name/path loaded with ``st_backend.SentenceTransformer(model, **model_kwargs)``.
    encode_kwargs / query_encode_kwargs: passed to ``encode_document`` / ``encode_query`` (e.g. ``prompt_name``,
    ``normalize_embeddings``, ``batch_size``); the model's own query/document prompts apply as in ST.
    """

    def __init__(
        self,
        model: SentenceTransformer | str,
        *,
        encode_kwargs: dict[str, Any] | None = None,
        query_encode_kwargs: dict[str, Any] | None = None,
        **model_kwargs: Any,
    ) -> None:
        self.model = SentenceTransformer(model, **model_kwargs) if isinstance(model, str) else model
        self.encode_kwargs = dict(encode_kwargs or {})
        self.query_encode_kwargs = dict(query_encode_kwargs or {})

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode_document(list(texts), convert_to_numpy=True, **self.encode_kwargs).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.model.encode_query(text, convert_to_numpy=True, **self.query_encode_kwargs).tolist()

    # Encoding is CPU/GPU work: run it in an executor so the event loop keeps serving.
    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await run_in_executor(None, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await run_in_executor(None, self.embed_query, text)


class STBackendCrossEncoder(BaseCrossEncoder):
    """A LangChain ``BaseCrossEncoder`` (for ``CrossEncoderReranker``) on an st_backend CrossEncoder.

    As langchain-community's HuggingFaceCrossEncoder: one score per pair; for a model with several labels,
    the score of label 1.
    """

    def __init__(self, model: CrossEncoder | str, *, predict_kwargs: dict[str, Any] | None = None, **model_kwargs):
        self.model = CrossEncoder(model, **model_kwargs) if isinstance(model, str) else model
        self.predict_kwargs = dict(predict_kwargs or {})

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        if not text_pairs:
            return []
        scores = self.model.predict([tuple(p) for p in text_pairs], convert_to_numpy=True, **self.predict_kwargs)
        return (scores[:, 1] if scores.ndim > 1 else scores).tolist()


_swap_lock = threading.Lock()


def huggingface_embeddings(**kwargs: Any):
    """``langchain_huggingface.HuggingFaceEmbeddings(**kwargs)`` whose client is ``st_backend.SentenceTransformer``.

    HuggingFaceEmbeddings builds ``sentence_transformers.SentenceTransformer`` itself, so the name is pointed at
    st_backend's class while it does (under a lock; restored at once), and the model loads only once.
    """
    import sentence_transformers
    from langchain_huggingface import HuggingFaceEmbeddings

    with _swap_lock:
        original = sentence_transformers.SentenceTransformer
        sentence_transformers.SentenceTransformer = SentenceTransformer
        try:
            embeddings = HuggingFaceEmbeddings(**kwargs)
        finally:
            sentence_transformers.SentenceTransformer = original
    return embeddings


__all__ = ["STBackendCrossEncoder", "STBackendEmbeddings", "huggingface_embeddings"]
