"""A packed batch: every sequence of a batch laid end to end in one unpadded row."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

_TENSORS = ("input_ids", "position_ids", "token_type_ids", "seq_ids", "cu_seqlens", "index")


@dataclass
class PackedBatch:
    """One unpadded sequence of ``total`` tokens holding ``n`` inputs.

    input_ids, position_ids, token_type_ids, seq_ids: (total,) int64; positions restart at 0 for each input,
    seq_ids say which input (0..n-1) a token belongs to. cu_seqlens: (n + 1,) int32 offsets; index: (n,) the
    inputs' positions in the caller's list. Host-side copies (indices, host_lengths, max_len) never need a
    device sync to read.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    token_type_ids: torch.Tensor | None
    seq_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    index: torch.Tensor
    max_len: int
    indices: np.ndarray
    host_lengths: np.ndarray

    @property
    def lengths(self) -> torch.Tensor:
        return self.cu_seqlens[1:] - self.cu_seqlens[:-1]

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    def _map(self, fn) -> PackedBatch:
        return replace(self, **{name: fn(getattr(self, name)) for name in _TENSORS if getattr(self, name) is not None})

    def to(self, device: torch.device, non_blocking: bool = False) -> PackedBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> PackedBatch:
        return self._map(lambda t: t.pin_memory())


assert set(_TENSORS) <= {f.name for f in fields(PackedBatch)}


def pack(ids: list[np.ndarray], type_ids: list[np.ndarray] | None, indices: np.ndarray, offset: int = 0) -> PackedBatch:
    """Pack the token arrays at ``indices`` (positions into ``ids``); ``offset`` is added to the indices the
    batch reports (ids may be one chunk of the caller's list)."""
    chosen = [ids[i] for i in indices]
    lengths = np.fromiter((len(a) for a in chosen), dtype=np.int64, count=len(chosen))
    cu = np.zeros(len(chosen) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cu[1:])
    total = int(cu[-1])
    flat_ids = np.concatenate(chosen) if total else np.zeros(0, dtype=np.int64)
    seq_ids = np.repeat(np.arange(len(chosen), dtype=np.int64), lengths)
    # Position of each token inside its own sequence: a global arange minus its sequence's start.
    positions = np.arange(total, dtype=np.int64) - cu[:-1][seq_ids]
    token_types = None
    if type_ids is not None:
        token_types = torch.from_numpy(np.concatenate([type_ids[i] for i in indices]).astype(np.int64))
    global_indices = np.asarray(indices, dtype=np.int64) + offset
    return PackedBatch(
        input_ids=torch.from_numpy(flat_ids.astype(np.int64, copy=False)),
        position_ids=torch.from_numpy(positions),
        token_type_ids=token_types,
        seq_ids=torch.from_numpy(seq_ids),
        cu_seqlens=torch.from_numpy(cu.astype(np.int32)),
        index=torch.from_numpy(global_indices),
        max_len=int(lengths.max()) if len(lengths) else 0,
        indices=global_indices,
        host_lengths=lengths,
    )
