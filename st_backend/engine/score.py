"""pairs (or texts, or conversations) -> token batches (plain pair encoding, or a chat template with template-aware truncation) ->
packed forward -> head at the positions it needs -> scores in the caller's order."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _compat
from .base import PackedEngine
from .config import EngineConfig
from .heads import SEQUENCE_CLASSIFICATION, causal_lm_last_logits
from .plan import ScorePlan
from .tokenize import Tokenized, text_weights, tokenize_items, with_prompt


@dataclass
class ScoreRequest:
    """items: (query, document) pairs or single texts (classifiers), or the conversations ST renders them as
    when the model has a chat template (the prompt already their leading system message)."""

    items: list
    prompt: str | None = None
    show_progress_bar: bool = False


class ScoreEngine(PackedEngine):
    """Runs one ScorePlan: raw scores (n, num_labels) before ST's activation / softmax."""

    def __init__(self, plan: ScorePlan, config: EngineConfig) -> None:
        super().__init__(plan, config, plan.hf_model.base_model)
        self._cuts: list[int] = []  # list.append is atomic: tokenizer threads report here

    @property
    def truncated(self) -> int:
        """Pairs cut to fit by template-aware truncation so far."""
        return sum(self._cuts)

    def tokenize(self, items: list, prompt: str | None) -> Tokenized:
        max_length = _compat.text_max_length(self.plan.transformer, None)
        if self.template is not None:
            tokens, cut = self.template.encode(items, bool(prompt), max_length)
            self._cuts.append(cut)
            return tokens
        # As ST: a prompt goes in front of the first text; a pair is truncated longest-first.
        return tokenize_items(self.tokenizer, with_prompt(items, prompt), max_length)

    def shared_prefix(self, prompt: str | None, device: torch.device):
        """The template head every pair starts with, when it may run once per call (engine/prefix.py): causal LM
        rerankers (a decoder classifier reads the last non-pad token, which could fall inside the head)."""
        if not (self.plan.causal and self.template is not None and self.shares_prefixes(device)):
            return None
        return self.template.shared_prefix(prompt)

    def score(self, req: ScoreRequest, device: torch.device) -> torch.Tensor:
        model = self.plan.hf_model
        prof = self.profile(device)
        out: torch.Tensor | None = None
        for batch, hidden in self.forward_all(
            len(req.items),
            lambda start, stop: self.tokenize(req.items[start:stop], req.prompt),
            device,
            req.show_progress_bar,
            prof,
            desc="Pairs",
            prefix=self.shared_prefix(req.prompt, device),
            weights=text_weights(req.items),
        ):
            if self.plan.causal:
                features = {"causal_logits": causal_lm_last_logits(model, hidden, batch)[:, None, :]}
                for module in self.plan.post:
                    features = module(features)
                scores = features["scores"]
            else:
                scores = SEQUENCE_CLASSIFICATION[model.config.model_type](model, hidden, batch)
            if out is None:
                out = scores.new_empty((len(req.items), *scores.shape[1:]))
            out[batch.index] = scores
        self.finish(prof)
        return out
