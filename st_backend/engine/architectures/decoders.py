"""Causal decoders used as embedders or rerankers: rotary positions restart per sequence, causal attention."""

from ..positions import classify_last_non_pad
from . import ArchSpec, register


def _windows(config) -> tuple[int, ...]:
    # Causal sliding window: a query sees itself and the sliding_window - 1 tokens before it.
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()) and config.sliding_window:
        return (config.sliding_window - 1,)
    return ()


for _model_type, _family in (("qwen3", "Qwen3"), ("llama", "Llama")):
    register(ArchSpec(_model_type, causal=True, windows=_windows, family=_family, classify=classify_last_non_pad))
