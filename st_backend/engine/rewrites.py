"""Graph rewrites for the compiled packed forward: a registry, one entry per pattern, applied as Inductor's
pre-grad pass to the graphs st_backend compiles (never to the user's own ``torch.compile`` calls).

Each rewrite keeps the math and picks faster kernels. Measured on the H100 (``benchmarks/gelu_probe.py``, 50k
tokens of BERT-base's up-projection, fp16): Inductor compiles Linear + exact GELU into cuBLAS's GEMM plus its own
bias + GELU kernel, 666 us; eager PyTorch's cuBLAS addmm (bias in the GEMM's epilogue) and ATen's GELU kernel take
563 us. ``linear_gelu`` hands that pair back to eager PyTorch as one opaque op, so the compiled forward computes
exactly what ST's eager forward computes there.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import fx
from torch._inductor.custom_graph_pass import CustomGraphPass

logger = logging.getLogger(__name__)


@torch.library.custom_op("st_backend::linear_gelu", mutates_args=())
def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, approximate: str) -> torch.Tensor:
    """gelu(linear(x, weight, bias)) with eager PyTorch's kernels. x: (..., in); weight: (out, in) -> (..., out)."""
    return F.gelu(F.linear(x, weight, bias), approximate=approximate)


@linear_gelu.register_fake
def _(x, weight, bias, approximate):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _arg(node: fx.Node, i: int, name: str, default=None):
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


def _is_call(node, targets) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target in targets


_LINEAR = (torch._C._nn.linear, F.linear)
_GELU = (torch._C._nn.gelu, F.gelu)


def fuse_linear_gelu(graph: fx.Graph) -> int:
    """gelu(linear(x, w, b)) -> st_backend::linear_gelu(x, w, b), where the linear's output has no other use."""
    count = 0
    for node in list(graph.nodes):
        if not _is_call(node, _GELU):
            continue
        linear = _arg(node, 0, "input")
        if not _is_call(linear, _LINEAR) or len(linear.users) != 1:
            continue
        args = (_arg(linear, 0, "input"), _arg(linear, 1, "weight"), _arg(linear, 2, "bias"))
        with graph.inserting_before(node):
            fused = graph.call_function(
                torch.ops.st_backend.linear_gelu.default, (*args, _arg(node, 1, "approximate", "none"))
            )
        fused.meta.update(node.meta)
        node.replace_all_uses_with(fused)
        graph.erase_node(node)
        graph.erase_node(linear)
        count += 1
    return count


@dataclass(frozen=True)
class Rewrite:
    name: str
    apply: Callable[[fx.Graph], int]  # rewrites a graph in place, returns the number of sites
    devices: tuple[str, ...]  # device types it was measured to pay on


REWRITES: dict[str, Rewrite] = {}


def register(rewrite: Rewrite) -> Rewrite:
    REWRITES[rewrite.name] = rewrite
    return rewrite


register(Rewrite("linear_gelu", fuse_linear_gelu, devices=("cuda",)))


class RewritePass(CustomGraphPass):
    """Inductor pre-grad pass running the named rewrites; ``counts`` holds the sites each rewrote."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.counts: dict[str, int] = {}

    def __call__(self, graph: fx.Graph) -> None:
        for name in self.names:
            count = REWRITES[name].apply(graph)
            self.counts[name] = self.counts.get(name, 0) + count
            logger.info("st_backend: rewrite %s replaced %d site(s) in a compiled graph", name, count)

    def uuid(self) -> str:
        # Inductor's cache key: the rewrites chosen and this file's code.
        return hashlib.sha256(Path(__file__).read_bytes() + repr(self.names).encode()).hexdigest()


def rewrites_for(device: torch.device) -> tuple[str, ...]:
    """The registered rewrites that pay on this device type."""
    return tuple(name for name, rewrite in REWRITES.items() if device.type in rewrite.devices)


def compile_options(mode: str | None, names: tuple[str, ...]) -> tuple[dict | None, RewritePass | None]:
    """torch.compile's ``options`` for a mode plus the rewrites (torch.compile takes a mode or options, not both)."""
    if not names:
        return None, None
    rewrite_pass = RewritePass(names)
    options = dict(torch._inductor.list_mode_options(mode)) if mode else {}
    options["pre_grad_custom_pass"] = rewrite_pass
    return options, rewrite_pass


def compiled(module: torch.nn.Module, compile: bool | str, rewrites: tuple[str, ...]):
    """(callable, rewrite pass): ``module`` itself, or under ``torch.compile(dynamic=True)`` (token counts change
    every batch: one dynamic-shape graph instead of a recompile per shape) with ``compile``'s mode and the rewrites."""
    if not compile:
        return module, None
    mode = compile if isinstance(compile, str) else None
    options, rewrite_pass = compile_options(mode, rewrites)
    if options is None:
        return torch.compile(module, dynamic=True, mode=mode), rewrite_pass
    return torch.compile(module, dynamic=True, options=options), rewrite_pass
