"""The operations of a merged model call (``Backend.run``): one small frozen dataclass each, built by the routes.

Equal operations may share a call (the batcher merges the rows of jobs whose operations are equal), so they are
hashable; ``serve --devices`` sends them to the device processes, so they pickle.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Encode:
    """Texts through encode, encode_query or encode_document (``role`` None, "query" or "document"): a sentence
    embedding per row, or with ``tokens`` a (tokens, dim) tensor per row (token_embed; a multi-vector model's)."""

    role: str | None = None
    prompt_name: str | None = None
    prompt: str | None = None
    tokens: bool = False


@dataclass(frozen=True)
class EncodeIds:
    """Token-id rows through the packed engine exactly as given (no prompt, no re-tokenizing): as ``Encode``."""

    role: str | None = None
    tokens: bool = False


@dataclass(frozen=True)
class QueryDocument:
    """("query", text) rows through encode_query (with this prompt) and ("document", text) rows through
    encode_document, in one call: rerank and score on an embedding or multi-vector model."""

    prompt_name: str | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class Sparse:
    """Texts through a SparseEncoder's encode / encode_query / encode_document: (indices, values) per row."""

    role: str | None = None
    prompt_name: str | None = None
    prompt: str | None = None
    max_active_dims: int | None = None


@dataclass(frozen=True)
class Pairs:
    """(text, text) pairs through CrossEncoder.predict: its scores, or with ``logits`` the raw logits."""

    prompt_name: str | None = None
    prompt: str | None = None
    logits: bool = False


@dataclass(frozen=True)
class ClassifyTexts:
    """Single texts through a cross-encoder: logits (n, labels), as predict scores one text."""


Operation = Encode | EncodeIds | QueryDocument | Sparse | Pairs | ClassifyTexts
