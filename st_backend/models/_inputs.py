"""What the packed engine takes of a call's inputs: plain texts and text pairs as ST tokenizes them, or, for chat
template models, the conversations ST renders. Anything else is ST's to handle (its own path: its result, or
its own error); items ST refuses outright raise here, naming their index."""

from __future__ import annotations

from .. import _compat
from ..engine.errors import InputError
from ..templates import to_conversations


def _refuse(i: int, item, why: str = "") -> InputError:
    return InputError(f"inputs[{i}] is {type(item).__name__} ({item!r:.60}); this model takes texts{why}")


def _st_modality(i: int, item) -> str:
    """The modality ST would give a non-text item (its reason to take ST's path); raises for what ST refuses."""
    from sentence_transformers.base.modality import infer_modality

    try:
        modality = infer_modality(item)
    except ValueError as exc:
        raise _refuse(i, item, f" ({exc})") from None
    return f"inputs of modality {modality!r} go through ST's processor"


def text_items(inputs: list) -> list | str:
    """Texts and (text, text) pairs as they are, ``{"text": ...}`` dicts unwrapped as ST unwraps them; or the
    reason the call needs ST's own path."""
    items = None
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            continue
        if _compat.is_text_pair(item):
            value = tuple(item)
        elif isinstance(item, dict) and item.keys() == {"text"} and isinstance(item["text"], str):
            value = item["text"]
        else:
            return _st_modality(i, item)
        items = list(inputs) if items is None else items
        items[i] = value
    return inputs if items is None else items


def score_items(inputs: list) -> list | str:
    """A cross-encoder's plain inputs: (query, document) pairs, or single texts (classifiers take both, mixed);
    or the reason the call needs ST's own path."""
    items = None
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            continue
        if not isinstance(item, (tuple, list)):
            return _st_modality(i, item)
        if len(item) != 2:
            raise InputError(f"inputs[{i}] has {len(item)} items; a CrossEncoder scores (query, document) pairs")
        for j, part in enumerate(item):
            if not isinstance(part, str):
                if isinstance(part, (dict, list)):
                    return "pairs with non-text parts go through ST's processor"
                raise InputError(f"inputs[{i}][{j}] is {type(part).__name__}; pairs hold two strings")
        if isinstance(item, list):
            items = list(inputs) if items is None else items
            items[i] = tuple(item)
    return inputs if items is None else items


def engine_items(transformer, template, inputs: list, prompt: str | None, scoring: bool = False) -> list | str:
    """The engine's items for a call: conversations (the prompt inside) when the model renders a chat template,
    else plain texts / pairs; or the reason for ST's own path."""
    if template is not None:
        return to_conversations(transformer, inputs, prompt)
    return score_items(inputs) if scoring else text_items(inputs)
