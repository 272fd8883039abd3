"""Saying once, per reason, that a call runs sentence-transformers' own path."""

from __future__ import annotations

import logging

logger = logging.getLogger("st_backend")
_said: set[str] = set()


def warn_fallback(owner: str, reason: str) -> None:
    """Warn the first time ``owner`` falls back to ST's own (slower, exact) path for ``reason``."""
    key = f"{owner}: {reason}"
    if key not in _said:
        _said.add(key)
        logger.warning("st_backend: %s runs sentence-transformers' own path (slower, same results): %s", owner, reason)


def call_reason(model, kwargs: dict, allowed: frozenset[str] = frozenset()) -> str | None:
    """Why one call must run ST's own path, for the reasons every model class shares; None when it need not.

    kwargs: the module kwargs ST passed through; ``allowed``: those this class's engine handles itself."""
    from .. import _compat

    if _compat.placement_is_delegated(model):
        return "a device_map or Accelerate hooks place this model"
    if kwargs.get("processing_kwargs"):
        return "per-call processing_kwargs change tokenization"
    if kwargs.get("modality") not in (None, "text"):
        return f"modality={kwargs['modality']!r}"
    extra = set(kwargs) - {"processing_kwargs", "modality"} - allowed
    return f"module kwargs {sorted(extra)}" if extra else None
