"""The one file that touches private names of sentence-transformers and transformers.

When upstream renames something, this file breaks, and tests/test_compat.py says which name.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from sentence_transformers.base.modules.dense import Dense
from sentence_transformers.base.modules.normalize import Normalize
from sentence_transformers.base.modules.router import Router
from sentence_transformers.base.modules.transformer import Transformer
from sentence_transformers.cross_encoder.modules.logit_score import LogitScore
from sentence_transformers.multi_vector_encoder.modules import BaseTokenPooling, MultiVectorMask
from sentence_transformers.sentence_transformer.modules.pooling import Pooling
from sentence_transformers.util import truncate_embeddings

__all__ = [
    "BaseTokenPooling",
    "Dense",
    "LogitScore",
    "MultiVectorMask",
    "Normalize",
    "Pooling",
    "Router",
    "Transformer",
    "attention_implementation",
    "packed_view",
    "remote_code_reason",
    "prompt_length",
    "route_modules",
    "text_max_length",
    "truncate_embeddings",
]


@contextmanager
def attention_implementation(model: torch.nn.Module, name: str) -> Iterator[None]:
    """Run ``model`` with ``config._attn_implementation = name`` (read by every attention layer at call time)."""
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = name  # the setter recurses into sub-configs
    try:
        yield
    finally:
        config._attn_implementation = previous


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


def route_modules(router: Router, task: str | None) -> list[torch.nn.Module]:
    """The sub-modules a Router sends text of this task through."""
    route = router._resolve_route(task=task, modality="text")
    return list(router.sub_modules[route])


def text_max_length(transformer: Transformer, task: str | None) -> int | None:
    """The max_length ST's preprocess truncates text to (query/document lengths first, then the tokenizer's)."""
    if task == "query" and transformer.query_length is not None:
        return transformer.query_length
    if task == "document" and transformer.document_length is not None:
        return transformer.document_length
    return transformer.tokenizer.model_max_length


def prompt_length(transformer: Transformer, prompt: str, **kwargs) -> int | None:
    """ST's own count of prompt tokens, excluding a trailing special token (cached by ST)."""
    return transformer._get_prompt_length(prompt, **kwargs)


def transformer_settings(transformer: Transformer) -> dict:
    """The attributes that decide whether a Transformer module's text path is plain tokenize-then-forward."""
    return {
        "backend": transformer.backend,
        "task": transformer.transformer_task,
        "modality_config": transformer.modality_config,
        "processing_kwargs": transformer.processing_kwargs,
        "query_expansion": transformer.query_expansion,
        "model": transformer.model,
        "tokenizer": transformer.tokenizer,
        "processor": transformer.processor,
    }


def placement_is_delegated(model) -> bool:
    """True when a device_map or Accelerate hooks place the model's modules (ST's own flag)."""
    return bool(getattr(model, "_placement_is_delegated", False))


def template_declares_task(transformer: Transformer) -> bool:
    """Whether ST passes ``task=`` into this module's chat template (task-aware templates)."""
    return bool(transformer._chat_template_declares_task())


def input_formatter(transformer: Transformer):
    """ST's InputFormatter of a module: how it turns texts, pairs and dicts into messages (flat or structured)."""
    return transformer.input_formatter


def is_text_pair(item) -> bool:
    from sentence_transformers.base.modality import InputFormatter

    return InputFormatter.is_text_pair(item)


def is_conversation(item) -> bool:
    """A message dict or a list of them (ST's "message" modality)."""
    from sentence_transformers.base.modality import is_message_dict

    if isinstance(item, dict):
        return is_message_dict(item)
    return isinstance(item, list) and bool(item) and is_message_dict(item[0])


def chat_template_kwargs(transformer: Transformer, task: str | None) -> dict:
    """The kwargs ST's preprocess renders this module's chat template with (size kwargs and ST's own
    ``restore_suffix`` flag aside: they only affect tokenization), ``task`` included when the template declares it."""
    from sentence_transformers.base.modules.transformer import _APPLY_CHAT_TEMPLATE_TOP_LEVEL_KWARGS

    kwargs = dict((transformer.processing_kwargs or {}).get("chat_template") or {})
    kwargs = {k: v for k, v in kwargs.items() if k not in _APPLY_CHAT_TEMPLATE_TOP_LEVEL_KWARGS | {"restore_suffix"}}
    if task is not None and template_declares_task(transformer):
        kwargs = {"task": task, **kwargs}
    return kwargs


def _empty_document_score() -> float:
    from sentence_transformers.util import similarity

    return float(similarity._EMPTY_DOCUMENT_SCORE)


#: The score ST's maxsim gives a document with no scoreable token.
EMPTY_DOCUMENT_SCORE = _empty_document_score()
