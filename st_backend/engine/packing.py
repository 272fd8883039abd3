"""A packed batch: every sequence of a batch laid end to end in one unpadded row."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

_TENSORS = ("input_ids", "position_ids", "token_type_ids", "seq_ids", "cu_seqlens", "index", "cu_seqlens_k", "kv_index")


@dataclass
class PackedBatch:
    """One unpadded sequence of ``total`` tokens holding ``n`` inputs.

    input_ids, position_ids, token_type_ids, seq_ids: (total,) int64; positions restart at 0 for each input,
    seq_ids say which input (0..n-1) a token belongs to. cu_seqlens: (n + 1,) int32 offsets; index: (n,) the
    inputs' positions in the caller's list. Host-side copies (indices, host_lengths, max_len) never need a
    device sync to read.

    With shared prefixes (``prefix``: their token ids), inputs that start with one carry only their own tokens
    (positions continue after the prefix); attention puts the prefix's keys before theirs: cu_seqlens_k
    (n + 1,) and max_len_k give the keys' layout, kv_index (total keys,) picks each key row from
    [the prefixes' rows, one after another; this batch's rows].
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
    prefix: tuple[np.ndarray, ...] | None = None  # the shared prefixes this batch's inputs use
    cu_seqlens_k: torch.Tensor | None = None
    kv_index: torch.Tensor | None = None
    max_len_k: int = 0
    shared_tokens: int = 0  # prefix tokens taken out of the inputs (they run once, in the prefixes)
    # One buffer per dtype that every tensor above is a view of (set by pin_memory / to), so that a batch moves
    # in one copy per dtype instead of one per tensor (a single query's batch is mostly copy overhead).
    flat: dict | None = None

    @property
    def lengths(self) -> torch.Tensor:
        return self.cu_seqlens[1:] - self.cu_seqlens[:-1]

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    def _grouped(self, fn) -> PackedBatch:
        """fn applied to one flat buffer per dtype (made once), the tensors rebuilt as views of the results."""
        present = [name for name in _TENSORS if getattr(self, name) is not None]
        views, flat = {}, {}
        for dtype in {getattr(self, name).dtype for name in present}:
            names = [name for name in present if getattr(self, name).dtype == dtype]
            buffer = (self.flat or {}).get(dtype)
            if buffer is None:
                buffer = torch.cat([getattr(self, name) for name in names])
            flat[dtype] = fn(buffer)
            views.update(zip(names, torch.split(flat[dtype], [getattr(self, name).numel() for name in names])))
        return replace(self, **views, flat=flat)

    def to(self, device: torch.device, non_blocking: bool = False) -> PackedBatch:
        if self.input_ids.device == torch.device(device):
            return self
        return self._grouped(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> PackedBatch:
        return self._grouped(lambda t: t.pin_memory())


assert set(_TENSORS) <= {f.name for f in fields(PackedBatch)}


def pack(
    ids: list[np.ndarray],
    type_ids: list[np.ndarray] | None,
    indices: np.ndarray,
    offset: int = 0,
    prefix: tuple[np.ndarray, ...] | None = None,
) -> PackedBatch:
    """Pack the token arrays at ``indices`` (positions into ``ids``); ``offset`` is added to the indices the
    batch reports (ids may be one chunk of the caller's list). ``prefix``: shared prefixes (longest first); each
    input that starts with one (and has a token past it) loses the longest it starts with; not with type ids."""
    chosen = [ids[i] for i in indices]
    before = None
    if prefix is not None and type_ids is None:
        # Each input takes the longest of the prefixes it starts with (and has a token past), if any.
        which = _prefixes_of(chosen, prefix)
        if (which >= 0).any():
            used = sorted(set(which[which >= 0].tolist()))
            sizes = np.array([len(prefix[u]) for u in used], dtype=np.int64)
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            slot = {u: k for k, u in enumerate(used)}
            before = np.array([sizes[slot[w]] if w >= 0 else 0 for w in which], dtype=np.int64)
            start_of = np.array([starts[slot[w]] if w >= 0 else 0 for w in which], dtype=np.int64)
            chosen = [a[b:] for a, b in zip(chosen, before)]
            prefix = tuple(prefix[u] for u in used)
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
    keys = {}
    if before is not None:  # prefix tokens in front of each input
        positions += before[seq_ids]
        keys = _prefix_keys(before, start_of, lengths, cu, int(sum(len(p) for p in prefix)))
        keys["prefix"] = prefix
        keys["shared_tokens"] = int(before.sum())
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
        **keys,
    )


def _prefixes_of(rows: list[np.ndarray], prefixes: tuple[np.ndarray, ...]) -> np.ndarray:
    """For each row, the index of the longest prefix (``prefixes`` come longest first) it starts with and goes
    past, or -1: one dictionary look-up per distinct prefix length, not a comparison per prefix."""
    by_length: dict[int, dict[bytes, int]] = {}
    for k, p in enumerate(prefixes):
        by_length.setdefault(len(p), {}).setdefault(p.tobytes(), k)
    lengths = sorted(by_length, reverse=True)
    which = np.full(len(rows), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        for size in lengths:
            if len(row) > size:
                k = by_length[size].get(row[:size].tobytes())
                if k is not None:
                    which[i] = k
                    break
    return which


def _prefix_keys(before: np.ndarray, start_of: np.ndarray, lengths: np.ndarray, cu: np.ndarray, size: int) -> dict:
    """Key layout with ``before[i]`` prefix rows ahead of input i's own, taken from ``start_of[i]`` in the prefix
    block; kv_index points into [the batch's prefixes one after another (size rows); the batch's own rows]."""
    key_lengths = before + lengths
    cu_k = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(key_lengths, out=cu_k[1:])
    seq = np.repeat(np.arange(len(lengths), dtype=np.int64), key_lengths)
    pos = np.arange(int(cu_k[-1]), dtype=np.int64) - cu_k[:-1][seq]
    index = np.where(pos < before[seq], start_of[seq] + pos, size + cu[:-1][seq] + pos - before[seq])
    return {
        "cu_seqlens_k": torch.from_numpy(cu_k.astype(np.int32)),
        "kv_index": torch.from_numpy(index),
        "max_len_k": int(key_lengths.max()),
    }
