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
