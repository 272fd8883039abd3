"""What every attention backend implements, and the adapter that plugs one into transformers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PackedAttention:
    """The packed layout one attention call sees: ``cu_seqlens`` (n + 1,) int32 on the device, longest length.

    cu_seqlens_k / max_len_k: the keys' layout when it differs from the queries' (a shared prefix's keys come
    before each sequence's own); causal masks are then aligned to the bottom right, as flash attention does:
    query i of a sequence sees keys up to i + (its key length - its query length).
    """

    cu_seqlens: torch.Tensor
    max_len: int
    cu_seqlens_k: torch.Tensor | None = None
    max_len_k: int = 0

    @property
    def keys(self) -> tuple[torch.Tensor, int]:
        if self.cu_seqlens_k is None:
            return self.cu_seqlens, self.max_len
        return self.cu_seqlens_k, self.max_len_k


class AttentionBackend:
    """A variable-length attention kernel over packed (total, heads, head_dim) tensors.

    Subclasses set ``name`` and implement ``why_not`` (None when it can run here, else the reason in words),
    ``why_not_layer`` (None when it can express a layer's causal / sliding-window pattern) and ``attend``.
    """

    name: str = ""
    # Whether attend() takes keys laid out apart from the queries (PackedAttention.cu_seqlens_k).
    shared_prefix: bool = False
    # Pads each input to the batch's longest inside attention: the scheduler then batches inputs of like lengths.
    pads: bool = False
    # Whether attend() reads the layout from device tensors and max_len alone, so a captured CUDA graph replays it
    # for any layout of the same shape (engine/graphs.py). A backend that reads lengths on the host (or caches
    # a mask built from them) would replay the capture's layout: False.
    cuda_graphs: bool = False

    def why_not(self, device: torch.device, dtype: torch.dtype) -> str | None:
        raise NotImplementedError

    def why_not_layer(self, causal: bool, window: int | None) -> str | None:
        return None

    def describe(self) -> str:
        """How it runs here, for the probe's report (after why_not said it can)."""
        return ""

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        packed: PackedAttention,
        *,
        scale: float,
        causal: bool,
        window: int | None,
    ) -> torch.Tensor:
        """q: (T, H, D); k, v: (T, Hkv, D) with H % Hkv == 0; window: tokens each side (None = full)."""
        raise NotImplementedError

    @property
    def hf_name(self) -> str:
        # The name transformers knows it by. It must not contain "flash": transformers would treat it as a
        # hub kernel to download, and ST would take its own flattening path.
        return f"st_{self.name}"


def repeat_kv(k: torch.Tensor, heads: int) -> torch.Tensor:
    """(T, Hkv, D) -> (T, heads, D) for grouped-query attention."""
    groups = heads // k.shape[1]
    return k if groups == 1 else k.repeat_interleave(groups, dim=1)


def hf_attention_function(backend: AttentionBackend):
    """Wrap a backend in transformers' AttentionInterface signature."""

    def attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        sliding_window: int | None = None,
        is_causal: bool | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        cu = kwargs.get("cu_seq_lens_q")
        if cu is None or query.shape[0] != 1:
            raise RuntimeError(
                f"attention backend {backend.hf_name!r} runs only inside st_backend's packed engine "
                "(it needs cu_seq_lens_q and a batch of one packed row)"
            )
        causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", False))
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        # transformers' sliding_window counts the token itself (flash's window is sliding_window - 1 each side).
        window = None if sliding_window is None else int(sliding_window) - 1
        packed = PackedAttention(cu_seqlens=cu, max_len=int(kwargs.get("max_length_q") or 0))
        capture = kwargs.get("st_capture")
        if capture is None and kwargs.get("st_prefix_keys") is None and cu.shape[0] == 2 and window is None:
            # One sequence (a single query, say): nothing to pack or mask but causality, so torch's own SDPA
            # (what ST runs) on the (1, heads, tokens, dim) layout as given.
            out = F.scaled_dot_product_attention(
                query, key, value, is_causal=causal, scale=scale, enable_gqa=key.shape[1] != query.shape[1]
            )
            return out.transpose(1, 2), None
        key, value = key[0].transpose(0, 1), value[0].transpose(0, 1)
        if capture is not None:  # computing a shared prefix's keys/values (engine/prefix.py)
            capture[module.layer_idx] = (key, value)
        prefix_keys = kwargs.get("st_prefix_keys")
        if prefix_keys is not None:  # a shared prefix's keys/values go in front of each input's own
            index = kwargs["st_kv_index"]
            key = torch.cat([prefix_keys[module.layer_idx], key])[index]
            value = torch.cat([kwargs["st_prefix_values"][module.layer_idx], value])[index]
            packed = PackedAttention(cu, packed.max_len, kwargs["cu_seq_lens_k"], int(kwargs["max_length_k"]))
        out = backend.attend(
            query[0].transpose(0, 1),
            key,
            value,
            packed,
            scale=scale,
            causal=causal,
            window=window,
        )
        return out.unsqueeze(0), None

    return attention
