"""Matryoshka dimensions: what a model declares, and refusing a truncation it was not trained for.

Declared in ``config_sentence_transformers.json`` or ``config.json`` (``matryoshka_dimensions``, or
``is_matryoshka: true`` for "any prefix"), or given at load. An embedding cut at an arbitrary size from a
model not trained for it silently loses quality, so with ``strict`` (default on when dimensions are declared)
an undeclared size raises, and a model that declares nothing gets a one-time warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger("st_backend")
_warned: set[int] = set()


@dataclass(frozen=True)
class Matryoshka:
    dimensions: tuple[int, ...] | None  # declared sizes, largest first; None when unknown
    any_prefix: bool  # is_matryoshka without a list: every prefix was trained
    strict: bool

    @classmethod
    def resolve(
        cls,
        given: Sequence[int] | None,
        strict: bool | None,
        st_config: dict | None,
        hf_config: object | None,
    ) -> Matryoshka:
        sources = [{"matryoshka_dimensions": given}, st_config or {}, getattr(hf_config, "__dict__", {})]
        dims = next((s["matryoshka_dimensions"] for s in sources if s.get("matryoshka_dimensions")), None)
        any_prefix = dims is None and any(bool(s.get("is_matryoshka")) for s in sources[1:])
        if dims is not None:
            if not all(isinstance(d, int) and d > 0 for d in dims):
                raise ValueError(f"matryoshka_dimensions must be positive integers, got {list(dims)}")
            dims = tuple(sorted(set(dims), reverse=True))
        return cls(dims, any_prefix, dims is not None if strict is None else strict)

    def check(self, truncate_dim: int | None, full_dim: int | None, owner: object) -> None:
        """Raise ValueError (strict) or warn once when ``truncate_dim`` is not a size this model was trained for."""
        if truncate_dim is None or (full_dim is not None and truncate_dim >= full_dim) or self.any_prefix:
            return
        if self.dimensions is None:
            if id(owner) not in _warned:
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
