"""ModernBERT: rotary positions, global layers plus local layers of |i - j| <= local_attention // 2."""

from ..pooling import Segments, pool
from ..positions import first_tokens
from . import ArchSpec, register


def _windows(config) -> tuple[int, ...]:
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return (config.local_attention // 2,)
    return ()


def _classify(model, hidden, batch):
    if model.config.classifier_pooling == "cls":
        pooled = hidden[first_tokens(batch)]
    else:  # "mean" over every token of the sequence
        pooled = pool(hidden, Segments.of(batch), ("mean",))
    return model.classifier(model.drop(model.head(pooled)))


register(ArchSpec("modernbert", windows=_windows, family="ModernBERT", windowed=True, classify=_classify))
