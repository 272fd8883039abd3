"""BERT: absolute positions from 0, token types."""

from . import ArchSpec, register

register(ArchSpec("bert", token_type_ids=True, family="BERT"))
