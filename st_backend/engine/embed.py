"""texts -> token batches -> packed forward -> pooled outputs -> the caller's order."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import _compat
from .base import PackedEngine
from .packing import PackedBatch
from .pooling import Segments, pool
from .prefix import PROBE_TEXTS, shared_head
from .profile import host
from .tokenize import Tokenized, text_weights, tokenize_items, with_prompt


@dataclass
class EmbedRequest:
    """One ``_inference`` call, its arguments already resolved by ST's ``encode``."""

    texts: list[str]
    prompt: str | None = None
    task: str | None = None
    output_value: str = "sentence_embedding"
    normalize: bool = False
    truncate_dim: int | None = None
    save_to_cpu: bool = False
    show_progress_bar: bool = False


class EmbedEngine(PackedEngine):
    """Runs one EmbedPlan; holds the tokenizer copies and one PackedRunner per (device, dtype)."""

    def tokenize(self, items: list, prompt: str | None, task: str | None) -> Tokenized:
        """items: texts or (text, text) pairs, the prompt put in front of each (of a pair's first) as ST does; with
        a chat template, the conversations ST renders, the prompt already their leading system message."""
        max_length = _compat.text_max_length(self.plan.transformer, task)
        if self.template is not None:
            return self.template.encode(items, bool(prompt), max_length)[0]
        return tokenize_items(self.tokenizer, with_prompt(items, prompt), max_length)

    def shared_prefix(self, req: EmbedRequest, device: torch.device, prompt_length: int | None):
        """The prompt / template head every text starts with, when it may run once per call (engine/prefix.py):
        causal models pooled at the last token only (the head's own hidden states are never read)."""
        if not self.shares_prefixes(device):
            return None
        if req.output_value != "sentence_embedding" or tuple(self.plan.pooling_modes) != ("lasttoken",):
            return None
        if prompt_length is not None:
            return None
        if self.template is not None:
            return self.template.shared_prefix(req.prompt, arity=1)
        if not req.prompt:
            return None
        return shared_head(*self.tokenize(list(PROBE_TEXTS), req.prompt, req.task).ids)

    def embed(self, req: EmbedRequest, device: torch.device) -> torch.Tensor | list[torch.Tensor]:
        """sentence_embedding: (N, D) tensor in input order; token_embeddings: list of (len_i, hidden)."""
        prompt_length = None
        if self.template is None and req.prompt and not self.plan.include_prompt:
            kwargs = {"task": req.task} if req.task is not None else {}
            prompt_length = _compat.prompt_length(self.plan.transformer, req.prompt, **kwargs)
        prof = self.profile(device)
        sentence: torch.Tensor | None = None
        token_rows: list[torch.Tensor | None] = [None] * len(req.texts)
        for batch, hidden in self.forward_all(
            len(req.texts),
            lambda start, stop: self.tokenize(req.texts[start:stop], req.prompt, req.task),
            device,
            req.show_progress_bar,
            prof,
            prefix=self.shared_prefix(req, device, prompt_length),
            weights=text_weights(req.texts),
        ):
            if req.output_value == "token_embeddings":
                for i, row in zip(batch.indices, torch.split(hidden, batch.host_lengths.tolist())):
                    token_rows[i] = row
            else:
                emb = self._sentence_embedding(hidden, batch, prompt_length, req)
                if sentence is None and len(batch.indices) == len(req.texts) and _in_order(batch.indices):
                    sentence = emb  # one batch, in the caller's order (a single input): nothing to place
                    continue
                if sentence is None:
                    sentence = emb.new_empty((len(req.texts), *emb.shape[1:]))
                sentence[batch.index] = emb
        with host(prof, "copy back"):
            # One copy at the end instead of one per batch: the loop never waits for the device.
            result = token_rows if req.output_value == "token_embeddings" else sentence
            result = result.cpu() if req.save_to_cpu and isinstance(result, torch.Tensor) else result
        self.finish(prof)
        return result

    def _sentence_embedding(self, hidden: torch.Tensor, batch: PackedBatch, prompt_length, req: EmbedRequest):
        features = {"sentence_embedding": pool(hidden, Segments.of(batch, prompt_length), self.plan.pooling_modes)}
        for module in self.plan.post:
            features = module(features)
        emb = features["sentence_embedding"]
        if req.truncate_dim is not None:
            emb = _compat.truncate_embeddings(emb, req.truncate_dim)
        if req.normalize:
            emb = F.normalize(emb, p=2, dim=1)
        return emb


def _in_order(indices) -> bool:
    return len(indices) == 1 or bool((indices[1:] > indices[:-1]).all())
