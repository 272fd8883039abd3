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


# Prefixes kept per chunk of a call (each one's keys and values are computed once per call): more groups than this
# share only the template's head.
MAX_GROUPS = 64


def rows_prefix(ids: list[np.ndarray], head: np.ndarray | None) -> tuple[np.ndarray, ...] | None:
    """What the rows actually share, in token ids after rendering and truncation: one prefix per group of rows
    that share one (``rank(query, documents)``: the template's head, the query and what comes before the document;
    ``predict`` on pairs of several queries: one per query), plus ``head`` (the probed template / prompt head) for
    rows in no group. Exact by construction: rows are compared after tokenizing each whole row, so no merge across
    the query/document boundary is split; a row no longer than its prefix runs whole (packing.pack).

    Rows are sorted (as bytes: rows sharing a prefix are then adjacent) and cut where two neighbours share clearly
    less than neighbours typically do (under 9/10 of the median): the groups of a call's distinct queries."""
    found: list[np.ndarray] = []
    if len(ids) >= 2:
        order = sorted(range(len(ids)), key=lambda i: ids[i].tobytes())
        shared = [len(common_prefix(ids[a], ids[b])) for a, b in zip(order, order[1:])]
        cut = max(MIN_PREFIX_TOKENS, int(0.9 * float(np.median(shared))))
        start = 0
        for k in range(len(shared) + 1):
            if k == len(shared) or shared[k] < cut:
                size = min(shared[start:k], default=0)
                if k > start and size >= MIN_PREFIX_TOKENS and (head is None or size > len(head)):
                    found.append(ids[order[start]][:size])
                start = k + 1
        found = sorted(found, key=len, reverse=True)[:MAX_GROUPS]
    if head is not None:
        found.append(head)
    return tuple(found) if found else None


def joined_prefix(prefixes: list[tuple[np.ndarray, ...] | None]) -> tuple[np.ndarray, ...] | None:
    """The prefixes of a chunk tokenized in slices (each its rows_prefix): all of theirs, each once."""
    seen: dict[bytes, np.ndarray] = {}
    for group in prefixes:
        for p in group or ():
            seen.setdefault(p.tobytes(), p)
    return tuple(seen.values())[: MAX_GROUPS + 1] if seen else None


class PrefixCache:
    """Per-layer keys and values of the current call's shared prefixes (engine.run clears them at each call),
    computed with the eager model and the packed backend, each once per call."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model  # the runner's packed view (its config names the packed backend)
        self._entries: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def clear(self) -> None:
        """Forget the prefixes: called at the start of each call, since weights may change between calls."""
        self._entries = {}

    def get(self, prefixes: tuple[np.ndarray, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(layers, sum of lengths, kv_heads, head_dim) keys and values of each prefix at positions 0..len-1, the
        prefixes one after another in the given order."""
        dtype = next(self.model.parameters()).dtype
        entries = self._entries  # read once: another thread's call may replace the dict meanwhile
        parts = []
        for ids in prefixes:
            key = (ids.tobytes(), str(device), dtype)
            entry = entries.get(key)
            if entry is None:
                entry = entries[key] = self._compute(ids, device)
                while len(entries) > 2 * MAX_GROUPS:  # bounded, whatever a call holds
                    entries.pop(next(iter(entries)))
            parts.append(entry)
        if len(parts) == 1:
            return parts[0]
        return torch.cat([k for k, _ in parts], dim=1), torch.cat([v for _, v in parts], dim=1)

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
