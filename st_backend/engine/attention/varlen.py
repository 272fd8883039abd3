"""torch's own variable-length flash kernel (torch >= 2.10, CUDA, fp16/bf16), sliding windows included."""

from __future__ import annotations

import inspect

import torch

from .base import AttentionBackend, repeat_kv
from .registry import register_backend


def _varlen_attn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@register_backend(priority=20)
class VarlenBackend(AttentionBackend):
    name = "varlen"
    shared_prefix = True
    cuda_graphs = True  # the layout is read on the device: cu_seqlens and max_len only

    def __init__(self) -> None:
        fn = _varlen_attn()
        self._fn = fn
        params = inspect.signature(fn).parameters if fn is not None else {}
        self._has_window = "window_size" in params
        self._has_gqa = "enable_gqa" in params
        self._has_is_causal = "is_causal" in params
        # Without enable_gqa (torch < 2.13) the flash kernel may still take fewer K/V heads: checked once on
        # the device (native_gqa), else K/V are repeated to every query head (extra memory traffic).
        self.native_gqa: bool | None = True if self._has_gqa else None

    def why_not(self, device: torch.device, dtype: torch.dtype) -> str | None:
        if self._fn is None:
            return f"torch {torch.__version__} has no torch.nn.attention.varlen.varlen_attn (needs torch >= 2.10)"
        if device.type != "cuda":
            return f"varlen_attn runs on CUDA only (device is {device.type})"
        if dtype not in (torch.float16, torch.bfloat16):
            return f"varlen_attn takes fp16/bf16 only (model dtype is {dtype})"
        if self.native_gqa is None:
            self.native_gqa = self._gqa_runs_natively(device, dtype)
        return None

    def _gqa_runs_natively(self, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether varlen_attn with fewer K/V heads than query heads equals the same call on repeated K/V."""
        gen = torch.Generator().manual_seed(0)
        q = torch.randn(24, 4, 64, generator=gen).to(device, dtype)
        k, v = (torch.randn(24, 2, 64, generator=gen).to(device, dtype) for _ in range(2))
        cu = torch.tensor([0, 5, 24], dtype=torch.int32, device=device)
        try:
            native = self._fn(q, k, v, cu, cu, 19, 19, scale=0.125)
        except Exception:
            return False
        repeated = self._fn(q, repeat_kv(k, 4), repeat_kv(v, 4), cu, cu, 19, 19, scale=0.125)
        return bool((native.float() - repeated.float()).abs().max() <= 1e-3)

    def describe(self) -> str:
        return "grouped-query K/V native" if self.native_gqa else "grouped-query K/V repeated per head"

    def why_not_layer(self, causal: bool, window: int | None) -> str | None:
        if window is not None and not self._has_window:
            return f"varlen_attn in torch {torch.__version__} has no window_size (sliding-window layers)"
        if causal and not (self._has_window or self._has_is_causal):
            return f"varlen_attn in torch {torch.__version__} has neither window_size nor is_causal"
        return None

    def attend(self, q, k, v, packed, *, scale, causal, window):
        kwargs = {}
        if k.shape[1] != q.shape[1]:
            if self._has_gqa:
                kwargs["enable_gqa"] = True
            elif not self.native_gqa:
                k, v = repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1])
        if self._has_window and (window is not None or causal):
            left = -1 if window is None else window
            kwargs["window_size"] = (left, 0 if causal else left)
        elif causal:
            kwargs["is_causal"] = True
        cu, (cu_k, max_k) = packed.cu_seqlens, packed.keys
        max_len = packed.max_len or int((cu[1:] - cu[:-1]).max())
        max_k = max_k or int((cu_k[1:] - cu_k[:-1]).max())
        return self._fn(q, k, v, cu, cu_k, max_len, max_k, scale=scale, **kwargs)
