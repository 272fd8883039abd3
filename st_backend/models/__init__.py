"""The ST-facing classes: each subclasses its sentence-transformers twin and delegates to the engine."""

from .cross_encoder import CrossEncoder
from .sentence_transformer import SentenceTransformer

__all__ = ["CrossEncoder", "SentenceTransformer"]
