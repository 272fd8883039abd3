"""Reference backend: any device, any dtype. Pads only inside attention, then SDPA with an exact mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import AttentionBackend, PackedAttention, repeat_kv


class _Layout:
    """Scatter indices from the packed row to a (n, max_len) grid, built once per batch."""

    def __init__(self, packed: PackedAttention) -> None:
        cu = packed.cu_seqlens.long()
        lengths = cu[1:] - cu[:-1]
        n = lengths.shape[0]
        max_len = int(lengths.max()) if n else 0
        total = int(cu[-1])
        seq = torch.repeat_interleave(torch.arange(n, device=cu.device), lengths)
        pos = torch.arange(total, device=cu.device) - cu[:-1][seq]
        self.flat_index = seq * max_len + pos
        self.n, self.max_len = n, max_len
        self.key_valid = torch.arange(max_len, device=cu.device)[None, :] < lengths[:, None]  # (n, L)

    def mask(self, causal: bool, window: int | None) -> torch.Tensor:
        """(n, 1, L, L) bool: True where a query may attend a key."""
        m = self.key_valid[:, None, None, :]
        if causal or window is not None:
            idx = torch.arange(self.max_len, device=m.device)
            rel = idx[None, :] - idx[:, None]  # key - query
            allowed = torch.ones_like(rel, dtype=torch.bool)
            if causal:
                allowed &= rel <= 0
            if window is not None:
                allowed &= rel.abs() <= window
            m = m & allowed[None, None]
        return m


class ReferenceBackend(AttentionBackend):
    name = "reference"

    def __init__(self) -> None:
        self._cache: tuple[torch.Tensor, _Layout] | None = None

    def why_not(self, device: torch.device, dtype: torch.dtype) -> str | None:
        return None

    def _layout(self, packed: PackedAttention) -> _Layout:
        # Every layer of one forward gets the same cu_seqlens tensor: build the indices once.
        if self._cache is None or self._cache[0] is not packed.cu_seqlens:
            self._cache = (packed.cu_seqlens, _Layout(packed))
        return self._cache[1]

    def attend(self, q, k, v, packed, *, scale, causal, window):
        layout = self._layout(packed)
        heads = q.shape[1]
        k, v = repeat_kv(k, heads), repeat_kv(v, heads)

        def grid(x: torch.Tensor) -> torch.Tensor:
            out = x.new_zeros(layout.n * layout.max_len, heads, x.shape[-1])
            out[layout.flat_index] = x
            return out.view(layout.n, layout.max_len, heads, x.shape[-1]).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            grid(q), grid(k), grid(v), attn_mask=layout.mask(causal, window), scale=scale
        )
        out = out.transpose(1, 2).reshape(layout.n * layout.max_len, heads, v.shape[-1])
        return out[layout.flat_index]
