"""Strings to token ids straight from the Rust ``tokenizers`` backend: the ids ST's tokenizer call gives,
without building padded tensors, so exact lengths are known before batching."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Above this the tokenizer has no real limit (transformers uses 1e30 as "none").
_NO_LIMIT = 2**31


@dataclass
class Tokenized:
    """ids[i] / type_ids[i]: (len_i,) int arrays in input order; lengths: (N,)."""

    ids: list[np.ndarray]
    type_ids: list[np.ndarray] | None
    lengths: np.ndarray


class TextTokenizer:
    """Tokenizes plain texts as ``tokenizer(texts, truncation="longest_first", max_length=...)`` would."""

    def __init__(self, hf_tokenizer) -> None:
        from tokenizers import Tokenizer

        self.hf = hf_tokenizer
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        # A private copy: the HF wrapper re-configures padding/truncation of its own backend on every call.
        self._fast = Tokenizer.from_str(backend.to_str()) if backend is not None else None
        if self._fast is not None:
            self._fast.no_padding()
            self._fast.no_truncation()
        self._max_length: int | None = None
        self.token_types = "token_type_ids" in getattr(hf_tokenizer, "model_input_names", ())

    def count(self, texts: list[str]) -> list[int]:
        """Token counts of texts tokenized without special tokens and without truncation."""
        self._set_max_length(None)
        return [len(e.ids) for e in self._fast.encode_batch_fast(texts, add_special_tokens=False)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of ``text`` (no special tokens, no truncation)."""
        self._set_max_length(None)
        return self._fast.encode(text, add_special_tokens=False).offsets

    def _set_max_length(self, max_length: int | None) -> None:
        if max_length is not None and max_length >= _NO_LIMIT:
            max_length = None
        if max_length == self._max_length:
            return
        if max_length is None:
            self._fast.no_truncation()
        else:
            side = getattr(self.hf, "truncation_side", "right")
            self._fast.enable_truncation(max_length, strategy="longest_first", direction=side)
        self._max_length = max_length

    def __call__(
        self, texts: list[str] | list[tuple[str, str]], max_length: int | None, add_special_tokens: bool = True
    ) -> Tokenized:
        """texts: strings, or (first, second) pairs tokenized together with longest_first truncation."""
        if self._fast is None:
            return self._slow(texts, max_length, add_special_tokens)
        self._set_max_length(max_length)
        encodings = self._fast.encode_batch_fast(texts, add_special_tokens=add_special_tokens)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        type_ids = [np.asarray(e.type_ids, dtype=np.int64) for e in encodings] if self.token_types else None
        lengths = np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids))
        return Tokenized(ids, type_ids, lengths)

    def _slow(self, texts, max_length: int | None, add_special_tokens: bool) -> Tokenized:
        limit = max_length is not None and max_length < _NO_LIMIT
        kwargs = {"truncation": "longest_first" if limit else False, "max_length": max_length if limit else None}
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
