"""The one engine file that touches private names of transformers: a packed view of a model (its own config
naming the packed attention backend) and whether a model is transformers' own class for its model_type."""

from __future__ import annotations

import copy

import torch


def packed_view(model: torch.nn.Module, attn_name: str) -> torch.nn.Module:
    """A copy of ``model``'s module tree that shares every parameter and buffer (no extra memory) and whose config
    names ``attn_name``. The packed engine runs this view, so the user's model keeps its own attention
    implementation: ST's own path on it, from any thread at the same time, never sees the packed kernel."""
    memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
    view = copy.deepcopy(model, memo)
    view.config._attn_implementation = attn_name  # the setter recurses into sub-configs
    return view


def remote_code_reason(model: torch.nn.Module) -> str | None:
    """Why ``model`` is not transformers' own class for its config's model_type (remote code reusing a stock
    model_type, as Jina's models do: their forward may ignore cu_seq_lens), or None when it is."""
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    model_type = getattr(model.config, "model_type", None)
    expected = f"transformers.models.{model_type_to_module_name(model_type)}."
    module = type(model).__module__
    if module.startswith(expected):
        return None
    return (
        f"{type(model).__name__} comes from {module}, not transformers' {model_type!r} classes "
        "(remote code: its forward may not take packed sequences)"
    )
