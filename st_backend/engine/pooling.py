"""Pooling on packed hidden states, per segment, with ST's padded semantics as the contract.

Each mode is one function in POOLERS taking the flat hidden states and a Segments description. Sums
accumulate in fp32 whatever the model dtype; outputs come back in the model dtype, as ST's do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Segments:
    """Where each sequence lies in the packed row, and which of its tokens pooling may use.

    cu_seqlens: (n + 1,) offsets; seq_ids / positions: (total,) owning sequence and position inside it;
    valid: (total,) bool, False for prompt tokens excluded by ``include_prompt=False``; None when every token is
    (no mask to build or multiply by: a single query's pooling is mostly kernel launches).
    """

    cu_seqlens: torch.Tensor
    seq_ids: torch.Tensor
    positions: torch.Tensor
    valid: torch.Tensor | None
    counts: torch.Tensor  # (n,) number of valid tokens

    @classmethod
    def of(cls, batch, prompt_length: int | None = None) -> Segments:
        """Segments of a PackedBatch (no device sync: everything is derived on the batch's device)."""
        cu = batch.cu_seqlens.long()
        if not prompt_length:
            return cls(cu, batch.seq_ids, batch.position_ids, None, cu[1:] - cu[:-1])
        counts = (cu[1:] - cu[:-1] - prompt_length).clamp(min=0)
        return cls(cu, batch.seq_ids, batch.position_ids, batch.position_ids >= prompt_length, counts)

    @property
    def n(self) -> int:
        return self.cu_seqlens.shape[0] - 1


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _valid_weights(seg: Segments, weights: torch.Tensor | None, acc: torch.dtype) -> torch.Tensor | None:
    if seg.valid is None:
        return weights
    return seg.valid.to(acc) if weights is None else weights * seg.valid


def _segment_sum(x: torch.Tensor, seg: Segments, weights: torch.Tensor | None = None) -> torch.Tensor:
    acc = _acc_dtype(x)
    w = _valid_weights(seg, weights, acc)
    out = torch.zeros(seg.n, x.shape[-1], device=x.device, dtype=acc)
    return out.index_add_(0, seg.seq_ids, x.to(acc) if w is None else x.to(acc) * w[:, None])


def pool_cls(x: torch.Tensor, seg: Segments) -> torch.Tensor:
    # First pooled token; ST's argmax over an all-zero mask picks position 0 when the prompt fills everything.
    first = seg.cu_seqlens[:-1] + torch.where(seg.counts > 0, seg.cu_seqlens[1:] - seg.cu_seqlens[:-1] - seg.counts, 0)
    return x[first]


def pool_lasttoken(x: torch.Tensor, seg: Segments) -> torch.Tensor:
    out = x[seg.cu_seqlens[1:] - 1]
    # ST multiplies by the mask: a sequence with no valid token pools to zeros.
    return out * (seg.counts > 0).to(out.dtype)[:, None]


def pool_mean(x: torch.Tensor, seg: Segments) -> torch.Tensor:
    total = _segment_sum(x, seg)
    return (total / seg.counts.to(total.dtype).clamp(min=1e-9)[:, None]).to(x.dtype)


def pool_mean_sqrt_len(x: torch.Tensor, seg: Segments) -> torch.Tensor:
    total = _segment_sum(x, seg)
    return (total / seg.counts.to(total.dtype).clamp(min=1e-9).sqrt()[:, None]).to(x.dtype)


def pool_max(x: torch.Tensor, seg: Segments) -> torch.Tensor:
    masked = x if seg.valid is None else x.masked_fill(~seg.valid[:, None], float("-inf"))
    out = torch.full((seg.n, x.shape[-1]), float("-inf"), device=x.device, dtype=x.dtype)
    return out.scatter_reduce_(0, seg.seq_ids[:, None].expand_as(x), masked, reduce="amax")


def pool_weightedmean(x: torch.Tensor, seg: Segments) -> torch.Tensor:
    # Weights count from the sequence's first token (prompt included), as ST's padded path does.
    weights = (seg.positions + 1).to(_acc_dtype(x))
    total = _segment_sum(x, seg, weights)
    norm = torch.zeros(seg.n, device=x.device, dtype=total.dtype).index_add_(
        0, seg.seq_ids, _valid_weights(seg, weights, total.dtype)
    )
    return (total / norm.clamp(min=1e-9)[:, None]).to(x.dtype)


POOLERS: dict[str, Callable[[torch.Tensor, Segments], torch.Tensor]] = {
    "cls": pool_cls,
    "lasttoken": pool_lasttoken,
    "mean": pool_mean,
    "mean_sqrt_len_tokens": pool_mean_sqrt_len,
    "max": pool_max,
    "weightedmean": pool_weightedmean,
}


def pool(x: torch.Tensor, seg: Segments, modes: tuple[str, ...]) -> torch.Tensor:
    """x: (total, hidden) packed states -> (n, hidden * len(modes)), modes concatenated in order."""
    return torch.cat([POOLERS[m](x, seg) for m in modes], dim=-1)
