"""The one file that touches private names of sentence-transformers (engine/hf.py holds transformers' own).

When upstream renames something, this file breaks, and tests/test_compat.py says which name.
"""

from __future__ import annotations

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
    "prompt_length",
    "route_modules",
    "text_max_length",
    "truncate_embeddings",
]


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
