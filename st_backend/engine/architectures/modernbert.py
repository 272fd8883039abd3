"""ModernBERT: rotary positions, global layers plus local layers of |i - j| <= local_attention // 2."""

from . import ArchSpec, register


def _windows(config) -> tuple[int, ...]:
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return (config.local_attention // 2,)
    return ()


register(ArchSpec("modernbert", windows=_windows, family="ModernBERT", windowed=True))
