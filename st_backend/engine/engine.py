"""The engine loop, one for every task: items -> token batches -> packed forward -> the plan's head -> outputs
in the caller's order (outputs.py). ``run`` takes a call's items and tokenizes them (in chunks ahead of the device
on CUDA); ``run_tokenized`` and ``stream`` take token ids from any caller, such as a server batching the rows of
many requests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch
from tqdm.autonotebook import tqdm

from .chat import ChatTemplate
from .config import EngineConfig
from .outputs import collector
from .pipeline import forward_batches
from .plan import Call, Expansion, Plan, Result
from .prefix import PROBE_TEXTS, rows_prefix, shared_head
from .runner import PackedRunner, RunnerCache
from .timing import Profile, host
from .tokenizer import REMOTE_MIN_TEXTS, TextTokenizer, Tokenized, text_weights, tokenize_items, with_prompt

UNCAPPED = 1 << 30  # sequences per batch when only the token budget limits a batch
# A tokenizer slice of fewer inputs is worth its own worker once it holds this many characters per input.
SLICE_CHARS_PER_TEXT = 256

_RESULTS: ContextVar[list | None] = ContextVar("st_backend_results", default=None)


@contextmanager
def results() -> Iterator[list[Result]]:
    """Collect the Result (outputs and facts) of every engine call made inside the block, in this thread or task:
    ``with results() as calls: model.encode(texts)``. Engines keep no per-call state of their own."""
    sink: list[Result] = []
    token = _RESULTS.set(sink)
    try:
        yield sink
    finally:
        _RESULTS.reset(token)


class _Facts:
    """A call's counts, added to from the tokenizer threads."""

    def __init__(self) -> None:
        self.truncated = self.filled = 0
        self.row_tokens = self.forward_tokens = 0  # tokens in the inputs; tokens that ran through the layers
        self._prefixes: set[bytes] = set()
        self._lock = threading.Lock()

    def ran(self, batch) -> None:
        """Count a batch: its inputs' tokens (shared prefixes' included) against those that ran through the layers
        (each prefix once per call: the runner's PrefixCache keeps a call's prefixes)."""
        self.row_tokens += batch.num_tokens + batch.shared_tokens
        self.forward_tokens += batch.num_tokens
        used = batch.prefix if batch.kv_index is not None else None
        for p in used or ():
            key = p.tobytes()
            if key not in self._prefixes:
                self._prefixes.add(key)
                self.forward_tokens += len(p)

    def add(self, truncated: int = 0, filled: int = 0) -> None:
        with self._lock:
            self.truncated += truncated
            self.filled += filled


class Engine:
    """Runs one Plan: its tokenizer copies, its chat template, one PackedRunner per (device, dtype)."""

    def __init__(self, plan: Plan, config: EngineConfig) -> None:
        self.plan = plan
        self.config = config
        self.tokenizer = TextTokenizer(plan.tokenizer)
        self.template = ChatTemplate(plan.template, self.tokenizer) if plan.template is not None else None
        self.runners = RunnerCache(plan.model, plan.arch, config)
        self._budgets: dict[tuple[str, torch.dtype], int] = {}  # one budget per device: batches never drift

    def token_budget(self, device: torch.device) -> int:
        key = (str(device), self.runners.dtype)
        if key not in self._budgets:
            self._budgets[key] = self.config.token_budget(device, self.runners.model.config, self.runners.dtype)
        return self._budgets[key]

    def runner(self, device: torch.device) -> PackedRunner:
        return self.runners.get(device)

    def describe(self, device: torch.device) -> dict:
        """What this engine runs on ``device``, as bench, info and the server report it."""
        runner = self.runner(device)
        precut = self.tokenizer.precut
        rewrites = runner.rewrite_pass
        return {
            **self.plan.description,
            "model_type": self.plan.arch.model_type,
            "attention_backend": runner.backend.name,
            "shared_prefixes": runner.shares_prefixes,
            "shared_prefix_limits": _prefix_limits(runner, self.plan.arch.causal),
            "compile": self.config.compile,
            "cuda_graphs": runner.graphs.describe() if runner.graphs is not None else "off",
            "rewrites": dict(rewrites.counts) if rewrites is not None else {},
            "kernels": dict(getattr(runner, "kernels", {})),
            "token_budget": self.token_budget(device),
            "tokenizer_processes": self.config.processes(device),
            "chat_template": self.template is not None,
            "long_text_cut": "on" if precut is not None and precut.reason is None else getattr(precut, "reason", None),
        }

    # -- tokenization -------------------------------------------------------------------------------------------

    def tokenize(self, items: list, call: Call | None = None, facts: _Facts | None = None) -> Tokenized:
        """Token ids of items (a call's: see Call for what they are), truncated as ST truncates them."""
        call = call if call is not None else Call(items)
        prompt, max_length = call.prompt, self.plan.max_length(call)
        if self.template is not None:
            tokens, cut = self.template.encode(items, bool(prompt), max_length)
            if facts is not None:
                facts.add(truncated=cut)
            return tokens
        items = with_prompt(items, prompt)
        if self.plan.expansion is not None:
            tokens, filled = expand(self.tokenizer, items, self.plan.expansion)
            if facts is not None:
                facts.add(filled=filled)
            return tokens
        return tokenize_items(self.tokenizer, items, max_length)

    def shares_prefixes(self, arity: int | None, device: torch.device) -> bool:
        """Whether a call's inputs may run a shared prefix once (engine/prefix.py): the plan's head reads last
        tokens only, the config allows it and the backend takes a key prefix."""
        if arity is None or not self.plan.last_token_head:
            return False
        return self.config.shared_prefix and self.runner(device).shares_prefixes

    def shared_prefix(self, prompt: str | None, arity: int | None, device: torch.device) -> np.ndarray | None:
        """The head every input of ``arity`` texts starts with under ``prompt`` (a template's, a prompt's), when it
        may run once per call; groups of a call's rows may share more (prefix.rows_prefix)."""
        return self._head(prompt, arity) if self.shares_prefixes(arity, device) else None

    def _head(self, prompt: str | None, arity: int) -> np.ndarray | None:
        if self.template is not None:
            return self.template.shared_prefix(prompt, arity)
        if not prompt or arity != 1:
            return None
        return shared_head(*self.tokenize(list(PROBE_TEXTS), Call([], prompt)).ids)

    # -- running ------------------------------------------------------------------------------------------------

    def run(self, call: Call, device: torch.device) -> Result:
        """The call's outputs in input order, and its facts."""
        facts = _Facts()
        sharing = self.shares_prefixes(call.prefix_arity, device)
        prefix = self._head(call.prompt, call.prefix_arity) if sharing else None  # one runner check per call

        def tokenize(start: int, stop: int) -> Tokenized:
            tokens = self.tokenize(call.items[start:stop], call, facts)
            tokens.prefix = rows_prefix(tokens.ids, prefix) if sharing else None
            return tokens

        return self._run(len(call.items), tokenize, call, device, facts, text_weights(call.items))

    def run_tokenized(self, tokens: Tokenized, call: Call, device: torch.device) -> Result:
        """As run, on token ids given by the caller (exactly those: no truncation, no prompt)."""
        return self._run(len(tokens.ids), lambda a, b: _slice(tokens, a, b), call, device, _Facts(), None)

    def stream(
        self, items: Iterable[tuple[object, np.ndarray]], call: Call, device: torch.device
    ) -> Iterator[tuple[object, object]]:
        """(key, token ids) items from any caller, in packed batches up to the token budget; yields (key, output)
        for each item as soon as its batch is done: a row, or for ragged calls its (tokens, dim) matrix."""
        budget = self.token_budget(device)
        pending: list = []
        size = 0
        for item in items:
            pending.append(item)
            size += len(item[1])
            if size >= budget:
                yield from self._flush(pending, call, device)
                pending, size = [], 0
        if pending:
            yield from self._flush(pending, call, device)

    def _flush(self, items: list, call: Call, device: torch.device) -> Iterator[tuple[object, object]]:
        ids = [np.asarray(i, dtype=np.int64) for _, i in items]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        outputs = self.run_tokenized(Tokenized(ids, None, lengths), call, device).outputs
        for k, (key, _) in enumerate(items):
            yield key, outputs[k]

    def _run(
        self,
        n: int,
        tokenize: Callable[[int, int], Tokenized],
        call: Call,
        device: torch.device,
        facts: _Facts,
        weights: np.ndarray | None,
    ) -> Result:
        profile = Profile(device) if self.config.profile else None
        collect = collector(call.outputs, n)
        runner = self.runner(device)
        runner.prefixes.clear()  # shared prefixes are computed once per call, with today's weights
        if n >= REMOTE_MIN_TEXTS:  # a short call never starts the worker processes
            self.tokenizer.use_processes(self.config.processes(device), self.config.rayon_threads(device))
        progress = tqdm(total=n, desc=call.desc) if call.show_progress_bar else None
        try:
            for batch, hidden in forward_batches(
                runner,
                n,
                tokenize,
                device,
                max_tokens=self.token_budget(device),
                # The token budget decides a batch, not ST's encode(batch_size=...): ST's default of 32 short
                # sentences fills ~1% of it. max_batch_sequences is the explicit cap.
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
            ):
                collect.add(batch, self.plan.head(hidden, batch, call))
                facts.ran(batch)
        finally:
            if progress is not None:
                progress.close()
        with host(profile, "copy back"):
            # One copy at the end instead of one per batch: the loop never waits for the device.
            outputs = collect.result(call.save_to_cpu)
        result = Result(
            outputs,
            facts.truncated,
            facts.filled,
            profile.summary() if profile is not None else None,
            row_tokens=facts.row_tokens,
            forward_tokens=facts.forward_tokens,
        )
        sink = _RESULTS.get()
        if sink is not None:
            sink.append(result)
        return result


def _slice(tokens: Tokenized, start: int, stop: int) -> Tokenized:
    types = None if tokens.type_ids is None else tokens.type_ids[start:stop]
    return Tokenized(tokens.ids[start:stop], types, tokens.lengths[start:stop])


def expand(tokenizer: TextTokenizer, texts: list[str], expansion: Expansion) -> tuple[Tokenized, int]:
    """As ST's preprocess for ColBERT queries: tokenize to the expansion's cap, then fill each query up to
    ``floor`` tokens with the expansion token (attended). Also returns how many fixed-width queries had no room
    left for one (their content was cut at the width)."""
    tokens = tokenizer(texts, expansion.cap)
    ids, type_ids, filled = [], [] if tokens.type_ids is not None else None, 0
    for i, row in enumerate(tokens.ids):
        missing = max(expansion.floor - len(row), 0)
        filled += expansion.fixed and missing == 0
        ids.append(np.concatenate([row, np.full(missing, expansion.fill, dtype=row.dtype)]))
        if type_ids is not None:
            type_ids.append(np.concatenate([tokens.type_ids[i], np.zeros(missing, dtype=row.dtype)]))
    lengths = np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids))
    return Tokenized(ids, type_ids, lengths), filled


def _prefix_limits(runner, causal: bool) -> str:
    """Where shared prefixes do not apply for this runner, in words (describe())."""
    if not causal:
        return "bidirectional attention: every input runs whole"
    if not runner.shares_prefixes:
        if not runner.uses_backend:
            return "the grouped runner runs the model's own attention, which takes no key prefix"
        return "off: the attention backend's key-prefix masks were not checked right here, or shared_prefix=False"
    if getattr(runner, "graphs", None) is not None:
        return "batches sharing a prefix run eagerly: CUDA graphs hold token inputs only"
    return "none"
