"""Fused kernels for the eager packed forward: a registry of fusions, each giving one kind of transformers module
a forward that computes the same thing in fewer kernels.

A fusion only ever changes the engine's view of the model (``hf.packed_view``: its own module tree sharing the
user's parameters), never the user's model, so plain ST on the same model, from any thread, keeps its own forward.
Where the time goes without them (BENCHMARKS.md, Qwen3-0.6B's kernel profile): the GEMMs run at the card's rate;
RMSNorm as transformers writes it is seven kernels through fp32 copies of the activations, rotary embeddings
another six per tensor, SiLU-mul two. Each fusion is one kernel there, from a kernel library (``ops.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .ops import Ops, ops_for

logger = logging.getLogger(__name__)

__all__ = ["FUSIONS", "Fusion", "Ops", "fuse", "register"]


@dataclass(frozen=True)
class Fusion:
    name: str
    matches: Callable[[torch.nn.Module], bool]  # whether this fusion knows the module's forward
    forward: Callable[[torch.nn.Module, Ops], Callable]  # (module, ops) -> the forward it runs with instead


FUSIONS: dict[str, Fusion] = {}


def register(fusion: Fusion) -> Fusion:
    FUSIONS[fusion.name] = fusion
    return fusion


def fuse(view: torch.nn.Module, device: torch.device, dtype: torch.dtype, names: tuple[str, ...] | None) -> dict:
    """Give the view's modules the named fusions' forwards (None: every fusion, where a kernel library runs on this
    device and matched its reference on a test tensor). Returns {"ops": library, fusion name: modules} or
    {"off": why}."""
    ops, reason = ops_for(device, dtype, forced=names is not None)
    if ops is None:
        return {"off": reason}
    counts: dict = {"ops": ops.name}
    for name in FUSIONS if names is None else names:
        fusion = FUSIONS[name]
        count = 0
        for module in view.modules():
            if fusion.matches(module):
                # An instance attribute on the view's copy of the module: the user's module keeps its class forward.
                module.forward = fusion.forward(module, ops)
                count += 1
        counts[name] = count
    return counts


from . import decoders  # noqa: E402,F401  (registers the decoder fusions)
