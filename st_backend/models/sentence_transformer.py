"""``st_backend.SentenceTransformer``: ST's class, with ``_inference`` running on the packed engine."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import sentence_transformers
import torch

from .. import _compat
from ..engine.config import EngineConfig
from ..engine.embed import EmbedEngine, EmbedRequest
from ..engine.plan import build_embed_plan
from ..late_interaction import PackedEmbeddings
from ..matryoshka import Matryoshka
from ..templates import with_chat_template
from ._fallback import call_reason, warn_fallback
from ._inputs import engine_items
from .pool import PoolMixin


class SentenceTransformer(PoolMixin, sentence_transformers.SentenceTransformer):
    """Drop-in ``sentence_transformers.SentenceTransformer``; engine settings come in as ``engine=EngineConfig(...)``."""

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
        # chat_template: an instruction/query template (string or .jinja path): each text is rendered as a
        # "user" message, a prompt as a "system" one, as ST does for models with a chat template.
        # matryoshka_dimensions / matryoshka_strict: see st_backend.matryoshka (declared sizes, refusal).
        self._st_config: dict = {}
        super().__init__(
            *args, **with_chat_template(kwargs, chat_template, args[0] if args else kwargs.get("model_name_or_path"))
        )
        hf_config = getattr(getattr(self[0], "model", None), "config", None) if len(self) else None
        self.matryoshka = Matryoshka.resolve(
            matryoshka_dimensions, matryoshka_strict, self._st_config, hf_config, is_matryoshka=is_matryoshka
        )
        self.matryoshka.check(self.truncate_dim, self._full_dimension(), self)
        self.engine_config = engine if engine is not None else EngineConfig()
        self.engine_config.cast(self)
        self.engine_config.check_attention(self)
        self._st_engines: dict[str | None, EmbedEngine | str] = {}

    def _parse_model_config(self, model_config: dict[str, Any]) -> None:
        self._st_config = dict(model_config)  # keeps matryoshka_dimensions / is_matryoshka, which ST ignores
        super()._parse_model_config(model_config)

    def _get_model_config(self) -> dict[str, Any]:
        config = super()._get_model_config()
        if getattr(self, "matryoshka", None) is not None and self.matryoshka.dimensions:
            config["matryoshka_dimensions"] = list(self.matryoshka.dimensions)
        elif getattr(self, "matryoshka", None) is not None and self.matryoshka.any_prefix:
            config["is_matryoshka"] = True
        return config

    def _full_dimension(self) -> int | None:
        truncate_dim, self.truncate_dim = self.truncate_dim, None
        try:
            return self.get_embedding_dimension()
        finally:
            self.truncate_dim = truncate_dim

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
            plan = build_embed_plan(modules, task)
            self._st_engines[task] = plan if isinstance(plan, str) else EmbedEngine(plan, self.engine_config)
        return self._st_engines[task]

    def _why_not_call(self, engine: EmbedEngine, output_value: str | None, kwargs: dict) -> str | None:
        if output_value not in ("sentence_embedding", "token_embeddings"):
            return "output_value=None returns ST's full per-input feature dicts"
        if output_value == "token_embeddings" and getattr(engine.plan.tokenizer, "padding_side", "right") == "left":
            # ST trims only trailing padding, so its rows keep the left pads (as many as the batch needs).
            return "token_embeddings with a left-padding tokenizer keep ST's batch-dependent pad rows"
        return call_reason(self, kwargs, frozenset({"task"}))

    def encode_packed(self, inputs: Sequence[str], **kwargs: Any) -> PackedEmbeddings:
        """Token embeddings of every input as one (total_tokens, hidden) matrix with offsets, in input order, for
        storing without padding; ``kwargs`` as for ``encode`` (prompt, task, batch_size, device, ...)."""
        return PackedEmbeddings.from_list(self.encode(list(inputs), output_value="token_embeddings", **kwargs))

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
        if output_value == "sentence_embedding":
            self.matryoshka.check(truncate_dim, self._full_dimension(), self)
        task = kwargs.get("task")
        engine = self.engine_for(task)
        reason = engine if isinstance(engine, str) else self._why_not_call(engine, output_value, kwargs)
        if reason is None:
            items = engine_items(engine.plan.transformer, engine.template, inputs, prompt)
            reason = items if isinstance(items, str) else None
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
            texts=items,
            prompt=prompt,
            task=task,
            output_value=output_value,
            normalize=normalize_embeddings,
            truncate_dim=truncate_dim,
            save_to_cpu=save_to_cpu,
            show_progress_bar=show_progress_bar,
        )
        return engine.embed(request, device)
