"""Architecture quirks, one small spec per ``model_type``, found through a registry.

Only architectures whose packed forward is proven equal to plain ST by the tests are registered; any
other model runs ST's own path (with a one-time warning).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transformers import PretrainedConfig


@dataclass(frozen=True)
class ArchSpec:
    """What the packed runner must know about one model_type.

    causal: decoder (causal attention, last-token heads).
    classify: the sequence-classification head, as its *ForSequenceClassification forward computes it.
    pad_positions: RoBERTa-family positions (create_position_ids_from_input_ids): padding_idx + 1 on, counting only
        non-pad tokens, a pad id taking padding_idx (a text may hold the literal pad token); else 0-based.
    token_type_ids: the forward takes token types (BERT pairs need them).
    absolute_positions: positions 0.. from the padded row's start, not the first real token (see the field).
    windows: the sliding windows (tokens each side) its layers use, besides full attention.
    """

    model_type: str
    causal: bool = False
    token_type_ids: bool = False
    pad_positions: bool = False
    # Positions count from the start of the padded row whatever the mask says (BERT, DistilBERT, ELECTRA): with a
    # left-padding tokenizer, ST's batches shift every position by the row's pad count.
    absolute_positions: bool = False
    windows: Callable[[PretrainedConfig], tuple[int, ...]] = lambda config: ()
    family: str = ""  # what `st-backend info` calls it
    windowed: bool = False  # its checkpoints typically have sliding-window layers (for info's probe)
    # The *ForSequenceClassification head on packed states: (model, hidden (T, H), batch) -> logits (n, labels),
    # reading only the positions it needs; None: its classifiers run ST's own path.
    classify: Callable | None = None
    # How a batch runs: a key of engine/runner.py RUNNERS ("packed": one unpadded row through a varlen attention
    # backend; other runners for models whose attention takes no packed sequences).
    runner: str = "packed"
    # A config-specific spec (e.g. a decoder family whose embedding checkpoints configure bidirectional
    # attention): config -> ArchSpec, or a string saying why this config runs ST's own path; None: this spec
    # serves every config of its model_type.
    resolve: Callable[[PretrainedConfig], ArchSpec | str] | None = None

    def layer_kinds(self, config: PretrainedConfig) -> list[tuple[bool, int | None]]:
        """Every (causal, window) pattern a forward of this model runs, for the backend probe."""
        return [(self.causal, None)] + [(self.causal, w) for w in self.windows(config)]

    def typical_layer_kinds(self) -> tuple[tuple[bool, int | None], ...]:
        """The layer patterns of a typical checkpoint (a 64-token window where it has them), for `info`."""
        return ((self.causal, None),) + (((self.causal, 64),) if self.windowed else ())


ARCHITECTURES: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    ARCHITECTURES[spec.model_type] = spec
    return spec


def resolve(config: PretrainedConfig) -> ArchSpec | str:
    """The spec the packed engine runs ``config`` with, or why it runs ST's own path."""
    model_type = getattr(config, "model_type", None)
    spec = ARCHITECTURES.get(model_type)
    if spec is None:
        return f"model_type {model_type!r} has no packed architecture spec yet"
    if spec.resolve is None:
        return spec
    found = spec.resolve(config)
    return found if isinstance(found, ArchSpec) else f"this {model_type} config: {found}"


def spec_for(config: PretrainedConfig) -> ArchSpec | None:
    found = resolve(config)
    return found if isinstance(found, ArchSpec) else None


def _load() -> None:
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_load()  # each file in this package registers its specs
