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
import threading
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
    # (module, ops, dtype) -> None, or why this module must keep its own forward: the kernels run at the module's
    # real sizes (Triton compiles per size) against the reference, once per size, before any batch or graph capture.
    verify: Callable[[torch.nn.Module, Ops, torch.dtype], str | None]


FUSIONS: dict[str, Fusion] = {}


def register(fusion: Fusion) -> Fusion:
    FUSIONS[fusion.name] = fusion
    return fusion


_LOCK = threading.Lock()  # first compiles of Triton kernels, one at a time (runners of several devices or threads)


def fuse(view: torch.nn.Module, device: torch.device, dtype: torch.dtype, names: tuple[str, ...] | None) -> dict:
    """Give the view's modules the named fusions' forwards (None: every fusion, where a kernel library runs on this
    device and matched its reference on test tensors). Returns {"ops": library, fusion name: modules fused,
    "kept": {fusion: why some kept their own forward}} or {"off": why}."""
    chosen = [FUSIONS[name] for name in (FUSIONS if names is None else names)]
    found = [(fusion, module) for module in view.modules() for fusion in chosen if fusion.matches(module)]
    if not found:
        return {"off": "no module of a kind the fusions know (Llama-style decoders)"}
    ops, reason = ops_for(device, dtype, forced=names is not None)
    if ops is None:
        return {"off": reason}
    counts: dict = {"ops": ops.name, **{fusion.name: 0 for fusion in chosen}}
    kept: dict[str, str] = {}
    verdicts: dict[tuple, str | None] = {}  # one check per fusion and module size (a model's layers share them)
    with _LOCK:
        for fusion, module in found:
            key = (fusion.name, type(module), tuple((n, p.shape, p.dtype) for n, p in module.named_parameters()))
            if key not in verdicts:
                verdicts[key] = _verified(fusion, module, ops, dtype)
            why = verdicts[key]
            if why:
                kept[fusion.name] = why
                continue
            # An instance attribute on the view's copy of the module: the user's module keeps its class forward.
            module.forward = fusion.forward(module, ops)
            counts[fusion.name] += 1
    if kept:
        counts["kept"] = kept
        logger.info("st_backend: fused kernels left off for some modules: %s", kept)
    return counts


def _verified(fusion: Fusion, module: torch.nn.Module, ops: Ops, dtype: torch.dtype) -> str | None:
    try:
        return fusion.verify(module, ops, dtype)
    except Exception as exc:  # a kernel that fails to compile or run at these sizes: the module's own forward
        return f"{ops.name} failed at this module's sizes ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"


from . import decoders  # noqa: E402,F401  (registers the decoder fusions)
