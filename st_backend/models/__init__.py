"""The ST-facing classes: each subclasses its sentence-transformers twin and delegates to the engine."""

from .cross_encoder import CrossEncoder
from .multi_vector_encoder import MultiVectorEncoder
from .sentence_transformer import SentenceTransformer
from .sparse_encoder import SparseEncoder

__all__ = ["CrossEncoder", "MultiVectorEncoder", "SentenceTransformer", "SparseEncoder"]
