"""What every engine shares: tokenizer copies, an optional chat template, one runner per (device, dtype), and
the loop that feeds packed batches through the forward."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from tqdm.autonotebook import tqdm

from .chat import ChatTemplate
from .config import EngineConfig
from .packing import PackedBatch
from .pipeline import forward_batches
from .profile import Profile
from .runner import PackedRunner, RunnerCache
from .tokenize import REMOTE_MIN_TEXTS, TextTokenizer, Tokenized

UNCAPPED = 1 << 30  # sequences per batch when only the token budget limits a batch
# A tokenizer slice of fewer inputs is worth its own worker once it holds this many characters per input.
SLICE_CHARS_PER_TEXT = 256


class PackedEngine:
    """Runs one plan. ``model``: the transformers module the runner calls (default: the plan's model)."""

    def __init__(self, plan, config: EngineConfig, model: torch.nn.Module | None = None) -> None:
        self.plan = plan
        self.config = config
        self.tokenizer = TextTokenizer(plan.tokenizer)
        template = getattr(plan, "template", None)
        self.template = ChatTemplate(template, self.tokenizer) if template is not None else None
        self.runners = RunnerCache(model if model is not None else plan.hf_model, plan.arch, config)
        self.last_profile: dict[str, float] | None = None
        self._budgets: dict[tuple[str, torch.dtype], int] = {}  # one budget per device: batches never drift

    def token_budget(self, device: torch.device) -> int:
        key = (str(device), self.runners.dtype)
        if key not in self._budgets:
            self._budgets[key] = self.config.token_budget(device, self.runners.model.config, self.runners.dtype)
        return self._budgets[key]

    def runner(self, device: torch.device) -> PackedRunner:
        return self.runners.get(device)

    def shares_prefixes(self, device: torch.device) -> bool:
        """Whether inputs may share a prefix's keys/values here: allowed by the config, a causal model, and a
        backend that takes a key layout apart from the queries'."""
        return self.config.shared_prefix and self.runner(device).shares_prefixes

    def profile(self, device: torch.device) -> Profile | None:
        return Profile(device) if self.config.profile else None

    def finish(self, profile: Profile | None) -> None:
        if profile is not None:
            self.last_profile = profile.summary()

    def forward_all(
        self,
        n: int,
        tokenize: Callable[[int, int], Tokenized],
        device: torch.device,
        show_progress_bar: bool,
        profile: Profile | None,
        desc: str = "Inputs",
        prefix: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> Iterator[tuple[PackedBatch, torch.Tensor]]:
        """(batch on device, its packed last hidden states) for the n inputs ``tokenize(start, stop)`` covers.
        ``prefix``: the head the inputs share, run once for the call (engine/prefix.py), or None. ``weights``:
        each input's tokenization cost (text_weights), so that tokenizer workers get equal shares of the work."""
        if prefix is not None:
            plain_tokenize = tokenize

            def tokenize(start: int, stop: int) -> Tokenized:
                tokens = plain_tokenize(start, stop)
                tokens.prefix = prefix
                return tokens

        runner = self.runner(device)
        runner.prefixes.clear()  # shared prefixes are computed once per call, with today's weights
        if n >= REMOTE_MIN_TEXTS:  # a short call never starts the worker processes
            self.tokenizer.use_processes(self.config.processes(device), self.config.rayon_threads(device))
        progress = tqdm(total=n, desc=desc) if show_progress_bar else None
        try:
            yield from forward_batches(
                runner,
                n,
                tokenize,
                device,
                max_tokens=self.token_budget(device),
                # The token budget decides a batch, not encode(batch_size=...): ST's default of 32 short sentences
                # fills ~1% of it. max_batch_sequences is the explicit cap.
                max_sequences=self.config.max_batch_sequences or UNCAPPED,
                # A slice of fewer inputs than a worker process takes would be tokenized in-process.
                feeding={
                    **self.config.feeding(device),
                    "min_slice": REMOTE_MIN_TEXTS,
                    "weights": weights,
                    "min_slice_weight": REMOTE_MIN_TEXTS * SLICE_CHARS_PER_TEXT,
                },
                profile=profile,
                progress=progress,
            )
        finally:
            if progress is not None:
                progress.close()
