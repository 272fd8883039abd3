"""From a loaded ST module pipeline to the engine's neutral Plan (or the reason it runs ST's own path): which
pipelines the engine runs exactly as ST would, and the head each runs on packed hidden states (heads.py)."""

from __future__ import annotations

import torch

from .. import _compat
from ..engine.architectures import resolve as resolve_arch
from ..engine.architectures import spec_for
from ..engine.hf import remote_code_reason
from ..engine.plan import Expansion, Plan
from ..engine.pooling import POOLERS
from ..templates import chat_functions
from .heads import embed_head, multi_vector_head, score_head


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
    # MLMTransformer is ST's Transformer with fill-mask defaults (its own code only loads): the same checks hold.
    if type(module) not in (_compat.Transformer, _compat.MLMTransformer):
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
    if hasattr(model, "peft_config") or any(type(m).__module__.startswith("peft.") for m in model.modules()):
        # Also layers injected without a config: their on/off switch is an attribute a packed view would not see.
        return "the model carries PEFT adapters"
    if getattr(model.config, "output_hidden_states", False):
        return "output_hidden_states is on (all_layer_embeddings)"
    found = resolve_arch(model.config)
    if isinstance(found, str):
        return found
    if found.absolute_positions and getattr(s["tokenizer"], "padding_side", "right") == "left":
        # ST's result then depends on the batch (see README, Known ST quirks): its own path gives exactly it.
        return f"a left-padding tokenizer shifts {found.model_type}'s absolute positions by each row's pad count"
    return remote_code_reason(model)


def embed_plan(modules: list[torch.nn.Module], task: str | None = None) -> Plan | str:
    """[Transformer, Pooling, (Dense | Normalize)*] serving ``task``, or the reason as a string."""
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
    return Plan(
        model=first.model,
        tokenizer=first.tokenizer,
        arch=spec_for(first.model.config),
        head=embed_head(modes, post),
        max_length=lambda call: _compat.text_max_length(first, task),
        template=chat_functions(first, task),
        last_token_head=modes == ("lasttoken",),
        description={"task": "embed", "pooling": modes, "include_prompt": pooling.include_prompt},
    )


def score_plan(modules: list[torch.nn.Module]) -> Plan | str:
    """[Transformer(sequence-classification)] or [Transformer(text-generation), LogitScore], else the reason."""
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
        if not reason and spec_for(first.model.config).classify is None:
            reason = f"no packed sequence-classification head for {first.model.config.model_type!r}"
    if reason:
        return reason
    spec = spec_for(first.model.config)
    return Plan(
        model=first.model.base_model,  # the runner calls the base model; the head reads what it needs
        tokenizer=first.tokenizer,
        arch=spec,
        head=score_head(first.model, spec, post, causal),
        max_length=lambda call: _compat.text_max_length(first, None),
        template=chat_functions(first),
        # An LM reranker reads each pair's last token only; a decoder classifier reads the last non-pad token,
        # which could fall inside a shared head.
        last_token_head=causal,
        description={"task": "score", "causal": causal},
    )


def _token_step_reason(i: int, module: torch.nn.Module, pooled: bool) -> str | None:
    if type(module) in (_compat.Dense, _compat.Normalize):
        names = (module.module_input_name, module.module_output_name)
        return None if names == ("token_embeddings",) * 2 else f"module {i} ({type(module).__name__}) maps {names}"
    if type(module) is _compat.MultiVectorMask:
        return "a MultiVectorMask after token pooling" if pooled else None
    if isinstance(module, _compat.BaseTokenPooling):
        return None
    return f"module {i} is {type(module).__name__}"


def multi_vector_plan(modules: list[torch.nn.Module], task: str | None) -> Plan | str:
    """Transformer -> token steps (Dense, Normalize, MultiVectorMask, token pooling) for ``task``'s encode calls,
    or the reason they run ST's own path."""
    first, *steps = modules
    expansion = first.query_expansion if task == "query" else None
    if expansion is not None and not expansion["attend"]:
        return "query expansion with attend=False hides the expansion tokens from attention (ST pads these queries)"
    reason = why_not_transformer(first, expansion_ok=True)
    if reason:
        return reason
    fill = expansion_token_id(first.tokenizer, expansion) if expansion is not None else None
    if expansion is not None and fill is None:
        return "query expansion without an expansion token (no mask or eos token)"
    pooled = False
    for i, module in enumerate(steps, start=2):
        reason = _token_step_reason(i, module, pooled)
        if reason:
            return reason
        pooled = pooled or isinstance(module, _compat.BaseTokenPooling)
    return Plan(
        model=first.model,
        tokenizer=first.tokenizer,
        arch=spec_for(first.model.config),
        head=multi_vector_head(list(steps)),
        max_length=lambda call: _compat.text_max_length(first, task),
        expansion=_expansion(first, expansion, fill) if expansion is not None else None,
        description={"task": "multi-vector", "expansion": expansion},
    )


def expansion_token_id(tokenizer, expansion: dict) -> int | None:
    """The id ST's preprocess writes into expansion positions: the configured token, else [MASK], else EOS."""
    if expansion["token"] is not None:
        return tokenizer.convert_tokens_to_ids(expansion["token"])
    return tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.eos_token_id


def _expansion(transformer, expansion: dict, fill: int) -> Expansion:
    """As ST's preprocess: 'fixed' caps queries at ``length`` and fills them to it; 'min' only floors them (the
    query length, if any, stays the cap)."""
    floor = expansion["length"]
    if expansion["strategy"] == "fixed":
        return Expansion(floor=floor, cap=floor, fill=fill, fixed=True)
    cap = transformer.query_length
    cap = max(cap, floor) if cap is not None else transformer.tokenizer.model_max_length
    return Expansion(floor=floor, cap=cap, fill=fill, fixed=False)


def sparse_plan(modules: list[torch.nn.Module], task: str | None = None) -> Plan | str:
    """[MLMTransformer or Transformer(fill-mask), SpladePooling] serving ``task`` (SPLADE), or the reason."""
    from .heads import MLM_HEADS, sparse_head

    names = [type(m).__name__ for m in modules]
    if names[:1] == ["SparseStaticEmbedding"]:
        return "an inference-free route (SparseStaticEmbedding: one weight per token, no transformer to pack)"
    if len(modules) != 2 or type(modules[1]) is not _compat.SpladePooling:
        return f"the pipeline {names} is not a masked-LM Transformer followed by SpladePooling"
    first, pooling = modules
    reason = why_not_transformer(first, "fill-mask", "logits")
    if reason:
        return reason
    model = first.model
    if type(model).__name__ not in MLM_HEADS:
        return f"no packed masked-LM head for {type(model).__name__}"
    if pooling.pooling_strategy not in ("max", "sum") or pooling.activation_function not in ("relu", "log1p_relu"):
        return f"SpladePooling({pooling.pooling_strategy!r}, {pooling.activation_function!r}) is not ST's max/sum"
    return Plan(
        model=model.base_model,  # the runner calls the base model; the head is the MLM class's own
        tokenizer=first.tokenizer,
        arch=spec_for(model.config),
        head=sparse_head(model, pooling.pooling_strategy, pooling.activation_function),
        max_length=lambda call: _compat.text_max_length(first, task),
        description={
            "task": "sparse",
            "pooling": pooling.pooling_strategy,
            "activation": pooling.activation_function,
        },
    )
