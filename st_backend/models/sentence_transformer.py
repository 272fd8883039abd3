"""``st_backend.SentenceTransformer``: ST's class, with ``_inference`` running on the packed engine."""

from __future__ import annotations

import os
from typing import Any

import sentence_transformers
import torch

from .. import _compat
from ..engine.config import EngineConfig
from ..engine.embed import EmbedEngine, EmbedRequest
from ..engine.plan import build_embed_plan
from ..templates import with_chat_template
from ._fallback import warn_fallback


def check_text_inputs(inputs: list) -> str | None:
    """Raise TypeError naming the first item that is neither a string nor a text pair; a reason if pairs."""
    has_pairs = False
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            continue
        if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
            has_pairs = True
            continue
        raise TypeError(f"inputs[{i}] is {type(item).__name__} ({item!r:.60}); this text model takes str items")
    return "text pairs are tokenized together by ST's processor" if has_pairs else None


class SentenceTransformer(sentence_transformers.SentenceTransformer):
    """Drop-in ``sentence_transformers.SentenceTransformer``; engine settings come in as ``engine=EngineConfig(...)``."""

    def __init__(
        self,
        *args: Any,
        engine: EngineConfig | None = None,
        chat_template: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        # chat_template: an instruction/query template (string or .jinja path): each text is rendered as a
        # "user" message, a prompt as a "system" one, as ST does for models with a chat template.
        super().__init__(*args, **with_chat_template(kwargs, chat_template))
        self.engine_config = engine if engine is not None else EngineConfig()
        if self.engine_config.dtype is not None:
            self.to(self.engine_config.dtype)
        self._st_engines: dict[str | None, EmbedEngine | str] = {}

    def __getstate__(self) -> dict:
        # Multi-process pools pickle the model: engines (tokenizer copies, runners) are rebuilt per process.
        state = self.__dict__.copy()
        state["_st_engines"] = {}
        return state

    def engine_for(self, task: str | None = None) -> EmbedEngine | str:
        """The engine that serves ``task``, or the reason this model runs ST's own path."""
        if task not in self._st_engines:
            modules = list(self)
            if modules and isinstance(modules[0], _compat.Router):
                modules = _compat.route_modules(modules[0], task) + modules[1:]
            plan = build_embed_plan(modules)
            self._st_engines[task] = plan if isinstance(plan, str) else EmbedEngine(plan, self.engine_config)
        return self._st_engines[task]

    def _why_not_call(self, engine: EmbedEngine, inputs: list, output_value: str | None, kwargs: dict) -> str | None:
        if _compat.placement_is_delegated(self):
            return "a device_map or Accelerate hooks place this model"
        if output_value not in ("sentence_embedding", "token_embeddings"):
            return "output_value=None returns ST's full per-input feature dicts"
        if output_value == "token_embeddings" and getattr(engine.plan.tokenizer, "padding_side", "right") == "left":
            # ST trims only trailing padding, so its rows keep the left pads (as many as the batch needs).
            return "token_embeddings with a left-padding tokenizer keep ST's batch-dependent pad rows"
        if kwargs.get("processing_kwargs"):
            return "per-call processing_kwargs change tokenization"
        if kwargs.get("modality") not in (None, "text"):
            return f"modality={kwargs['modality']!r}"
        extra = set(kwargs) - {"task", "processing_kwargs", "modality"}
        if extra:
            return f"module kwargs {sorted(extra)}"
        return check_text_inputs(inputs)

    @torch.inference_mode()
    def _inference(
        self,
        inputs: list,
        *,
        prompt: str | None,
        batch_size: int,
        show_progress_bar: bool,
        output_value: str | None,
        save_to_cpu: bool,
        normalize_embeddings: bool,
        truncate_dim: int | None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ):
        task = kwargs.get("task")
        engine = self.engine_for(task)
        reason = engine if isinstance(engine, str) else self._why_not_call(engine, inputs, output_value, kwargs)
        if reason is not None:
            warn_fallback(type(self).__name__, reason)
            return super()._inference(
                inputs,
                prompt=prompt,
                batch_size=batch_size,
                show_progress_bar=show_progress_bar,
                output_value=output_value,
                save_to_cpu=save_to_cpu,
                normalize_embeddings=normalize_embeddings,
                truncate_dim=truncate_dim,
                device=device,
                **kwargs,
            )
        device = self._resolve_inference_device(device)
        self.eval()
        if not inputs:
            return [] if output_value == "token_embeddings" else torch.tensor([], device=device)
        request = EmbedRequest(
            texts=inputs,
            prompt=prompt,
            task=task,
            output_value=output_value,
            max_sequences=batch_size,
            normalize=normalize_embeddings,
            truncate_dim=truncate_dim,
            save_to_cpu=save_to_cpu,
            show_progress_bar=show_progress_bar,
        )
        return engine.embed(request, device)
