"""xformers memory_efficient_attention over a BlockDiagonalMask (causal variant for decoders)."""

from __future__ import annotations

import importlib

import torch

from .base import AttentionBackend, repeat_kv
from .registry import register_backend

_BUILT_WITH_CUDA: bool | None = None  # xformers' own verdict, read before any lift


@register_backend(priority=30, options=True)
class XformersBackend(AttentionBackend):
    name = "xformers"

    def __init__(self, allow_torch_ops: bool = False) -> None:
        # allow_torch_ops: lift xformers' "built with CUDA" check so that its operators which run on
        # PyTorch's own kernels work when the compiled ones were built for another torch. Off unless asked.
        self.allow_torch_ops = allow_torch_ops
        self._ops = None
        self._bias_cache: tuple | None = None

    def _import(self) -> tuple[object | None, str | None]:
        try:
            ops = importlib.import_module("xformers.ops")
            fmha_common = importlib.import_module("xformers.ops.fmha.common")
        except Exception as exc:  # ImportError, or a broken build raising anything at import
            return None, f"xformers is not importable here ({type(exc).__name__}: {exc}); install st-backend[xformers]"
        global _BUILT_WITH_CUDA
        if _BUILT_WITH_CUDA is None:
            _BUILT_WITH_CUDA = bool(getattr(fmha_common, "_built_with_cuda", True))
        if self.allow_torch_ops and not _BUILT_WITH_CUDA:
            fmha_common._built_with_cuda = True
        return ops, None

    def why_not(self, device: torch.device, dtype: torch.dtype) -> str | None:
        ops, reason = self._import()
        if reason:
            return reason
        if device.type != "cuda":
            return f"xformers memory_efficient_attention needs CUDA (device is {device.type})"
        if not _BUILT_WITH_CUDA and not self.allow_torch_ops:
            return (
                "xformers' compiled CUDA operators do not load with this torch build; its PyTorch-kernel "
                "operators can run if you pass EngineConfig(xformers_torch_ops=True)"
            )
        self._ops = ops
        return None

    def why_not_layer(self, causal: bool, window: int | None) -> str | None:
        if window is not None and not causal:
            return "xformers has no block-diagonal bidirectional sliding-window mask (ModernBERT local layers)"
        return None

    def _bias(self, cu: torch.Tensor, causal: bool, window: int | None):
        key = (cu, causal, window)
        if self._bias_cache is not None and self._bias_cache[0] is cu and self._bias_cache[1:3] == key[1:]:
            return self._bias_cache[3]
        fmha = importlib.import_module("xformers.ops.fmha.attn_bias")
        lengths = (cu[1:] - cu[:-1]).tolist()
        if causal and window is not None:
            bias = fmha.BlockDiagonalCausalLocalAttentionMask.from_seqlens(lengths, window_size=window + 1)
        else:
            bias = fmha.BlockDiagonalMask.from_seqlens(lengths, device=cu.device)
            if causal:
                bias = bias.make_causal()
        self._bias_cache = (cu, causal, window, bias)
        return bias

    def attend(self, q, k, v, packed, *, scale, causal, window):
        heads = q.shape[1]
        k, v = repeat_kv(k, heads), repeat_kv(v, heads)
        bias = self._bias(packed.cu_seqlens, causal, window)
        out = self._ops.memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias, scale=scale)
        return out[0]
