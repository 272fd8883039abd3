"""Matryoshka dimensions: what a model declares, and refusing a truncation it was not trained for.

Declared in ``config_sentence_transformers.json`` or ``config.json`` (``matryoshka_dimensions``, or
``is_matryoshka: true`` for "any prefix"), or given at load. An embedding cut at an arbitrary size from a
model not trained for it silently loses quality, so with ``strict`` (default on when dimensions are declared)
an undeclared size raises, and a model that declares nothing gets a one-time warning. ``strict=True`` given
explicitly refuses every truncation of a model that declares nothing (vLLM's rule for ``dimensions``);
``strict=False`` given explicitly truncates to any size without a warning. ``is_matryoshka=True`` at load says
every prefix was trained (no refusal, no warning, whatever the files declare); ``is_matryoshka=False`` at load
overrides a file's ``is_matryoshka: true``.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger("st_backend")
_warned: set[int] = set()


@dataclass(frozen=True)
class Matryoshka:
    dimensions: tuple[int, ...] | None  # declared sizes, largest first; None when unknown
    any_prefix: bool  # is_matryoshka (at load, or in a file without a list): every prefix was trained
    strict: bool
    warn: bool = True  # nothing declared and strict not given: warn once (strict=False given: silent)

    @classmethod
    def resolve(
        cls,
        given: Sequence[int] | None,
        strict: bool | None,
        st_config: dict | None,
        hf_config: object | None,
        is_matryoshka: bool | None = None,
    ) -> Matryoshka:
        """``given`` / ``strict`` / ``is_matryoshka``: the load arguments (None: not given); the configs: what
        ``config_sentence_transformers.json`` and ``config.json`` declare."""
        strict = _flag("matryoshka_strict", strict)
        is_matryoshka = _flag("is_matryoshka", is_matryoshka)
        if given is not None:
            given = _sizes("matryoshka_dimensions", given)
            if is_matryoshka:
                raise ValueError(
                    "give matryoshka_dimensions=[...] (only these sizes were trained) or is_matryoshka=True (every "
                    "prefix was trained), not both"
                )
        sources = [{"matryoshka_dimensions": given}, st_config or {}, getattr(hf_config, "__dict__", {})]
        dims = next((s["matryoshka_dimensions"] for s in sources if s.get("matryoshka_dimensions")), None)
        if dims is not None and dims is not given:
            dims = _sizes("matryoshka_dimensions in the model's config", dims)
        if is_matryoshka is None:
            any_prefix = dims is None and any(bool(s.get("is_matryoshka")) for s in sources[1:])
        else:
            any_prefix = is_matryoshka
        return cls(dims, any_prefix, dims is not None if strict is None else strict, warn=strict is None)

    def check(self, truncate_dim: int | None, full_dim: int | None, owner: object) -> None:
        """Raise ValueError (strict) or warn once when ``truncate_dim`` is not a size this model was trained for."""
        if truncate_dim is None or (full_dim is not None and truncate_dim >= full_dim) or self.any_prefix:
            return
        if self.dimensions is None:
            if self.strict:
                raise ValueError(
                    f"truncate_dim={truncate_dim}: this model declares no Matryoshka dimensions, and "
                    "matryoshka_strict=True refuses sizes it was not trained for. Declare them at load with "
                    "matryoshka_dimensions=[...] (or is_matryoshka=True if every prefix was trained), or pass "
                    "matryoshka_strict=False to truncate anyway."
                )
            if self.warn and id(owner) not in _warned:
                _warned.add(id(owner))
                logger.warning(
                    "st_backend: this model declares no Matryoshka dimensions; truncating embeddings to %d may "
                    "lose quality. Declare them with matryoshka_dimensions=[...] at load.",
                    truncate_dim,
                )
            return
        if truncate_dim not in self.dimensions and self.strict:
            raise ValueError(
                f"truncate_dim={truncate_dim} is not a dimension this model was trained for; supported: "
                f"{list(self.dimensions)}. Pass matryoshka_strict=False at load to truncate anyway."
            )


def _flag(name: str, value: object) -> bool | None:
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    raise ValueError(f"{name} must be True, False or None (not given), got {value!r}")


def _sizes(name: str, value: object) -> tuple[int, ...]:
    """Declared sizes as distinct ints, largest first; numpy integers count, bools and fractions do not."""
    items = list(value) if isinstance(value, Sequence | np.ndarray) and not isinstance(value, str | bytes) else None
    ok = bool(items) and all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool | np.bool_) and d > 0 for d in items
    )
    if not ok:
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {value!r}")
    return tuple(sorted({int(d) for d in items}, reverse=True))
