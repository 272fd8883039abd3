"""Late interaction (MaxSim) on packed token matrices: no padded [queries x q_tokens x docs x d_tokens] tensor.

Documents are one (total_tokens, dim) matrix with offsets. Scoring walks it in chunks of whole documents,
each sized so the chunk's (query tokens x chunk tokens) similarity block stays under ``max_elements``;
every block is reduced at once to a per-document max (a segment max) and then summed per query, in
float32, as ST's ``maxsim`` does. Memory is the documents, the queries and one block, whatever the corpus.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

import st_backend._compat as _compat

from .engine.outputs import PackedEmbeddings

#: Default bound on one similarity block (query tokens x document tokens): 2**24 elements is 64 MiB in fp32.
MAX_ELEMENTS = 2**24


def _chunks(offsets: torch.Tensor, width: int, max_elements: int) -> Iterator[tuple[int, int]]:
    """Ranges [first, last) of documents whose tokens times ``width`` stay within ``max_elements`` (a single
    document longer than that is a chunk of its own)."""
    limit = max(max_elements // max(width, 1), 1)
    ends = offsets.numpy()
    first, n = 0, len(ends) - 1
    while first < n:
        # The furthest document whose end lies within `limit` tokens of this chunk's start.
        last = int(np.searchsorted(ends, ends[first] + limit, side="right")) - 1
        last = max(last, first + 1)
        yield first, last
        first = last


def maxsim(
    queries: PackedEmbeddings | Sequence[torch.Tensor],
    documents: PackedEmbeddings | Sequence[torch.Tensor],
    *,
    length_normalize: bool = False,
    max_elements: int = MAX_ELEMENTS,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """(num_queries, num_documents) float32 MaxSim scores, equal to ``sentence_transformers.util.maxsim``.

    Runs on ``device`` (default: where the documents are); documents move there one chunk at a time.
    A document with no token scores ST's empty-document sentinel; ``length_normalize`` gives MeanMaxSim.
    """
    q = PackedEmbeddings.from_list(queries)
    d = PackedEmbeddings.from_list(documents)
    device = torch.device(device) if device is not None else d.values.device
    out = torch.zeros(len(q), len(d), dtype=torch.float32, device=device)
    if len(q) == 0 or len(d) == 0:
        return out
    if q.dim != d.dim and q.values.numel() and d.values.numel():
        raise ValueError(f"queries have dimension {q.dim} but documents {d.dim}")
    q_values = q.values.to(device=device, dtype=d.values.dtype)
    q_owner = torch.repeat_interleave(torch.arange(len(q), device=device), q.lengths.to(device))
    d_lengths = d.lengths
    for first, last in _chunks(d.offsets, len(q_values), max_elements):
        start, stop = int(d.offsets[first]), int(d.offsets[last])
        block = d.values[start:stop].to(device, non_blocking=True)
        lengths = d_lengths[first:last]
        if stop > start:
            sim = block @ q_values.T  # (chunk tokens, query tokens)
            best = torch.segment_reduce(sim, "max", lengths=lengths.to(device), axis=0, unsafe=True)
            # Sum each query's token maxima in float32 (ST does the same, so nearby scores stay distinct).
            scores = torch.zeros(last - first, len(q), dtype=torch.float32, device=device)
            scores.index_add_(1, q_owner, best.float())
            out[:, first:last] = scores.T
        empty = lengths == 0  # offsets live on the host: no device sync per chunk
        if bool(empty.any()):
            out[:, first:last] = out[:, first:last].masked_fill(empty.to(device), _compat.EMPTY_DOCUMENT_SCORE)
    if length_normalize:
        out /= q.lengths.clamp(min=1).to(device=device, dtype=out.dtype)[:, None]
    return out


def rank_scores(scores: torch.Tensor, top_k: int | None = None) -> list[tuple[int, float]]:
    """(document index, score) best first; equal scores keep the documents' order."""
    values = scores.float().cpu()
    order = torch.sort(values, descending=True, stable=True).indices
    if top_k is not None:
        order = order[:top_k]
    return [(int(i), float(values[i])) for i in order]
