"""``st_backend.SentenceTransformer``: ST's class, with ``_inference`` running on the packed engine."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import sentence_transformers
import torch

from .. import _compat
from ..engine.config import EngineConfig
from ..engine.engine import Engine
from ..engine.outputs import PackedEmbeddings
from ..engine.plan import Call
from ..templates import with_chat_template
from ._fallback import call_reason
from ._inputs import engine_items
from .base import PackedModel, split_arguments
from .heads import EmbedOptions
from .plans import embed_plan
from .pool import PoolMixin


class SentenceTransformer(PackedModel, PoolMixin, sentence_transformers.SentenceTransformer):
    """Drop-in ``sentence_transformers.SentenceTransformer``; engine settings come in as ``engine=EngineConfig(...)``.

    chat_template: an instruction/query template (string or .jinja path): each text is rendered as a "user"
    message, a prompt as a "system" one, as ST does for models with a chat template. matryoshka_dimensions /
    matryoshka_strict / is_matryoshka: see st_backend.matryoshka (declared sizes, refusal).
    """

    def __init__(
        self,
        *args: Any,
        engine: EngineConfig | None = None,
        chat_template: str | os.PathLike | None = None,
        matryoshka_dimensions: Sequence[int] | None = None,
        matryoshka_strict: bool | None = None,
        is_matryoshka: bool | None = None,
        **kwargs: Any,
    ) -> None:
        path = args[0] if args else kwargs.get("model_name_or_path")
        super().__init__(*args, **with_chat_template(_compat.init_kwargs(kwargs), chat_template, path))
        hf_config = getattr(getattr(self[0], "model", None), "config", None) if len(self) else None
        self._init_matryoshka(matryoshka_dimensions, matryoshka_strict, is_matryoshka, hf_config)
        self.matryoshka.check(self.truncate_dim, self._full_dimension(), self)
        self._init_packed(engine)

    def _full_dimension(self) -> int | None:
        return _compat.untruncated_dimension(self)

    def engine_for(self, task: str | None = None) -> Engine | str:
        """The engine that serves ``task``, or the reason this model runs ST's own path."""
        return self._packed_engine(task, lambda: embed_plan(self._modules_for(task), task))

    def _why_not_call(self, engine: Engine, output_value: str | None, kwargs: dict) -> str | None:
        if output_value not in ("sentence_embedding", "token_embeddings"):
            return "output_value=None returns ST's full per-input feature dicts"
        left_padded = getattr(engine.plan.tokenizer, "padding_side", "right") == "left"
        if output_value == "token_embeddings" and left_padded and _compat.TOKEN_EMBEDDINGS_KEEP_LEFT_PADS:
            # ST 6.2 trims only trailing padding, so its rows keep the left pads (as many as the batch needs).
            return "token_embeddings with a left-padding tokenizer keep ST's batch-dependent pad rows"
        return call_reason(self, kwargs, frozenset({"task"}))

    def encode_packed(self, inputs: Sequence[str], **kwargs: Any) -> PackedEmbeddings:
        """Token embeddings of every input as one (total_tokens, hidden) matrix with offsets, in input order, for
        storing without padding; ``kwargs`` as for ``encode`` (prompt, task, batch_size, device, ...)."""
        return PackedEmbeddings.from_list(self.encode(list(inputs), output_value="token_embeddings", **kwargs))

    @torch.inference_mode()
    def _inference(self, inputs: list, **arguments: Any):
        a, kwargs = split_arguments(arguments, ST_ARGUMENTS)
        output_value, prompt, task = a["output_value"], a.get("prompt"), kwargs.get("task")
        if output_value == "sentence_embedding":
            self.matryoshka.check(a.get("truncate_dim"), self._full_dimension(), self)
        engine = self.engine_for(task)
        reason = engine if isinstance(engine, str) else self._why_not_call(engine, output_value, kwargs)
        if reason is None:
            transformer = self._modules_for(task)[0]
            items = engine_items(transformer, engine.template, inputs, prompt)
            reason = items if isinstance(items, str) else None
        if reason is not None:
            return self._st_path(reason, inputs, arguments)
        device = self._resolve_inference_device(a.get("device"))
        self.eval()
        ragged = output_value == "token_embeddings"
        if not inputs:
            return [] if ragged else torch.tensor([], device=device)
        prompt_length = None
        if engine.template is None and prompt and not engine.plan.description["include_prompt"]:
            prompt_length = _compat.prompt_length(transformer, prompt, **({"task": task} if task is not None else {}))
        call = Call(
            items,
            prompt,
            outputs="ragged" if ragged else "rows",
            options=EmbedOptions(prompt_length, a.get("truncate_dim"), a.get("normalize_embeddings", False)),
            # A causal embedder pooled at the last token may run its prompt's / template's head once per call.
            prefix_arity=1 if not ragged and prompt_length is None else None,
            save_to_cpu=a.get("save_to_cpu", False),
            show_progress_bar=a.get("show_progress_bar", False),
        )
        outputs = engine.run(call, device).outputs
        return outputs.to_list() if ragged else outputs


# ST's own _inference arguments; everything else is a module kwarg it passes through (task, processing_kwargs).
ST_ARGUMENTS = frozenset(
    {
        "prompt",
        "batch_size",
        "show_progress_bar",
        "output_value",
        "save_to_cpu",
        "normalize_embeddings",
        "truncate_dim",
        "device",
    }
)
