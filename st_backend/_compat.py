"""The one file that touches private names of sentence-transformers (engine/hf.py holds transformers' own).

When upstream renames something, this file breaks, and tests/test_compat.py says which name.
"""

from __future__ import annotations

import inspect
import logging

import sentence_transformers
import torch
import transformers
from packaging.version import Version
from sentence_transformers.base.modules.dense import Dense
from sentence_transformers.base.modules.normalize import Normalize
from sentence_transformers.base.modules.router import Router
from sentence_transformers.base.modules.transformer import Transformer
from sentence_transformers.cross_encoder.modules.logit_score import LogitScore
from sentence_transformers.multi_vector_encoder.modules import BaseTokenPooling, MultiVectorMask
from sentence_transformers.sentence_transformer.modules.pooling import Pooling
from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling
from sentence_transformers.util import truncate_embeddings

logger = logging.getLogger("st_backend")

__all__ = [
    "BaseTokenPooling",
    "Dense",
    "LogitScore",
    "MLMTransformer",
    "MultiVectorMask",
    "Normalize",
    "Pooling",
    "Router",
    "SpladePooling",
    "Transformer",
    "TOKEN_EMBEDDINGS_KEEP_LEFT_PADS",
    "MVE_TRUNCATES",
    "check_versions",
    "init_kwargs",
    "normalize_token_vectors",
    "prompt_length",
    "route_modules",
    "text_max_length",
    "truncate_embeddings",
    "untruncated_dimension",
]

# -- what differs between the supported releases (ST 6.2 / 6.3, transformers 5.17-5.25) --------------------------

ST_VERSION = Version(sentence_transformers.__version__)
TRANSFORMERS_VERSION = Version(transformers.__version__)
#: The releases CI runs the suite on (.ci/run: the newest allowed, and the oldest pinned in a second venv).
TESTED = {"sentence-transformers": ("6.2", "6.3"), "transformers": ("5.17", "5.25")}

#: ST 6.2 trims only trailing padding from ``output_value="token_embeddings"`` rows, so a left-padding tokenizer's
#: rows keep their pads; ST 6.3 returns ``token_emb[attention.bool()]``, the real tokens only.
TOKEN_EMBEDDINGS_KEEP_LEFT_PADS = ST_VERSION.release[:2] < (6, 3)
#: ST 6.3's MultiVectorEncoder takes ``truncate_dim`` (at load, saved in its config, per call) and truncates,
#: then L2-normalises, token vectors itself, passing ``truncate_dim=`` to ``_inference``; 6.2 has none of it.
MVE_TRUNCATES = "truncate_dim" in inspect.signature(sentence_transformers.MultiVectorEncoder.__init__).parameters
#: ST 6.3's classes take ``use_kernels`` / ``kernel_config``; 6.2's do not (transformers' from_pretrained does).
_TAKES_KERNELS = "use_kernels" in inspect.signature(sentence_transformers.SentenceTransformer.__init__).parameters
_warned_versions = False


def _tested(version: Version, low: str, high: str) -> bool:
    return Version(low) <= Version(f"{version.major}.{version.minor}") <= Version(high)


def check_versions() -> None:
    """Warn once when the installed ST or transformers is a release the suite was not run on."""
    global _warned_versions
    if _warned_versions:
        return
    _warned_versions = True
    untested = [
        f"{name} {version}"
        for name, version in (("sentence-transformers", ST_VERSION), ("transformers", TRANSFORMERS_VERSION))
        if not _tested(version, *TESTED[name])
    ]
    if untested:
        logger.warning(
            "st_backend: %s is not a tested release (tested: sentence-transformers %s, transformers %s); "
            "outputs are still checked per call against what the engine supports, but report any difference",
            " and ".join(untested),
            " to ".join(TESTED["sentence-transformers"]),
            " to ".join(TESTED["transformers"]),
        )


def init_kwargs(kwargs: dict) -> dict:
    """A model class's constructor kwargs for the installed ST: on ST 6.2, ``use_kernels`` / ``kernel_config`` (ST
    6.3's names) go to transformers' ``from_pretrained`` through ``model_kwargs``, which loads the same kernels into
    the backbone; ST 6.3 takes them itself."""
    if _TAKES_KERNELS or not ({"use_kernels", "kernel_config"} & set(kwargs)):
        return kwargs
    kwargs = dict(kwargs)
    model_kwargs = dict(kwargs.get("model_kwargs") or {})
    for name in ("use_kernels", "kernel_config"):
        value = kwargs.pop(name, None)
        if value not in (None, False):
            model_kwargs[name] = value
    kwargs["model_kwargs"] = model_kwargs
    return kwargs


def untruncated_dimension(model) -> int | None:
    """The model's embedding size before any ``truncate_dim`` (ST 6.3's ``get_embedding_dimension`` returns the
    truncated one for every class)."""
    own = getattr(model, "_get_untruncated_embedding_dimension", None)
    if callable(own):
        return own()
    truncate_dim, model.truncate_dim = getattr(model, "truncate_dim", None), None
    try:
        return model.get_embedding_dimension()
    finally:
        model.truncate_dim = truncate_dim


def normalize_token_vectors(rows: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last axis as ST 6.3 does after truncating token vectors (in float32 for half types)."""
    dtype = rows.dtype
    if dtype in (torch.float16, torch.bfloat16):
        rows = rows.float()
    return torch.nn.functional.normalize(rows, dim=-1).to(dtype)


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
