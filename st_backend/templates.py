"""Score and prompt templates: loading, validation, and template-aware truncation.

A template is a transformers chat template. A pair becomes two messages with roles ``query`` and
``document`` (ST 6.2's convention), a single text one ``user`` message, and an instruction (ST's prompt) a
leading ``system`` message. When a render is too long, content is cut (the last message's first, then the
earlier ones, only if that cannot make room), never the template: the result is exactly the render of the
cut texts, so it keeps the template's prefix and ends with its suffix, and no token merges across a cut.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .engine.prefix import PROBE_TEXTS, shared_head
from .engine.tokenize import TextTokenizer, Tokenized

PAIR_ROLES = ("query", "document")
_PROBES = ((PROBE_TEXTS[0], "first probe document"), (PROBE_TEXTS[1], "second document text"))


def load_chat_template(value: str | os.PathLike) -> str:
    """A template from a .jinja file path or a template string (like a serving engine's --chat-template)."""
    text = str(value)
    if isinstance(value, os.PathLike) or (("{{" not in text and "{%" not in text) and len(text) < 4096):
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"chat_template={text!r} is neither a readable .jinja file nor a Jinja template string")
        return path.read_text(encoding="utf-8")
    return text


def with_chat_template(kwargs: dict, chat_template: str | os.PathLike | None) -> dict:
    """Model constructor kwargs with ``chat_template`` (string or .jinja path) passed to ST's processor."""
    if chat_template is not None:
        processor_kwargs = {
            **(kwargs.get("processor_kwargs") or {}),
            "chat_template": load_chat_template(chat_template),
        }
        kwargs = {**kwargs, "processor_kwargs": processor_kwargs}
    return kwargs


def build_messages(contents: tuple[str, ...], instruction: str | None) -> list[dict[str, str]]:
    roles = PAIR_ROLES if len(contents) == 2 else ("user",)
    messages = [{"role": "system", "content": instruction}] if instruction else []
    return messages + [{"role": role, "content": text} for role, text in zip(roles, contents)]


class ChatTemplate:
    """Renders texts through one chat template and tokenizes the result (no special tokens added)."""

    def __init__(self, hf_tokenizer, template: str, tokenizer: TextTokenizer | None = None) -> None:
        self.hf = hf_tokenizer
        self.template = template
        self.tokenizer = tokenizer or TextTokenizer(hf_tokenizer)
        self._prefixes: dict[tuple[str, int], np.ndarray | None] = {}

    def render(self, contents: tuple[str, ...], instruction: str | None = None) -> str:
        messages = build_messages(contents, instruction)
        return self.hf.apply_chat_template(messages, tokenize=False, chat_template=self.template)

    def check_pairs(self, model_name: str = "this model") -> None:
        """Raise ValueError if the template renders without the query or without the document."""
        try:
            base = self.render(_PROBES[0])
            missing = [
                role
                for i, role in enumerate(PAIR_ROLES)
                if self.render(tuple(_PROBES[1][j] if j == i else _PROBES[0][j] for j in range(2))) == base
            ]
        except Exception as exc:
            raise ValueError(f"The chat template of {model_name} fails to render a query/document pair: {exc}") from exc
        if missing:
            which = " and ".join(f"the {role} (role {role!r})" for role in missing)
            raise ValueError(
                f"The chat template of {model_name} renders without {which}. A pair is passed as two messages "
                "with roles 'query' and 'document'; supply a template that renders both, e.g.\n"
                '  question:{{ messages[0]["content"] }} \\n \\n passage:{{ messages[1]["content"] }}\n'
                "with CrossEncoder(..., chat_template=<template string or .jinja path>), or a chat_template.jinja "
                "file beside the model."
            )

    def shared_prefix(self, instruction: str | None, arity: int = 2) -> np.ndarray | None:
        """Token ids every render of ``arity`` texts starts with (the template's head and instruction): see
        engine.prefix.shared_head."""
        key = (instruction or "", arity)
        if key not in self._prefixes:
            probes = [p if arity == 2 else p[:1] for p in _PROBES]
            probes = self.tokenizer([self.render(p, instruction) for p in probes], None, False).ids
            self._prefixes[key] = shared_head(*probes)
        return self._prefixes[key]

    def encode(
        self, items: list[tuple[str, ...]], instruction: str | None, max_length: int | None
    ) -> tuple[Tokenized, int]:
        """Tokenize each item's render, cutting content to fit ``max_length``; also returns how many were cut."""
        rendered = [self.render(contents, instruction) for contents in items]
        tokens = self.tokenizer(rendered, None, add_special_tokens=False)
        cut = 0
        if max_length is not None:
            for i, length in enumerate(tokens.lengths):
                if length > max_length:
                    fitted = self.tokenizer(
                        [self.render(self.fit(items[i], instruction, max_length), instruction)], None, False
                    )
                    tokens.ids[i], tokens.lengths[i] = fitted.ids[0], fitted.lengths[0]
                    if tokens.type_ids is not None:
                        tokens.type_ids[i] = fitted.type_ids[0]
                    cut += 1
        return tokens, cut

    def _length(self, contents: tuple[str, ...], instruction: str | None) -> int:
        return int(self.tokenizer([self.render(contents, instruction)], None, False).lengths[0])

    def fit(self, contents: tuple[str, ...], instruction: str | None, max_length: int) -> tuple[str, ...]:
        """The contents cut at token boundaries, last message first, so that the render fits ``max_length``."""
        contents = list(contents)
        for slot in reversed(range(len(contents))):
            text = contents[slot]
            # Cut points: the end of each of the text's own tokens (a cut never splits a token).
            ends = sorted({end for _, end in self.tokenizer.offsets(text)})
            cuts = [0, *ends]
            lo, hi = 0, len(cuts) - 1  # largest index whose cut fits
            contents[slot] = text[: cuts[lo]]
            if self._length(tuple(contents), instruction) > max_length:
                continue  # even empty, this slot cannot make room: cut the one before it too
            while lo < hi:
                mid = (lo + hi + 1) // 2
                contents[slot] = text[: cuts[mid]]
                if self._length(tuple(contents), instruction) <= max_length:
                    lo = mid
                else:
                    hi = mid - 1
            contents[slot] = text[: cuts[lo]]
            return tuple(contents)
        raise ValueError(
            f"The template alone renders {self._length(tuple(contents), instruction)} tokens, more than "
            f"max_length={max_length}: raise max_length (model.max_seq_length) or shorten the template/instruction"
        )
