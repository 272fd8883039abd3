"""Reference backend: any device, any dtype. Pads only inside attention, then SDPA with an exact mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import AttentionBackend, PackedAttention, repeat_kv
from .registry import register_backend


class _Grid:
    """Scatter indices from one packed row to a (n, max_len) grid."""

    def __init__(self, cu: torch.Tensor) -> None:
        cu = cu.long()
        self.lengths = cu[1:] - cu[:-1]
        self.n = self.lengths.shape[0]
        self.max_len = int(self.lengths.max()) if self.n else 0
        seq = torch.repeat_interleave(torch.arange(self.n, device=cu.device), self.lengths)
        pos = torch.arange(int(cu[-1]), device=cu.device) - cu[:-1][seq]
        self.flat_index = seq * self.max_len + pos


class _Layout:
    """Query and key grids of one batch, built once per batch (the keys' may differ: a shared prefix)."""

    def __init__(self, packed: PackedAttention) -> None:
        self.q = _Grid(packed.cu_seqlens)
        self.k = self.q if packed.cu_seqlens_k is None else _Grid(packed.cu_seqlens_k)
        self.n = self.q.n
        device = packed.cu_seqlens.device
        self.key_valid = torch.arange(self.k.max_len, device=device)[None, :] < self.k.lengths[:, None]  # (n, Lk)
        self.shift = self.k.lengths - self.q.lengths  # bottom-right alignment of causal masks

    def mask(self, causal: bool, window: int | None) -> torch.Tensor:
        """(n, 1, Lq, Lk) bool: True where a query may attend a key."""
        m = self.key_valid[:, None, None, :]
        if causal or window is not None:
            device = m.device
            qi = torch.arange(self.q.max_len, device=device)
            ki = torch.arange(self.k.max_len, device=device)
            rel = ki[None, None, :] - qi[None, :, None] - self.shift[:, None, None]  # key - query, (n, Lq, Lk)
            allowed = torch.ones_like(rel, dtype=torch.bool)
            if causal:
                allowed &= rel <= 0
            if window is not None:
                allowed &= rel.abs() <= window
            m = m & allowed[:, None]
        return m


@register_backend(priority=100)
class ReferenceBackend(AttentionBackend):
    name = "reference"
    shared_prefix = True
    pads = True  # each input is padded to its batch's longest inside attention

    def __init__(self) -> None:
        self._cache: tuple[torch.Tensor, _Layout] | None = None

    def why_not(self, device: torch.device, dtype: torch.dtype) -> str | None:
        return None

    def _layout(self, packed: PackedAttention) -> _Layout:
        # Every layer of one forward gets the same cu_seqlens tensor: build the indices once. Threads share this
        # instance: read the cache once, so a layout another thread stored meanwhile is never returned.
        key = (packed.cu_seqlens, packed.cu_seqlens_k)
        cache = self._cache
        if cache is None or any(a is not b for a, b in zip(cache[0], key)):
            cache = self._cache = (key, _Layout(packed))
        return cache[1]

    def attend(self, q, k, v, packed, *, scale, causal, window):
        heads = q.shape[1]
        k, v = repeat_kv(k, heads), repeat_kv(v, heads)
        layout = self._layout(packed)

        def grid(x: torch.Tensor, g: _Grid) -> torch.Tensor:
            out = x.new_zeros(g.n * g.max_len, heads, x.shape[-1])
            out[g.flat_index] = x
            return out.view(g.n, g.max_len, heads, x.shape[-1]).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            grid(q, layout.q), grid(k, layout.k), grid(v, layout.k), attn_mask=layout.mask(causal, window), scale=scale
        )
        out = out.transpose(1, 2).reshape(layout.n * layout.q.max_len, heads, v.shape[-1])
        return out[layout.q.flat_index]
