"""st_backend: a packed, unpadded drop-in backend for sentence-transformers."""

from .bge_m3 import BGEM3Encoder
from .engine.config import EngineConfig
from .engine.errors import InputError
from .info import info
from .late_interaction import PackedEmbeddings
from .models import CrossEncoder, MultiVectorEncoder, SentenceTransformer, SparseEncoder

__all__ = [
    "BGEM3Encoder",
    "CrossEncoder",
    "EngineConfig",
    "InputError",
    "MultiVectorEncoder",
    "PackedEmbeddings",
    "SentenceTransformer",
    "SparseEncoder",
    "info",
]
__version__ = "0.1.0"
