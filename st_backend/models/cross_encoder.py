"""``st_backend.CrossEncoder``: ST's CrossEncoder, with ``_inference`` on the packed engine and chat templates
as score templates (given at load, declared as ``score_template`` in the model's ST config, beside the model,
or in the tokenizer config)."""

from __future__ import annotations

import os
from typing import Any

import sentence_transformers
import torch

from .. import _compat
from ..engine.config import EngineConfig
from ..engine.engine import Engine
from ..engine.plan import Call
from ..templates import note_generative_template, score_template_of, with_chat_template
from ._inputs import engine_items
from .base import PackedModel, split_arguments
from .plans import score_plan
from .pool import PoolMixin


class CrossEncoder(PackedModel, PoolMixin, sentence_transformers.CrossEncoder):
    """Drop-in ``sentence_transformers.CrossEncoder``.

    chat_template: a template string or a path to a .jinja file; overrides a ``score_template`` declared in
        ``config_sentence_transformers.json``, ``chat_template.jinja`` beside the model and the tokenizer config's
        template; ``False`` loads none (plain pair tokenization). Pairs are rendered as messages with roles
        ``query`` and ``document``; a prompt becomes a ``system`` message. A template that drops either fails
        here, at load (and at a call, once the template was changed on the model).
    engine: EngineConfig for the packed engine.
    """

    def __init__(
        self,
        *args: Any,
        chat_template: str | os.PathLike | None = None,
        engine: EngineConfig | None = None,
        **kwargs: Any,
    ) -> None:
        path = args[0] if args else kwargs.get("model_name_or_path")
        given = chat_template is not None or "chat_template" in (kwargs.get("processor_kwargs") or {})
        super().__init__(*args, **with_chat_template(_compat.init_kwargs(kwargs), chat_template, path))
        self._init_packed(engine)
        engine_or_reason = self.engine()
        if not isinstance(engine_or_reason, str) and engine_or_reason.template is not None:
            name = getattr(self.model.config, "name_or_path", None) or "this model"
            engine_or_reason.template.check_pairs(name)
            if not given and score_template_of(path) is None:
                note_generative_template(engine_or_reason.template.template, name)

    def engine(self) -> Engine | str:
        """The engine that scores pairs, or the reason this model runs ST's own path."""
        return self._packed_engine("score", lambda: score_plan(list(self)))

    def _items(self, inputs: list, prompt: str | None):
        engine = self.engine()
        if isinstance(engine, str):
            raise ValueError(f"this model runs ST's own path ({engine}): it has no packed token ids")
        items = engine_items(self[0], engine.template, inputs, prompt, scoring=True)
        if isinstance(items, str):
            raise ValueError(f"these inputs run ST's own path ({items})")
        return engine, items

    def rendered(self, pair, prompt: str | None = None) -> str:
        """The text a pair (or single text) is scored as: its chat-template render (no truncation)."""
        engine, items = self._items([pair], prompt)
        if engine.template is None:
            raise ValueError("this model has no chat template: pairs are tokenized as two texts")
        return engine.template.render(items[0])

    def token_ids(self, inputs: list, prompt: str | None = None) -> list[list[int]]:
        """The token ids each input is scored on, after truncation to max_seq_length (template-aware with a template)."""
        engine, items = self._items(list(inputs), prompt)
        return [ids.tolist() for ids in engine.tokenize(items, Call(items, prompt)).ids]

    @torch.inference_mode()
    def _inference(self, inputs: list, **arguments: Any) -> torch.Tensor:
        a, kwargs = split_arguments(arguments, ST_ARGUMENTS)
        prompt = a.get("prompt")
        engine = self.engine()
        reason = engine if isinstance(engine, str) else (f"module kwargs {sorted(kwargs)}" if kwargs else None)
        if reason is None:
            items = engine_items(self[0], engine.template, inputs, prompt, scoring=True)
            reason = items if isinstance(items, str) else None
        if reason is None and engine.template is not None and any(_is_pair(x) for x in inputs):
            engine.template.check_pairs()  # cached per template: a template changed after load is checked again
            if prompt:
                engine.template.check_prompt(prompt)
        if reason is not None:
            return self._st_path(reason, inputs, arguments)
        device = self._resolve_inference_device(a.get("device"))
        self.eval()
        if not inputs:
            return torch.tensor([], device=device)
        call = Call(items, prompt, prefix_arity=2, show_progress_bar=a.get("show_progress_bar", False), desc="Pairs")
        scores = engine.run(call, device).outputs
        # What ST does to each batch's scores, in ST's order.
        if torch.is_floating_point(scores) and torch.finfo(scores.dtype).bits < 32:
            scores = scores.float()
        activation_fn, apply_softmax = a.get("activation_fn"), a.get("apply_softmax")
        if activation_fn is not None:
            scores = activation_fn(scores)
        if self.num_labels == 1 and scores.ndim > 1:
            scores = scores.squeeze(-1)
        if apply_softmax and scores.ndim > 1:
            scores = torch.nn.functional.softmax(scores, dim=1)
        return scores


ST_ARGUMENTS = frozenset({"prompt", "batch_size", "show_progress_bar", "activation_fn", "apply_softmax", "device"})


def _is_pair(item) -> bool:
    return isinstance(item, tuple) or _compat.is_text_pair(item)
