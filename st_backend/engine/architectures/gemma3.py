"""Gemma3 text (Gemma3TextModel: EmbeddingGemma, Gemma3 1B): sliding-window layers alternating with full ones.
The embedding scale, q/k norms, query_pre_attn_scalar scaling (the layer's ``scaling``) and per-layer-type rope
(local / global theta) all live inside the model's own forward; the packed attention takes the layer's scaling and
sliding_window as transformers passes them.

use_bidirectional_attention (EmbeddingGemma): every layer bidirectional, sliding layers |i - j| < sliding_window
(the config already halved it: 512 -> 257), which is the packed window of sliding_window - 1 each side."""

import dataclasses

from ..positions import classify_last_non_pad
from . import ArchSpec, register
from .decoders import bidirectional, layer_type_windows


def _resolve(config) -> ArchSpec | str:
    # Softcapping runs ST's own path (real Gemma3 checkpoints set none): the packed attention applies no softcap
    # (transformers 5.23's Gemma3 passes none; a later one may), the LM reranker head reads lm_head uncapped.
    if config.attn_logit_softcapping is not None or config.final_logit_softcapping is not None:
        return "softcapping (attn_logit_softcapping / final_logit_softcapping) is set"
    if getattr(config, "is_causal", True) is not False and config.use_bidirectional_attention:
        return dataclasses.replace(SPEC, causal=False, resolve=None)
    return bidirectional(SPEC, config)


SPEC = register(
    ArchSpec(
        "gemma3_text",
        causal=True,
        windows=layer_type_windows,
        family="Gemma3",
        windowed=True,
        classify=classify_last_non_pad,
        resolve=_resolve,
    )
)
