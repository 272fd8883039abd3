"""pairs -> token batches (plain pair encoding, or a chat template with template-aware truncation) ->
packed forward -> head at the positions it needs -> scores in the caller's order."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.autonotebook import tqdm

from .. import _compat
from ..templates import ChatTemplate
from .config import EngineConfig
from .heads import SEQUENCE_CLASSIFICATION, causal_lm_last_logits
from .pipeline import packed_batches
from .plan import ScorePlan
from .profile import Profile, device_work, host
from .runner import PackedRunner, RunnerCache
from .tokenize import TextTokenizer, Tokenized


@dataclass
class ScoreRequest:
    pairs: list[tuple[str, str]]
    prompt: str | None = None
    max_sequences: int = 32
    show_progress_bar: bool = False


class ScoreEngine:
    """Runs one ScorePlan: raw scores (n, num_labels) before ST's activation / softmax."""

    def __init__(self, plan: ScorePlan, config: EngineConfig) -> None:
        self.plan = plan
        self.config = config
        self.tokenizer = TextTokenizer(plan.tokenizer)
        self.template = ChatTemplate(plan.tokenizer, plan.template, self.tokenizer) if plan.template else None
        self.runners = RunnerCache(plan.hf_model.base_model, plan.arch, config)
        self.last_profile: dict[str, float] | None = None
        self._cuts: list[int] = []  # list.append is atomic: tokenizer threads report here

    @property
    def truncated(self) -> int:
        """Pairs cut to fit by template-aware truncation so far."""
        return sum(self._cuts)

    def runner(self, device: torch.device) -> PackedRunner:
        return self.runners.get(device)

    def tokenize(self, pairs: list[tuple[str, str]], prompt: str | None) -> Tokenized:
        max_length = _compat.text_max_length(self.plan.transformer, None)
        if self.template is not None:
            tokens, cut = self.template.encode([tuple(p) for p in pairs], prompt, max_length)
            self._cuts.append(cut)
            return tokens
        # As ST: a prompt goes in front of the first text; the pair is truncated longest-first.
        texts = [(prompt + q, d) for q, d in pairs] if prompt else [tuple(p) for p in pairs]
        return self.tokenizer(texts, max_length)

    def score(self, req: ScoreRequest, device: torch.device) -> torch.Tensor:
        runner = self.runner(device)
        model = self.plan.hf_model
        prof = Profile(device) if self.config.profile else None
        batches = packed_batches(
            len(req.pairs),
            lambda start, stop: self.tokenize(req.pairs[start:stop], req.prompt),
            max_tokens=self.config.token_budget(device),
            max_sequences=self.config.max_batch_sequences or req.max_sequences,
            profile=prof,
            **self.config.feeding(device),
        )
        out: torch.Tensor | None = None
        with tqdm(total=len(req.pairs), desc="Pairs", disable=not req.show_progress_bar) as progress:
            for batch in batches:
                with host(prof, "copy + forward + head launch (consumer)"), device_work(prof):
                    batch = batch.to(device, non_blocking=True)
                    hidden = runner.forward(batch)
                    if self.plan.causal:
                        features = {"causal_logits": causal_lm_last_logits(model, hidden, batch)[:, None, :]}
                        for module in self.plan.post:
                            features = module(features)
                        scores = features["scores"]
                    else:
                        scores = SEQUENCE_CLASSIFICATION[model.config.model_type](model, hidden, batch)
                    if out is None:
                        out = scores.new_empty((len(req.pairs), *scores.shape[1:]))
                    out[batch.index] = scores
                progress.update(len(batch.indices))
        if prof is not None:
            self.last_profile = prof.summary()
        return out
