"""Length sort, token-budget batches, and restoring the caller's order: the one place ST's loop lives."""

from __future__ import annotations

import numpy as np


def plan_batches(lengths: np.ndarray, max_tokens: int, max_sequences: int, padded: bool = False) -> list[np.ndarray]:
    """Cut inputs into batches of original indices, longest first.

    lengths: (N,) exact token counts. A batch holds at most ``max_sequences`` inputs and at most
    ``max_tokens`` tokens, except that a single input longer than the budget gets a batch of its own
    (it is never cut: truncation is the tokenizer's job, at the user's max length). ``padded``: the attention
    backend pads each input to the batch's longest (the reference backend on CPU), so a batch's tokens are counted
    as inputs x its longest: one long text then shares its batch with few short ones, as in ST's sorted batches.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    # Longest first, ties in input order: the first batch is the largest, so memory trouble shows early.
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start, tokens = 0, 0
    for pos, idx in enumerate(order):
        n = pos - start
        cost = (n + 1) * int(lengths[order[start]]) if padded else tokens + lengths[idx]
        if n and (n >= max_sequences or cost > max_tokens):
            batches.append(order[start:pos])
            start, tokens = pos, 0
        tokens += int(lengths[idx])
    if start < len(order):
        batches.append(order[start:])
    return batches
