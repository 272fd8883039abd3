"""The positions heads read on packed hidden states (first, last, last non-pad token of each sequence): each head
reads only the positions it needs, never every token. The sequence-classification heads themselves belong to
the architecture specs (architectures/, ``ArchSpec.classify``)."""

from __future__ import annotations

import torch

from .packing import PackedBatch


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


def classify_last_non_pad(model, hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """Decoder classifiers (Qwen3, Llama *ForSequenceClassification): the score head at the last non-pad token."""
    pad = model.config.get_text_config().pad_token_id
    return model.score(hidden[last_non_pad_tokens(batch, pad)])


def classify_first_token(model, hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """Heads that take the first token of a (batch, seq, hidden) input themselves (RoBERTa-style
    ``*ClassificationHead``: XLM-R, RoBERTa, CamemBERT, ELECTRA): handed each sequence's first token as a
    one-token sequence."""
    return model.classifier(hidden[first_tokens(batch)][:, None])


def non_pad_positions(batch: PackedBatch, pad_token_id: int) -> torch.Tensor:
    """RoBERTa-style position ids on a packed row, as its own create_position_ids_from_input_ids computes them per
    sequence: a pad id counts no position and takes padding_idx itself (a text may hold the literal pad token), the
    others padding_idx + 1 + the non-pad tokens before them in their sequence."""
    real = (batch.input_ids != pad_token_id).long()
    count = real.cumsum(0)
    starts = batch.cu_seqlens[:-1].long()
    before = (count - real)[starts]  # non-pad tokens ahead of each sequence in the row
    return (count - before[batch.seq_ids]) * real + pad_token_id
