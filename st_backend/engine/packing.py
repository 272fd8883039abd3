"""A packed batch: every sequence of a batch laid end to end in one unpadded row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PackedBatch:
    """One unpadded sequence of ``total`` tokens holding ``n`` inputs.

    input_ids, position_ids, token_type_ids: (total,) int64; positions restart at 0 for each input.
    cu_seqlens: (n + 1,) int32 offsets of each input; max_len: longest input.
    indices: (n,) the inputs' positions in the caller's list.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    token_type_ids: torch.Tensor | None
    cu_seqlens: torch.Tensor
    max_len: int
    indices: np.ndarray

    @property
    def lengths(self) -> torch.Tensor:
        return self.cu_seqlens[1:] - self.cu_seqlens[:-1]

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device, non_blocking: bool = False) -> PackedBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return PackedBatch(
            input_ids=move(self.input_ids),
            position_ids=move(self.position_ids),
            token_type_ids=move(self.token_type_ids),
            cu_seqlens=move(self.cu_seqlens),
            max_len=self.max_len,
            indices=self.indices,
        )

    def pin_memory(self) -> PackedBatch:
        def pin(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.pin_memory()

        return PackedBatch(
            pin(self.input_ids),
            pin(self.position_ids),
            pin(self.token_type_ids),
            pin(self.cu_seqlens),
            self.max_len,
            self.indices,
        )


def pack(ids: list[np.ndarray], type_ids: list[np.ndarray] | None, indices: np.ndarray) -> PackedBatch:
    """Pack the token arrays of ``indices`` (positions into ``ids``) into one PackedBatch."""
    chosen = [ids[i] for i in indices]
    lengths = np.fromiter((len(a) for a in chosen), dtype=np.int64, count=len(chosen))
    cu = np.zeros(len(chosen) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cu[1:])
    total = int(cu[-1])
    flat_ids = np.concatenate(chosen) if total else np.zeros(0, dtype=np.int64)
    # Position of each token inside its own sequence: a global arange minus each sequence's start.
    positions = np.arange(total, dtype=np.int64) - np.repeat(cu[:-1], lengths)
    token_types = None
    if type_ids is not None:
        token_types = torch.from_numpy(np.concatenate([type_ids[i] for i in indices]).astype(np.int64))
    return PackedBatch(
        input_ids=torch.from_numpy(flat_ids.astype(np.int64, copy=False)),
        position_ids=torch.from_numpy(positions),
        token_type_ids=token_types,
        cu_seqlens=torch.from_numpy(cu.astype(np.int32)),
        max_len=int(lengths.max()) if len(lengths) else 0,
        indices=np.asarray(indices),
    )
