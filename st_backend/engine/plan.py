"""From an ST module pipeline to what the packed engine runs, or the reason it cannot."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _compat
from .architectures import ArchSpec, spec_for
from .chat import ChatFunctions
from .pooling import POOLERS


@dataclass
class TransformerPlan:
    """The ST Transformer module a plan runs, and its architecture's quirks."""

    transformer: _compat.Transformer
    arch: ArchSpec

    @property
    def hf_model(self) -> torch.nn.Module:
        return self.transformer.model

    @property
    def tokenizer(self):
        return self.transformer.tokenizer


@dataclass
class EmbedPlan(TransformerPlan):
    """Transformer -> segment pooling -> post modules (Dense / Normalize on sentence_embedding)."""

    pooling_modes: tuple[str, ...]
    include_prompt: bool
    post: list[torch.nn.Module]
    template: ChatFunctions | None = None  # the chat template texts are rendered through ("message" modality)


def why_not_transformer(
    module: torch.nn.Module,
    task: str = "feature-extraction",
    output: str = "last_hidden_state",
    message: bool = False,
    expansion_ok: bool = False,
) -> str | None:
    """None when the engine can run this module's text path exactly as ST would, else the reason.

    task / output: the transformer_task and model output the engine replaces; message: whether a chat
    template (the "message" modality) may render the text; expansion_ok: the caller applies query expansion.
    """
    if type(module) is not _compat.Transformer:
        return f"the input module is {type(module).__name__}, not sentence_transformers' Transformer"
    s = _compat.transformer_settings(module)
    if s["backend"] != "torch":
        return f"the Transformer runs on the {s['backend']!r} backend"
    if s["task"] != task:
        return f"transformer_task is {s['task']!r}"
    modalities = s["modality_config"]
    allowed = {"text", "message"} if message else {"text"}
    if "text" not in modalities or not set(modalities) <= allowed:
        return f"modalities {sorted(modalities)} are not plain text" + ("" if message else " (a chat template)")
    for name, params in modalities.items():
        out = params.get("method_output_name")
        if params.get("method") != "forward" or out not in (output, (output,)):
            return f"the {name} path calls {params.get('method')}() for {out!r}, not forward() for {output!r}"
    if "message" in modalities and s["processor"] is not s["tokenizer"]:
        return "the chat template belongs to a multimodal processor"
    if any(s["processing_kwargs"].get(k) for k in s["processing_kwargs"]):
        return f"processing_kwargs {s['processing_kwargs']} change tokenization"
    if s["query_expansion"] is not None and not expansion_ok:
        return "query expansion pads queries on purpose"
    if s["tokenizer"] is None:
        return "the Transformer has no tokenizer"
    model = s["model"]
    if hasattr(model, "peft_config"):
        return "the model carries PEFT adapters"
    if getattr(model.config, "output_hidden_states", False):
        return "output_hidden_states is on (all_layer_embeddings)"
    if spec_for(model.config) is None:
        return f"model_type {model.config.model_type!r} has no packed architecture spec yet"
    return _compat.remote_code_reason(model)


def template_of(transformer, task: str | None = None) -> ChatFunctions | None:
    """How ST renders this module's text through its chat template, or None for plain text."""
    from ..templates import chat_functions

    return chat_functions(transformer, task)


def build_embed_plan(modules: list[torch.nn.Module], task: str | None = None) -> EmbedPlan | str:
    """EmbedPlan for [Transformer, Pooling, (Dense | Normalize)*] serving ``task``, or the reason as a string."""
    if len(modules) < 2:
        return f"the pipeline {[type(m).__name__ for m in modules]} has no Pooling module"
    first, pooling, *post = modules
    reason = why_not_transformer(first, message=True)
    if reason:
        return reason
    if type(pooling) is not _compat.Pooling:
        return f"module 2 is {type(pooling).__name__}, not Pooling"
    modes = (pooling.pooling_mode,) if isinstance(pooling.pooling_mode, str) else tuple(pooling.pooling_mode)
    unknown = [m for m in modes if m not in POOLERS]
    if unknown:
        return f"pooling modes {unknown} have no segment pooler"
    for i, module in enumerate(post, start=3):
        if type(module) not in (_compat.Dense, _compat.Normalize):
            return f"module {i} is {type(module).__name__}"
        if module.module_input_name != "sentence_embedding" or module.module_output_name != "sentence_embedding":
            return f"module {i} ({type(module).__name__}) reads {module.module_input_name!r}"
    return EmbedPlan(
        transformer=first,
        arch=spec_for(first.model.config),
        pooling_modes=modes,
        include_prompt=pooling.include_prompt,
        post=list(post),
        template=template_of(first, task),
    )


@dataclass
class ScorePlan(TransformerPlan):
    """Transformer (sequence classification, or causal LM read at the last token) -> post modules -> scores.

    template: the chat template pairs are rendered through ("message" modality), or None for plain pairs.
    """

    causal: bool
    post: list[torch.nn.Module]
    template: ChatFunctions | None


def build_score_plan(modules: list[torch.nn.Module]) -> ScorePlan | str:
    """ScorePlan for [Transformer(sequence-classification)] or [Transformer(text-generation), LogitScore]."""
    from .heads import SEQUENCE_CLASSIFICATION

    first, *post = modules
    causal = getattr(first, "transformer_task", None) == "text-generation"
    if causal:
        reason = why_not_transformer(first, "text-generation", "logits", message=True)
        if not reason and not (len(post) == 1 and type(post[0]) is _compat.LogitScore):
            reason = f"the modules after the causal LM are {[type(m).__name__ for m in post]}, not one LogitScore"
        if not reason and not hasattr(first.model, "lm_head"):
            reason = f"{type(first.model).__name__} has no lm_head"
    else:
        reason = why_not_transformer(first, "sequence-classification", "logits", message=True)
        if not reason and post:
            reason = f"modules after the classifier: {[type(m).__name__ for m in post]}"
        if not reason and first.model.config.model_type not in SEQUENCE_CLASSIFICATION:
            reason = f"no packed sequence-classification head for {first.model.config.model_type!r}"
    if reason:
        return reason
    return ScorePlan(first, spec_for(first.model.config), causal, list(post), template_of(first))
