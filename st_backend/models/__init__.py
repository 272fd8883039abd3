"""The ST-facing classes: each subclasses its sentence-transformers twin and delegates to the engine."""

from .sentence_transformer import SentenceTransformer

__all__ = ["SentenceTransformer"]
