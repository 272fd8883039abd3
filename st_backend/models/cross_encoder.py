"""``st_backend.CrossEncoder``: ST's CrossEncoder, with ``_inference`` on the packed engine and chat templates
as score templates (given at load, beside the model, or in the tokenizer config)."""

from __future__ import annotations

import os
from typing import Any

import sentence_transformers
import torch

from ..engine.config import EngineConfig
from ..engine.plan import build_score_plan
from ..engine.score import ScoreEngine, ScoreRequest
from ..templates import with_chat_template
from ._fallback import warn_fallback
from .pool import PoolMixin


def check_pairs(inputs: list) -> None:
    """Raise naming the first item that is not a pair of two strings."""
    for i, item in enumerate(inputs):
        if not isinstance(item, (tuple, list)):
            raise TypeError(f"inputs[{i}] is {type(item).__name__}; a CrossEncoder scores (query, document) pairs")
        if len(item) != 2:
            raise ValueError(f"inputs[{i}] has {len(item)} items; a CrossEncoder scores (query, document) pairs")
        for j, text in enumerate(item):
            if not isinstance(text, str):
                raise TypeError(f"inputs[{i}][{j}] is {type(text).__name__}; pairs hold two strings")


class CrossEncoder(PoolMixin, sentence_transformers.CrossEncoder):
    """Drop-in ``sentence_transformers.CrossEncoder``.

    chat_template: a template string or a path to a .jinja file; overrides ``chat_template.jinja`` beside the
        model and the tokenizer config's template. Pairs are rendered as messages with roles ``query`` and
        ``document``; a prompt becomes a ``system`` message. A template that drops either fails here, at load.
    engine: EngineConfig for the packed engine.
    """

    def __init__(
        self,
        *args: Any,
        chat_template: str | os.PathLike | None = None,
        engine: EngineConfig | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **with_chat_template(kwargs, chat_template))
        self.engine_config = engine if engine is not None else EngineConfig()
        self.engine_config.cast(self)
        self._st_engine: ScoreEngine | str | None = None
        engine_or_reason = self.engine()
        if isinstance(engine_or_reason, ScoreEngine) and engine_or_reason.template is not None:
            engine_or_reason.template.check_pairs(getattr(self.model.config, "name_or_path", None) or "this model")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_st_engine"] = None
        return state

    def engine(self) -> ScoreEngine | str:
        """The engine that scores pairs, or the reason this model runs ST's own path."""
        if getattr(self, "_st_engine", None) is None:
            plan = build_score_plan(list(self))
            self._st_engine = plan if isinstance(plan, str) else ScoreEngine(plan, self.engine_config)
        return self._st_engine

    @torch.inference_mode()
    def _inference(
        self,
        inputs: list,
        *,
        prompt: str | None,
        batch_size: int,
        show_progress_bar: bool,
        activation_fn,
        apply_softmax: bool | None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        check_pairs(inputs)
        engine = self.engine()
        reason = engine if isinstance(engine, str) else (f"module kwargs {sorted(kwargs)}" if kwargs else None)
        if reason is not None:
            warn_fallback(type(self).__name__, reason)
            return super()._inference(
                inputs,
                prompt=prompt,
                batch_size=batch_size,
                show_progress_bar=show_progress_bar,
                activation_fn=activation_fn,
                apply_softmax=apply_softmax,
                device=device,
                **kwargs,
            )
        device = self._resolve_inference_device(device)
        self.eval()
        if not inputs:
            return torch.tensor([], device=device)
        request = ScoreRequest([tuple(p) for p in inputs], prompt, show_progress_bar)
        scores = engine.score(request, device)
        # What ST does to each batch's scores, in ST's order.
        if torch.is_floating_point(scores) and torch.finfo(scores.dtype).bits < 32:
            scores = scores.float()
        if activation_fn is not None:
            scores = activation_fn(scores)
        if self.num_labels == 1 and scores.ndim > 1:
            scores = scores.squeeze(-1)
        if apply_softmax and scores.ndim > 1:
            scores = torch.nn.functional.softmax(scores, dim=1)
        return scores
