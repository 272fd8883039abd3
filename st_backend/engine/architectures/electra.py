"""ELECTRA: BERT's positions and token types (embeddings_project maps embedding_size to hidden_size inside the
model); its classification head reads the first token."""

from ..positions import classify_first_token
from . import ArchSpec, register

register(
    ArchSpec("electra", token_type_ids=True, absolute_positions=True, family="ELECTRA", classify=classify_first_token)
)
