"""What a packed call gives back, in the caller's order: one row per input (Rows), per-input token matrices
(Ragged, as PackedEmbeddings), per-input objects (Items), or a dict of those (Parts, for multi-output heads).
The one place a call's outputs are put back in input order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PackedEmbeddings:
    """Variable-length token embeddings without padding: row i is ``values[offsets[i]:offsets[i + 1]]``.

    values: (total_tokens, dim); offsets: (n + 1,) int64 on the CPU (lengths are read on the host).
    """

    values: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def from_list(cls, rows: Sequence[torch.Tensor | np.ndarray]) -> PackedEmbeddings:
        if isinstance(rows, PackedEmbeddings):
            return rows
        rows = [torch.as_tensor(r) for r in rows]
        for i, r in enumerate(rows):
            if r.ndim != 2:
                raise ValueError(f"embeddings[{i}] has shape {tuple(r.shape)}; expected (num_tokens, dim)")
        if not rows:
            return cls(torch.zeros(0, 0), torch.zeros(1, dtype=torch.int64))
        dims = {r.shape[1] for r in rows}
        if len(dims) > 1:
            raise ValueError(f"embeddings have different dimensions {sorted(dims)}")
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
        offsets = torch.zeros(len(rows) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        return cls(torch.cat(rows), offsets)

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def dim(self) -> int:
        return int(self.values.shape[-1])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.values[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def to_list(self) -> list[torch.Tensor]:
        return list(torch.split(self.values, self.lengths.tolist()))

    def to(self, device) -> PackedEmbeddings:
        return PackedEmbeddings(self.values.to(device), self.offsets)


@dataclass
class Tokens:
    """A batch's per-token outputs: ``values`` (kept tokens, dim) in the batch's order, ``counts`` (n,) tokens
    each of its inputs kept."""

    values: torch.Tensor
    counts: torch.Tensor


class Rows:
    """One row per input: each batch's (n_batch, ...) outputs placed at the batch's input indices."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.out: torch.Tensor | None = None

    def add(self, batch, rows: torch.Tensor) -> None:
        if self.out is None and len(batch.indices) == self.n and _in_order(batch.indices):
            self.out = rows  # one batch, in the caller's order (a single input): nothing to place
            return
        if self.out is None:
            self.out = rows.new_empty((self.n, *rows.shape[1:]))
        self.out[batch.index] = rows

    def result(self, to_cpu: bool):
        return self.out.cpu() if to_cpu and self.out is not None else self.out


class Ragged:
    """Per-input token matrices from each batch's Tokens, as one PackedEmbeddings in input order."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.parts: list[tuple[np.ndarray, torch.Tensor, torch.Tensor]] = []

    def add(self, batch, tokens: Tokens) -> None:
        self.parts.append((batch.indices, tokens.values, tokens.counts))

    def result(self, to_cpu: bool) -> PackedEmbeddings:
        return gather(self.parts, self.n, "cpu" if to_cpu else None)


class Items:
    """Any per-input Python objects (a batch gives a list in its own order)."""

    def __init__(self, n: int) -> None:
        self.out: list = [None] * n

    def add(self, batch, items: list) -> None:
        for i, item in zip(batch.indices, items):
            self.out[i] = item

    def result(self, to_cpu: bool) -> list:
        return self.out


class Parts:
    """A dict of the above, for heads that give several outputs at once."""

    def __init__(self, n: int, kinds: dict[str, str]) -> None:
        self.parts = {name: collector(kind, n) for name, kind in kinds.items()}

    def add(self, batch, outputs: dict) -> None:
        for name, value in outputs.items():
            self.parts[name].add(batch, value)

    def result(self, to_cpu: bool) -> dict:
        return {name: part.result(to_cpu) for name, part in self.parts.items()}


KINDS = {"rows": Rows, "ragged": Ragged, "items": Items}


def collector(kind: str | dict[str, str], n: int):
    """The collector for a call's output kind: "rows", "ragged", "items", or {name: kind} for several outputs."""
    return Parts(n, kind) if isinstance(kind, dict) else KINDS[kind](n)


def _in_order(indices: np.ndarray) -> bool:
    return len(indices) == 1 or bool((indices[1:] > indices[:-1]).all())


def gather(parts, n: int, device=None) -> PackedEmbeddings:
    """Per-batch (indices, values, counts), values in length-sorted order -> one packed matrix in input order."""
    if not parts:
        return PackedEmbeddings(torch.zeros(0, 0), torch.zeros(n + 1, dtype=torch.int64))
    counts = torch.cat([p[2] for p in parts]).cpu()  # one device sync for the whole call
    values = torch.cat([p[1] for p in parts])
    order = np.concatenate([p[0] for p in parts])  # caller index of each output row, in computed order
    starts = torch.zeros(len(counts) + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=starts[1:])
    lengths = torch.empty(n, dtype=torch.int64)
    lengths[torch.from_numpy(order)] = counts
    offsets = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    # Token rows of input i, in caller order: a gather index built on the host from the per-input starts.
    source_start = torch.empty(n, dtype=torch.int64)
    source_start[torch.from_numpy(order)] = starts[:-1]
    take = torch.repeat_interleave(source_start - offsets[:-1], lengths) + torch.arange(int(offsets[-1]))
    values = values.index_select(0, take.to(values.device))
    return PackedEmbeddings(values if device is None else values.to(device), offsets)
