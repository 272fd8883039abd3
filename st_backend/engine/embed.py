"""texts -> token batches -> packed forward -> pooled outputs -> the caller's order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.autonotebook import tqdm

from .. import _compat
from ..templates import ChatTemplate
from .config import EngineConfig
from .packing import pack
from .plan import EmbedPlan
from .pooling import Segments, pool
from .runner import PackedRunner, RunnerCache
from .scheduler import plan_batches
from .tokenize import TextTokenizer


@dataclass
class EmbedRequest:
    """One ``_inference`` call, its arguments already resolved by ST's ``encode``."""

    texts: list[str]
    prompt: str | None = None
    task: str | None = None
    output_value: str = "sentence_embedding"
    max_sequences: int = 32
    normalize: bool = False
    truncate_dim: int | None = None
    save_to_cpu: bool = False
    show_progress_bar: bool = False


class EmbedEngine:
    """Runs one EmbedPlan; holds the tokenizer copy and one PackedRunner per (device, dtype)."""

    def __init__(self, plan: EmbedPlan, config: EngineConfig) -> None:
        self.plan = plan
        self.config = config
        self.tokenizer = TextTokenizer(plan.tokenizer)
        self.template = ChatTemplate(plan.tokenizer, plan.template, self.tokenizer) if plan.template else None
        self.runners = RunnerCache(plan.hf_model, plan.arch, config)

    def runner(self, device: torch.device) -> PackedRunner:
        return self.runners.get(device)

    def embed(self, req: EmbedRequest, device: torch.device) -> torch.Tensor | list[torch.Tensor]:
        """sentence_embedding: (N, D) tensor in input order; token_embeddings: list of (len_i, hidden)."""
        plan = self.plan
        max_length = _compat.text_max_length(plan.transformer, req.task)
        prompt_length = None
        if self.template is not None:
            # As ST: each text is a "user" message, the prompt a "system" one (not excluded from pooling).
            tokens, _ = self.template.encode([(t,) for t in req.texts], req.prompt, max_length)
        else:
            texts = [req.prompt + t for t in req.texts] if req.prompt else req.texts
            tokens = self.tokenizer(texts, max_length)
        if self.template is None and req.prompt and not plan.include_prompt:
            kwargs = {"task": req.task} if req.task is not None else {}
            prompt_length = _compat.prompt_length(plan.transformer, req.prompt, **kwargs)

        runner = self.runner(device)
        max_sequences = self.config.max_batch_sequences or req.max_sequences
        batches = plan_batches(tokens.lengths, self.config.max_batch_tokens, max_sequences)
        sentence: torch.Tensor | None = None
        token_rows: list[torch.Tensor | None] = [None] * len(req.texts)
        for indices in tqdm(batches, desc="Batches", disable=not req.show_progress_bar):
            batch = pack(tokens.ids, tokens.type_ids, indices).to(device)
            hidden = runner.forward(batch)
            if req.output_value == "token_embeddings":
                for i, row in zip(indices, torch.split(hidden, batch.lengths.tolist())):
                    token_rows[i] = row
                continue
            emb = self._sentence_embedding(hidden, batch.cu_seqlens, prompt_length)
            if req.truncate_dim is not None:
                emb = _compat.truncate_embeddings(emb, req.truncate_dim)
            if req.normalize:
                emb = F.normalize(emb, p=2, dim=1)
            if req.save_to_cpu:
                emb = emb.cpu()
            if sentence is None:
                sentence = emb.new_empty((len(req.texts), *emb.shape[1:]))
            sentence[torch.from_numpy(np.asarray(indices)).to(sentence.device)] = emb
        if req.output_value == "token_embeddings":
            return token_rows
        return sentence

    def _sentence_embedding(self, hidden: torch.Tensor, cu_seqlens: torch.Tensor, prompt_length: int | None):
        pooled = pool(hidden, Segments.build(cu_seqlens, prompt_length), self.plan.pooling_modes)
        features = {"sentence_embedding": pooled}
        for module in self.plan.post:
            features = module(features)
        return features["sentence_embedding"]
