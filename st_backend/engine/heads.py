"""Task heads on packed hidden states: each reads only the positions it needs (never every token).

SEQUENCE_CLASSIFICATION maps a model_type to a function (model, hidden (T, H), batch) -> logits (n, labels)
that does what its *ForSequenceClassification forward does on a padded batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .packing import PackedBatch
from .pooling import Segments, pool


def first_tokens(batch: PackedBatch) -> torch.Tensor:
    return batch.cu_seqlens[:-1].long()


def last_tokens(batch: PackedBatch) -> torch.Tensor:
    return batch.cu_seqlens[1:].long() - 1


def last_non_pad_tokens(batch: PackedBatch, pad_token_id: int | None) -> torch.Tensor:
    """transformers' decoder classifiers read the rightmost token that is not the pad id (even when the
    tokenizer appended that id as EOS); with no pad id, the last token."""
    if pad_token_id is None:
        return last_tokens(batch)
    positions = torch.arange(batch.num_tokens, device=batch.input_ids.device)
    keep = torch.where(batch.input_ids != pad_token_id, positions, -1)
    n = batch.cu_seqlens.shape[0] - 1
    last = torch.full((n,), -1, dtype=positions.dtype, device=positions.device)
    last = last.scatter_reduce_(0, batch.seq_ids, keep, "amax")
    return torch.where(last >= 0, last, first_tokens(batch))


def _bert(model, hidden, batch):
    pooled = model.bert.pooler(hidden[first_tokens(batch)][:, None])
    return model.classifier(model.dropout(pooled))


def _xlm_roberta(model, hidden, batch):
    return model.classifier(hidden[first_tokens(batch)][:, None])


def _modernbert(model, hidden, batch):
    if model.config.classifier_pooling == "cls":
        pooled = hidden[first_tokens(batch)]
    else:  # "mean" over every token of the sequence
        pooled = pool(hidden, Segments.of(batch), ("mean",))
    return model.classifier(model.drop(model.head(pooled)))


def _decoder(model, hidden, batch):
    pad = model.config.get_text_config().pad_token_id
    return model.score(hidden[last_non_pad_tokens(batch, pad)])


SEQUENCE_CLASSIFICATION: dict[str, Callable[[torch.nn.Module, torch.Tensor, PackedBatch], torch.Tensor]] = {
    "bert": _bert,
    "xlm-roberta": _xlm_roberta,
    "modernbert": _modernbert,
    "qwen3": _decoder,
    "llama": _decoder,
}


def causal_lm_last_logits(model, hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """The LM head at each sequence's last token only: (n, vocab)."""
    return model.lm_head(hidden[last_tokens(batch)])
