"""Runs a transformers model on one packed batch: no padding token ever reaches a linear layer."""

from __future__ import annotations

import torch

from .. import _compat
from .architectures import ArchSpec
from .attention import AttentionBackend, register
from .packing import PackedBatch


class PackedRunner:
    """Calls ``model`` (a transformers base model) on a PackedBatch through a registered attention backend."""

    def __init__(self, model: torch.nn.Module, arch: ArchSpec, backend: AttentionBackend) -> None:
        self.model = model
        self.arch = arch
        self.backend = backend
        self.attn_name = register(backend)
        self.position_offset = arch.position_offset(model.config)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """-> (total_tokens, hidden) last hidden states of the packed row."""
        kwargs = {
            "input_ids": batch.input_ids[None],
            "position_ids": (batch.position_ids + self.position_offset)[None],
            "cu_seq_lens_q": batch.cu_seqlens,
            "cu_seq_lens_k": batch.cu_seqlens,
            "max_length_q": batch.max_len,
            "max_length_k": batch.max_len,
        }
        if self.arch.token_type_ids and batch.token_type_ids is not None:
            kwargs["token_type_ids"] = batch.token_type_ids[None]
        if self.arch.causal:
            kwargs["use_cache"] = False
        with _compat.attention_implementation(self.model, self.attn_name):
            out = self.model(**kwargs, return_dict=True)
        return out.last_hidden_state[0]
