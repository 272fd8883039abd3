"""Has the model changed since its engine was built? The engine is derived from the live model: its module list,
each module's settings, the backbone and tokenizer objects and their state, PEFT adapters, hooks and patched
forwards. A call compares a cheap fingerprint of the ST side and the module tree's identities (engine/runner.py
ModelState) with those the engine was built from; any difference rebuilds it (or sends the calls to ST's path)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _compat
from ..engine.runner import ModelState

# Settings read at every call (Plan.max_length), so changing them needs no rebuild.
LIVE_KEYS = frozenset({"max_seq_length"})


def _value(value):
    """A snapshot of a setting, compared with ==: dicts and lists are mutable in place, so their repr is kept."""
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def tokenizer_state(tokenizer) -> tuple | None:
    """What of a tokenizer changes its token ids: the object, its vocabulary size (added tokens), truncation and
    padding sides, special-token splitting, added BOS/EOS, and its chat template."""
    if tokenizer is None:
        return None
    return (
        id(tokenizer),
        id(getattr(tokenizer, "backend_tokenizer", None)),
        len(tokenizer),
        getattr(tokenizer, "truncation_side", None),
        getattr(tokenizer, "padding_side", None),
        bool(getattr(tokenizer, "split_special_tokens", False)),
        getattr(tokenizer, "add_bos_token", None),
        getattr(tokenizer, "add_eos_token", None),
        _value(getattr(tokenizer, "chat_template", None)),
    )


def peft_state(model) -> tuple:
    """Adapters added to the backbone (transformers' PEFT integration or a peft model) and whether they are on."""
    return (
        hasattr(model, "peft_config"),
        bool(getattr(model, "_hf_peft_config_loaded", False)),
        _value(getattr(model, "active_adapters", None) if hasattr(model, "peft_config") else None),
    )


def module_state(module: torch.nn.Module) -> tuple:
    """One ST module's identity and settings (its ``config_keys``), and what hangs off it."""
    keys = [k for k in getattr(module, "config_keys", ()) if k not in LIVE_KEYS]
    state: tuple = (id(module), type(module), tuple(_value(getattr(module, k, None)) for k in keys))
    if isinstance(module, _compat.Transformer):
        model = module.model
        state += (
            id(model),
            id(module.processor),
            module.backend,
            tokenizer_state(module.tokenizer),
            peft_state(model),
        )
    elif isinstance(module, _compat.Router):
        state += tuple((route, tuple(map(module_state, subs))) for route, subs in module.sub_modules.items())
    return state


def fingerprint(model) -> tuple:
    """The ST side of a model as its engine sees it: every module of the pipeline, in order, with its settings."""
    return tuple(module_state(m) for m in model._modules.values())


@dataclass
class Built:
    """An engine (or the reason a key runs ST's own path) and the model state it was derived from."""

    engine: object
    fingerprint: tuple
    tree: ModelState

    def current(self, model) -> bool:
        return self.tree.current() and fingerprint(model) == self.fingerprint
