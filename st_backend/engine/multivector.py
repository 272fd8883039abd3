"""texts -> token batches (with ColBERT query expansion) -> packed forward -> token steps (projection, scoring
mask, normalise, token pooling) -> one (tokens, dim) matrix per input, in the caller's order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import _compat
from ..late_interaction import PackedEmbeddings
from .architectures import spec_for
from .base import PackedEngine
from .config import EngineConfig
from .plan import TransformerPlan, why_not_transformer
from .tokenize import Tokenized, text_weights


@dataclass
class MultiVectorPlan(TransformerPlan):
    """Transformer -> steps on token_embeddings: Dense, Normalize, MultiVectorMask, token pooling modules."""

    steps: list[torch.nn.Module]
    expansion: dict | None  # the query expansion this plan applies (attend=True), None when off


def _token_step_reason(i: int, module: torch.nn.Module, pooled: bool) -> str | None:
    if type(module) in (_compat.Dense, _compat.Normalize):
        names = (module.module_input_name, module.module_output_name)
        return None if names == ("token_embeddings",) * 2 else f"module {i} ({type(module).__name__}) maps {names}"
    if type(module) is _compat.MultiVectorMask:
        return "a MultiVectorMask after token pooling" if pooled else None
    if isinstance(module, _compat.BaseTokenPooling):
        return None
    return f"module {i} is {type(module).__name__}"


def build_multivector_plan(modules: list[torch.nn.Module], task: str | None) -> MultiVectorPlan | str:
    """MultiVectorPlan for ``task``'s encode calls, or the reason they run ST's own path."""
    first, *steps = modules
    expansion = first.query_expansion if task == "query" else None
    if expansion is not None and not expansion["attend"]:
        return "query expansion with attend=False hides the expansion tokens from attention (ST pads these queries)"
    reason = why_not_transformer(first, expansion_ok=True)
    if reason:
        return reason
    if expansion is not None and expansion_token_id(first.tokenizer, expansion) is None:
        return "query expansion without an expansion token (no mask or eos token)"
    pooled = False
    for i, module in enumerate(steps, start=2):
        reason = _token_step_reason(i, module, pooled)
        if reason:
            return reason
        pooled = pooled or isinstance(module, _compat.BaseTokenPooling)
    return MultiVectorPlan(first, spec_for(first.model.config), list(steps), expansion)


def expansion_token_id(tokenizer, expansion: dict) -> int | None:
    """The id ST's preprocess writes into expansion positions: the configured token, else [MASK], else EOS."""
    if expansion["token"] is not None:
        return tokenizer.convert_tokens_to_ids(expansion["token"])
    return tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.eos_token_id


@dataclass
class MultiVectorRequest:
    texts: list[str]
    prompt: str | None = None
    task: str | None = None
    normalize: bool = False
    save_to_cpu: bool = False
    show_progress_bar: bool = False


class MultiVectorEngine(PackedEngine):
    """Runs one MultiVectorPlan; per-token outputs come back as PackedEmbeddings in the caller's order."""

    def __init__(self, plan: MultiVectorPlan, config: EngineConfig) -> None:
        super().__init__(plan, config)
        self.filled_expansion = 0  # queries that had no room for an expansion token (content was truncated)

    def tokenize(self, texts: list[str], prompt: str | None, task: str | None) -> Tokenized:
        texts = [prompt + t for t in texts] if prompt else texts
        expansion = self.plan.expansion
        if expansion is None:
            return self.tokenizer(texts, _compat.text_max_length(self.plan.transformer, task))
        return self._expand(texts, expansion)

    def _expand(self, texts: list[str], expansion: dict) -> Tokenized:
        """As ST's preprocess: tokenize to the expansion's width, then fill each query up to ``length`` tokens
        with the expansion token (attended, since attend=True). 'fixed' caps queries at ``length``; 'min' only
        floors them (the task's max length, if any, stays the cap)."""
        floor = expansion["length"]
        if expansion["strategy"] == "fixed":
            cap = floor
        else:
            cap = self.plan.transformer.query_length
            cap = max(cap, floor) if cap is not None else self.plan.tokenizer.model_max_length
        tokens = self.tokenizer(texts, cap)
        fill = expansion_token_id(self.plan.tokenizer, expansion)
        ids, type_ids = [], [] if tokens.type_ids is not None else None
        for i, row in enumerate(tokens.ids):
            missing = max(floor - len(row), 0)
            self.filled_expansion += expansion["strategy"] == "fixed" and missing == 0
            ids.append(np.concatenate([row, np.full(missing, fill, dtype=row.dtype)]))
            if type_ids is not None:
                type_ids.append(np.concatenate([tokens.type_ids[i], np.zeros(missing, dtype=row.dtype)]))
        return Tokenized(ids, type_ids, np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids)))

    def encode(self, req: MultiVectorRequest, device: torch.device) -> PackedEmbeddings:
        prof = self.profile(device)
        parts: list[tuple[np.ndarray, torch.Tensor, torch.Tensor]] = []  # (indices, values, counts) per batch
        for batch, hidden in self.forward_all(
            len(req.texts),
            lambda start, stop: self.tokenize(req.texts[start:stop], req.prompt, req.task),
            device,
            req.show_progress_bar,
            prof,
            weights=text_weights(req.texts),
        ):
            values, counts = self._steps(hidden, batch, req.task)
            if req.normalize:
                values = F.normalize(values, p=2, dim=-1)
            parts.append((batch.indices, values, counts))
        self.finish(prof)
        return _gather(parts, len(req.texts), "cpu" if req.save_to_cpu else device)

    def _steps(self, hidden: torch.Tensor, batch, task: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline after the Transformer on one packed batch -> (kept token values, tokens kept per input)."""
        x, keep, seq_ids, n = hidden, None, batch.seq_ids, len(batch.indices)
        for module in self.plan.steps:
            if type(module) is _compat.MultiVectorMask:
                # ST's own module on the packed row seen as a batch of one (skiplist, allowlist, task rules).
                mask = keep if keep is not None else torch.ones_like(batch.input_ids, dtype=torch.bool)
                keep = module({"input_ids": batch.input_ids[None], "attention_mask": mask[None]}, task=task)
                keep = keep["attention_mask"][0].bool()
            elif isinstance(module, _compat.BaseTokenPooling):
                if module.applies_to(task):
                    x, seq_ids = _pool(module, x, keep, seq_ids, n, task)
                    keep = None
            else:
                x = module({"token_embeddings": x})["token_embeddings"]
        if keep is not None:
            x, seq_ids = x[keep], seq_ids[keep]
        counts = torch.zeros(n, dtype=torch.int64, device=x.device).index_add_(0, seq_ids, torch.ones_like(seq_ids))
        return x, counts


def _pool(module, x, keep, seq_ids, n: int, task):
    """Run a token pooling module's own forward on the batch re-padded (as ST calls it), then unpad."""
    if keep is not None:
        x, seq_ids = x[keep], seq_ids[keep]
    lengths = torch.zeros(n, dtype=torch.int64, device=x.device).index_add_(0, seq_ids, torch.ones_like(seq_ids))
    rows = torch.split(x, lengths.tolist())
    padded = torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True)
    mask = torch.arange(padded.shape[1], device=x.device)[None] < lengths[:, None]
    features = module({"token_embeddings": padded, "attention_mask": mask}, task=task)
    out_mask = features["attention_mask"].bool()
    out = features["token_embeddings"][out_mask]
    owners = torch.arange(n, device=x.device)[:, None].expand_as(out_mask)[out_mask]
    return out, owners


def _gather(parts, n: int, device) -> PackedEmbeddings:
    """Per-batch outputs (in length-sorted order) -> one packed matrix in the caller's order."""
    if not parts:
        return PackedEmbeddings(torch.zeros(0, 0), torch.zeros(1, dtype=torch.int64))
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
    values = values.index_select(0, take.to(values.device)).to(device)
    return PackedEmbeddings(values, offsets)
