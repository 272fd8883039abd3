"""Attention backends: a registry (registry.py; each backend file registers itself) and a probe that chooses
among them (dispatch.py). Like xformers' dispatch, every backend says in words why it cannot run."""

from __future__ import annotations

import importlib
import pkgutil

from .base import AttentionBackend, PackedAttention
from .registry import BACKENDS, make_backend, priority

for _module in pkgutil.iter_modules(__path__):  # every backend file registers itself on import
    importlib.import_module(f"{__name__}.{_module.name}")

from .dispatch import ProbeResult, _check_key_prefix, _check_numerics, choose, probe, register  # noqa: E402

# Fastest first; "auto" takes the first that runs here and expresses every layer of the model.
PRIORITY = priority()

__all__ = [
    "BACKENDS",
    "PRIORITY",
    "AttentionBackend",
    "PackedAttention",
    "ProbeResult",
    "_check_key_prefix",
    "_check_numerics",
    "choose",
    "make_backend",
    "probe",
    "register",
]
