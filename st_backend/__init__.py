"""st_backend: a packed, unpadded drop-in backend for sentence-transformers."""

from .engine.config import EngineConfig
from .info import info
from .models import CrossEncoder, SentenceTransformer

__all__ = ["CrossEncoder", "EngineConfig", "SentenceTransformer", "info"]
__version__ = "0.1.0"
