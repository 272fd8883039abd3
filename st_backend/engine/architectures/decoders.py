"""Causal decoders used as embedders or rerankers (Qwen3, Llama, Qwen2: gte-Qwen2, mxbai-rerank-v2): rotary
positions restart per sequence, causal attention; sliding layers where ``layer_types`` names them (Qwen2 with
use_sliding_window: the layers from max_window_layers on)."""

import dataclasses

from ..positions import classify_last_non_pad
from . import ArchSpec, register


def layer_type_windows(config) -> tuple[int, ...]:
    # Causal sliding window: a query sees itself and the sliding_window - 1 tokens before it.
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()) and config.sliding_window:
        return (config.sliding_window - 1,)
    return ()


def bidirectional(spec: ArchSpec, config) -> ArchSpec | str:
    """A causal decoder's spec for ``config``: as is, or bidirectional where the config says ``is_causal=False``
    (transformers >= 5.2). Such a config with sliding layers runs ST's own path: transformers' bidirectional
    sliding mask is |i - j| <= sliding_window, one token more each side than the window the packed attention
    takes from the layer's sliding_window."""
    if getattr(config, "is_causal", True) is not False:
        return spec
    if spec.windows(config):
        return "is_causal=False with sliding-window layers (transformers' mask there is one token wider)"
    return dataclasses.replace(spec, causal=False, resolve=None)


def _register(model_type: str, family: str) -> None:
    spec = ArchSpec(model_type, causal=True, windows=layer_type_windows, family=family, classify=classify_last_non_pad)
    register(dataclasses.replace(spec, resolve=lambda config: bidirectional(spec, config)))


for _model_type, _family in (("qwen3", "Qwen3"), ("llama", "Llama"), ("qwen2", "Qwen2")):
    _register(_model_type, _family)
