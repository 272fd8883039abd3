"""A token prefix that every input of a call shares (an LLM reranker's template head and instruction): its
keys and values are computed once per layer and put in front of each input's own inside attention, so its
tokens run through the model once per prefix instead of once per input (vLLM's prefix caching, for one
prefix). Causal models only: there a token's keys and values do not depend on the tokens after it."""

from __future__ import annotations

import numpy as np
import torch

# Shorter shared prefixes are not worth a second forward and a gather per layer.
MIN_PREFIX_TOKENS = 4
# Two texts that differ from their first character: what a template or prompt puts before both is the head.
PROBE_TEXTS = ("first probe query", "second query text")


def common_prefix(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The longest run of ids both arrays start with."""
    size = min(len(first), len(second))
    differs = np.flatnonzero(first[:size] != second[:size])
    return first[: differs[0] if len(differs) else size]


def shared_head(first: np.ndarray, second: np.ndarray) -> np.ndarray | None:
    """The head two probe inputs (PROBE_TEXTS, rendered and tokenized alike) share, less its last token (it may
    merge with an input's first characters); None when shorter than MIN_PREFIX_TOKENS."""
    ids = common_prefix(first, second)[:-1]
    return ids if len(ids) >= MIN_PREFIX_TOKENS else None


def rows_prefix(ids: list[np.ndarray], head: np.ndarray | None) -> np.ndarray | None:
    """What the rows actually share, in token ids after rendering and truncation: their longest common prefix
    (``rank(query, documents)``: the template's head, the query and what comes before the document), when it is
    at least MIN_PREFIX_TOKENS long and longer than ``head`` (the probed template / prompt head); else ``head``.
    Exact by construction: rows are compared after tokenizing each whole row, so no merge across the boundary is
    split. A row no longer than the prefix keeps running whole (packing.pack)."""
    if not ids:
        return head
    shared = ids[0]  # one row alone: itself (nothing longer shares it, so it runs whole unless slices join)
    for row in ids[1:]:
        shared = common_prefix(shared, row)
        if len(shared) < MIN_PREFIX_TOKENS:
            return head
    if head is not None and len(shared) <= len(head):
        return head
    return shared


def joined_prefix(prefixes: list[np.ndarray | None]) -> np.ndarray | None:
    """The prefix shared by slices tokenized apart (each its rows_prefix): the common prefix of theirs."""
    if any(p is None for p in prefixes):
        return None
    if all(np.array_equal(p, prefixes[0]) for p in prefixes[1:]):
        return prefixes[0]
    shared = prefixes[0]
    for other in prefixes[1:]:
        shared = common_prefix(shared, other)
    return shared if len(shared) >= MIN_PREFIX_TOKENS else None


class PrefixCache:
    """Per-layer keys and values of the current call's shared prefix (one per call: engine.forward_all), computed
    with the eager model and the packed backend."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model  # the runner's packed view (its config names the packed backend)
        self._entry: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None

    def clear(self) -> None:
        """Forget the prefix: called at the start of each call, since weights may change between calls."""
        self._entry = None

    def get(self, ids: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(layers, len(ids), kv_heads, head_dim) keys and values of ``ids`` at positions 0..len-1."""
        key = (ids.tobytes(), str(device), next(self.model.parameters()).dtype)
        entry = self._entry  # read once: another thread's call may replace it meanwhile
        if entry is None or entry[0] != key:
            entry = self._entry = (key, self._compute(ids, device))
        return entry[1]

    def _compute(self, ids: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        size = len(ids)
        cu = torch.tensor([0, size], dtype=torch.int32, device=device)
        captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.no_grad():
            self.model(
                input_ids=torch.as_tensor(ids, dtype=torch.long, device=device)[None],
                position_ids=torch.arange(size, device=device)[None],  # decoders only: positions from 0
                cu_seq_lens_q=cu,
                cu_seq_lens_k=cu,
                max_length_q=size,
                max_length_k=size,
                use_cache=False,
                st_capture=captured,
            )
        layers = sorted(captured)
        if layers != list(range(len(layers))):
            raise RuntimeError(f"shared prefix: attention layers reported indices {layers}, expected 0..n-1")
        return torch.stack([captured[i][0] for i in layers]), torch.stack([captured[i][1] for i in layers])
