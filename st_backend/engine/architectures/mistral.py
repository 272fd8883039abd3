"""Mistral (e5-mistral, SFR-Embedding): a causal decoder whose every layer has the config's sliding window (none
when sliding_window is null)."""

from ..positions import classify_last_non_pad
from . import ArchSpec, register
from .decoders import bidirectional


def _windows(config) -> tuple[int, ...]:
    # MistralAttention passes config.sliding_window on every layer: the query and the sliding_window - 1 before it.
    return (config.sliding_window - 1,) if config.sliding_window else ()


SPEC = register(
    ArchSpec(
        "mistral",
        causal=True,
        windows=_windows,
        family="Mistral",
        windowed=True,
        classify=classify_last_non_pad,
        resolve=lambda config: bidirectional(SPEC, config),
    )
)
