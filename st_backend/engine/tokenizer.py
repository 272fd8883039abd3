"""Strings to token ids straight from the Rust ``tokenizers`` backend: the ids ST's tokenizer call gives,
without building padded tensors, so exact lengths are known before batching."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass

import numpy as np

from .precut import PreCut
from .tokenizer_worker import configured

logger = logging.getLogger(__name__)

# Above this the tokenizer has no real limit (transformers uses 1e30 as "none").
_NO_LIMIT = 2**31


def _limit(max_length: int | None) -> int | None:
    """None for no truncation (transformers uses 1e30 as "no limit")."""
    return None if max_length is None or max_length >= _NO_LIMIT else max_length


# Rust tokenizer copies kept per max_length (the oldest made is dropped first).
MAX_COPIES = 4
# Smaller calls stay in-process: a round trip to a worker costs more than it saves.
REMOTE_MIN_TEXTS = 64
# Fewer texts than this are counted one by one (TextTokenizer.lengths; the server counts as many inline), unless
# they hold more than LONG_TEXT_CHARS characters: then the batch call, which releases the GIL while it works.
FEW_TEXTS = 16
LONG_TEXT_CHARS = 32768
# Worker processes serve the pipeline's feeding threads only (engine/pipeline.py marks them): they keep the GIL
# free for the thread launching GPU kernels while later chunks are tokenized. A call of one chunk is tokenized
# where it is asked for, with every core in the tokenizers library's own thread pool (a cold worker's first
# request alone costs ~0.2 s).
FEEDING = threading.local()


@dataclass
class Tokenized:
    """ids[i] / type_ids[i]: (len_i,) int arrays in input order; lengths: (N,). prefix: ids that the inputs
    share at their start and that may run once for all of them (engine/prefix.py), or None."""

    ids: list[np.ndarray]
    type_ids: list[np.ndarray] | None
    lengths: np.ndarray
    prefix: np.ndarray | None = None


class TextTokenizer:
    """Tokenizes texts as ``tokenizer(texts, truncation="longest_first", max_length=...)`` would.

    Thread-safe: each max_length gets its own private copy of the Rust tokenizer, configured once (the HF
    wrapper re-configures padding/truncation of its own backend on every call, so it is never shared).
    """

    def __init__(self, hf_tokenizer) -> None:
        self.hf = hf_tokenizer
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        self._spec = backend.to_str() if backend is not None else None
        self._copies: dict[int | None, object] = {}
        self._lock = threading.Lock()
        self.token_types = "token_type_ids" in getattr(hf_tokenizer, "model_input_names", ())
        # Single texts whose template gives every token type 0 need no type ids: the model's default is zeros,
        # and skipping them saves a Python list per text (measured: ids-to-arrays holds the GIL).
        self.single_types_zero = self._spec is not None and _single_types_zero(json.loads(self._spec))
        self._processes = None
        self.processes_off: str | None = None  # why worker processes are no longer used, once they failed
        # Texts far longer than max_length are cut before tokenizing, where that provably keeps every token
        # that survives truncation (engine/precut.py); precut.reason says why not otherwise.
        side = getattr(hf_tokenizer, "truncation_side", "right")
        self.precut = PreCut(self._spec, side) if self._spec is not None else None
        # split_special_tokens: special tokens' text in the input is ordinary text (the backend's JSON does not
        # carry the flag, so each copy sets it). Cutting and the worker processes assume special tokens match.
        self.split_special = bool(getattr(hf_tokenizer, "split_special_tokens", False))
        if self.split_special and self.precut is not None:
            self.precut.reason = "split_special_tokens is on"
            self.processes_off = "split_special_tokens is on"

    def use_processes(self, processes: int, rayon_threads: int | None = None) -> None:
        """Tokenize calls of REMOTE_MIN_TEXTS texts or more in ``processes`` worker processes (started once;
        never again after they failed: then everything is tokenized in-process)."""
        if self._spec is None or processes < 1 or self._processes is not None or self.processes_off:
            return
        from .tokenizer_procs import TokenizerProcessError, TokenizerProcesses

        with self._lock:
            if self._processes is None and not self.processes_off:
                try:
                    self._processes = TokenizerProcesses(self._spec, processes, rayon_threads)
                except TokenizerProcessError as exc:
                    self._turn_off(str(exc))

    def close(self) -> None:
        """Stop the worker processes, if any (they also stop when this object is collected)."""
        procs, self._processes = self._processes, None
        if procs is not None:
            procs.close()

    def _turn_off(self, why: str) -> None:
        if self.processes_off is None:  # once: threads that share the failed workers see them fail together
            self.processes_off = why
            logger.warning("st_backend: tokenizer processes off (%s); tokenizing in-process from now on", why)
        self.close()

    def _backend(self, max_length: int | None):
        max_length = _limit(max_length)
        copy = self._copies.get(max_length)
        if copy is None:
            copy = configured(self._spec, max_length, getattr(self.hf, "truncation_side", "right"), self.split_special)
            with self._lock:
                copy = self._copies.setdefault(max_length, copy)
                while len(self._copies) > MAX_COPIES:  # a model whose max_seq_length keeps changing stays bounded
                    self._copies.pop(next(iter(self._copies)))
        return copy

    def __call__(
        self, texts: list[str] | list[tuple[str, str]], max_length: int | None, add_special_tokens: bool = True
    ) -> Tokenized:
        """texts: strings, or (first, second) pairs tokenized together with longest_first truncation."""
        if self._spec is None:
            return self._slow(texts, max_length, add_special_tokens)
        max_length = _limit(max_length)
        pairs = bool(texts) and isinstance(texts[0], tuple)
        types = self.token_types and (pairs or not self.single_types_zero)
        texts = self._cut_long(texts, max_length, add_special_tokens, pairs)
        refused = None
        if self._processes is not None and len(texts) >= REMOTE_MIN_TEXTS and getattr(FEEDING, "active", False):
            remote, refused = self._remote(texts, max_length, add_special_tokens, types)
            if remote is not None:
                return remote
        tokens = self._local(texts, max_length, add_special_tokens, types)  # raises the tokenizer's own error
        if refused is not None:  # a worker refused what the in-process tokenizer takes: do not trust them
            self._turn_off(f"a worker refused input the in-process tokenizer accepts: {refused}")
        return tokens

    def lengths(self, texts: list[str] | list[tuple[str, str]], add_special_tokens: bool = True) -> np.ndarray:
        """Untruncated token counts. A few texts are encoded one by one: a batch call hands them to a thread pool
        and releases the GIL, which on a server's event loop costs more than the tokenizing itself."""
        chars = sum(len(t) if isinstance(t, str) else len(t[0]) + len(t[1]) for t in texts)
        if self._spec is None or len(texts) >= FEW_TEXTS or chars > LONG_TEXT_CHARS:
            return self(texts, None, add_special_tokens).lengths
        backend = self._backend(None)
        if texts and isinstance(texts[0], tuple):
            counts = [len(backend.encode(a, b, add_special_tokens=add_special_tokens)) for a, b in texts]
        else:
            counts = [len(backend.encode(t, add_special_tokens=add_special_tokens)) for t in texts]
        return np.array(counts, dtype=np.int64)

    def _cut_long(self, texts: list, max_length: int | None, add_special_tokens: bool, pairs: bool) -> list:
        """texts with those far past max_length cut where the cut provably changes no surviving token."""
        if max_length is None or self.precut is None or self.precut.reason is not None:
            return texts
        special = self._backend(max_length).num_special_tokens_to_add(pairs) if add_special_tokens else 0
        keep = max_length - special
        return self.precut.pair_prefixes(texts, keep) if pairs else self.precut.prefixes(texts, keep)

    def _local(self, texts, max_length: int | None, add_special_tokens: bool, types: bool) -> Tokenized:
        encodings = self._backend(max_length).encode_batch_fast(texts, add_special_tokens=add_special_tokens)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        type_ids = [np.asarray(e.type_ids, dtype=np.int64) for e in encodings] if types else None
        lengths = np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids))
        return Tokenized(ids, type_ids, lengths)

    def _remote(self, texts, max_length: int | None, special: bool, types: bool) -> tuple[Tokenized | None, str | None]:
        """(the worker processes' answer, None), or (None, why a worker refused) / (None, None) after a failure:
        then the caller tokenizes in-process, which raises the tokenizer's own error for input it refuses."""
        from .tokenizer_procs import TokenizerProcessError

        procs = self._processes
        if procs is None:
            return None, None
        left = getattr(self.hf, "truncation_side", "right") == "left"
        try:
            ids, type_ids, lengths = procs.encode(texts, max_length, special, types, left)
        except TokenizerProcessError as exc:
            if exc.refused:
                return None, str(exc)
            self._turn_off(f"a worker failed: {exc}")
            return None, None
        return Tokenized(ids, type_ids, lengths), None

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of ``text`` (no special tokens, no truncation)."""
        return self._backend(None).encode(text, add_special_tokens=False).offsets

    def _slow(self, texts, max_length: int | None, add_special_tokens: bool) -> Tokenized:
        limit = _limit(max_length)
        kwargs = {"truncation": "longest_first" if limit is not None else False, "max_length": limit}
        if texts and isinstance(texts[0], tuple):
            first, second = zip(*texts)
            out = self.hf(list(first), list(second), add_special_tokens=add_special_tokens, **kwargs)
        else:
            out = self.hf(texts, add_special_tokens=add_special_tokens, **kwargs)
        ids = [np.asarray(x, dtype=np.int64) for x in out["input_ids"]]
        type_ids = None
        if self.token_types and "token_type_ids" in out:
            type_ids = [np.asarray(x, dtype=np.int64) for x in out["token_type_ids"]]
        return Tokenized(ids, type_ids, np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids)))


def _single_types_zero(spec: dict) -> bool:
    """Whether the tokenizer's post-processor gives every token of a single text type id 0."""

    def zero(processor: dict | None) -> bool:
        if processor is None:
            return True
        kind = processor.get("type")
        if kind in ("BertProcessing", "RobertaProcessing", "ByteLevel"):
            return True
        if kind == "TemplateProcessing":
            return all(next(iter(piece.values())).get("type_id", 0) == 0 for piece in processor["single"])
        if kind == "Sequence":
            return all(zero(p) for p in processor.get("processors", []))
        return False

    return zero(spec.get("post_processor"))


# Tokenization cost of a text past this many characters is bounded by the pre-cut (engine/precut.py).
WEIGHT_CAP = 1 << 14


def text_weights(items: list) -> np.ndarray:
    """(N,) characters per input (texts, pairs, conversations), capped at WEIGHT_CAP: how tokenizer work is shared."""

    def size(item) -> int:  # texts, pairs, conversations (lists of message dicts)
        if isinstance(item, str):
            return len(item)
        if isinstance(item, dict):
            return sum(size(v) for v in item.values())
        return sum(size(v) for v in item) if isinstance(item, (list, tuple)) else 0

    return np.fromiter((min(size(item), WEIGHT_CAP) for item in items), dtype=np.int64, count=len(items))


def with_prompt(items: list, prompt: str | None) -> list:
    """The prompt in front of each text, or of a pair's first text (ST's prepend_prompt_to_texts)."""
    if not prompt:
        return items
    return [prompt + item if isinstance(item, str) else (prompt + item[0], *item[1:]) for item in items]


def tokenize_items(tokenizer: TextTokenizer, items: list, max_length: int | None) -> Tokenized:
    """Texts and (first, second) pairs mixed in any order, each tokenized as ST's tokenizer call does; merged back
    in order (texts get type ids of zeros when pairs need them)."""
    pairs = [i for i, item in enumerate(items) if isinstance(item, tuple)]
    if not pairs or len(pairs) == len(items):
        return tokenizer(items, max_length)
    singles = [i for i, item in enumerate(items) if not isinstance(item, tuple)]
    parts = [
        (singles, tokenizer([items[i] for i in singles], max_length)),
        (pairs, tokenizer([items[i] for i in pairs], max_length)),
    ]
    ids: list = [None] * len(items)
    types: list | None = [None] * len(items) if any(t.type_ids is not None for _, t in parts) else None
    for where, tokens in parts:
        for k, i in enumerate(where):
            ids[i] = tokens.ids[k]
            if types is not None:
                types[i] = tokens.type_ids[k] if tokens.type_ids is not None else np.zeros_like(tokens.ids[k])
    return Tokenized(ids, types, np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids)))
