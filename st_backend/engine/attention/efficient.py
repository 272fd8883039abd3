"""torch's own CUTLASS memory-efficient kernel (aten._efficient_attention_forward) over cu_seqlens, for
bidirectional layers.

On the H100 (``benchmarks/attention_probe.py``, 50k packed tokens of bench-like lengths, fp16) it beat flash
(varlen) on encoder shapes: BERT-base 245 vs 280 us, all-MiniLM-L6-v2 227 vs 237 us. On Qwen3-0.6B's causal
shape it was 21% slower (590 vs 487 us), so causal layers are left to varlen.
"""

from __future__ import annotations

import torch

from .base import AttentionBackend, repeat_kv
from .registry import register_backend


@register_backend(priority=10)
class EfficientBackend(AttentionBackend):
    name = "efficient"
    cuda_graphs = True  # the layout is read on the device: cu_seqlens and max_len only

    def why_not(self, device: torch.device, dtype: torch.dtype) -> str | None:
        if not hasattr(torch.ops.aten, "_efficient_attention_forward"):
            return f"torch {torch.__version__} has no aten._efficient_attention_forward"
        if device.type != "cuda":
            return f"the CUTLASS memory-efficient kernel runs on CUDA only (device is {device.type})"
        if dtype not in (torch.float16, torch.bfloat16, torch.float32):
            return f"the CUTLASS memory-efficient kernel takes fp16/bf16/fp32 (model dtype is {dtype})"
        return None

    def why_not_layer(self, causal: bool, window: int | None) -> str | None:
        if causal:
            return "causal layers run faster on flash (varlen): 590 vs 487 us on Qwen3-0.6B shapes (BENCHMARKS.md)"
        if window is not None:
            return "no bidirectional sliding-window mask (ModernBERT local layers)"
        return None

    def attend(self, q, k, v, packed, *, scale, causal, window):
        heads = q.shape[1]
        k, v = repeat_kv(k, heads), repeat_kv(v, heads)
        cu, max_len = packed.cu_seqlens, packed.max_len or int((packed.cu_seqlens[1:] - packed.cu_seqlens[:-1]).max())
        out = torch.ops.aten._efficient_attention_forward(
            q[None], k[None], v[None], None, cu, cu, max_len, max_len, 0.0, 0, False, scale=scale
        )[0]
        return out[0]
