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


def _empty_document_score() -> float:
    from sentence_transformers.util import similarity

    return float(similarity._EMPTY_DOCUMENT_SCORE)


#: The score ST's maxsim gives a document with no scoreable token.
EMPTY_DOCUMENT_SCORE = _empty_document_score()
