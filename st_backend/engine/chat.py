"""Chat-template inputs: conversations rendered, tokenized and, when too long, cut with template-aware truncation.

A conversation is a list of messages as ST 6.2 builds them (string content, or a list of typed parts whose text
parts carry ``"text"``). The caller hands in the callables that render one (the processor's chat template) and
that build the probe conversations, so this module knows no sentence-transformers class.

When a render is longer than max_length, text content is cut at the content's own token boundaries, the last
message first, then earlier ones only if that cannot make room, never the template nor the leading prompt (the
system message ST makes of a prompt): the ids fed to the model are exactly the tokenization of the render of the
cut texts, so they keep the template's prefix and end with its suffix. Two exceptions: when the earlier contents
alone fill the room (a long query), the one before the last is first cut to half of it, so the last (the
document) keeps the other half; and when the template alone is longer than max_length, the row gets ST's own
tokens (``st_ids``: ST truncates the render and writes the template's suffix back over its end).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .prefix import PROBE_TEXTS, shared_head
from .tokenizer import TextTokenizer, Tokenized

logger = logging.getLogger("st_backend")

Conversation = list[dict]
PAIR_ROLES = ("query", "document")
PROBES = ((PROBE_TEXTS[0], "first probe document"), (PROBE_TEXTS[1], "second document text"))
ROLE_BASED_EXAMPLE = (
    "  <Query>: {{ (messages | selectattr('role', 'eq', 'query') | first).content }}\n"
    "  <Document>: {{ (messages | selectattr('role', 'eq', 'document') | first).content }}"
)
_said: set[str] = set()


def say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        logger.warning("st_backend: %s", message)


@dataclass(frozen=True)
class ChatFunctions:
    """What the engine needs from the loaded model to run chat-template inputs.

    render(conversation) -> the rendered text (the template, with the kwargs ST passes); probe(contents,
    instruction) -> the conversation ST builds for one text or a (query, document) pair under a prompt;
    st_ids(conversation) -> ST's own token ids for it (ST's truncation), for rows whose template alone is too
    long; template() -> the template text now (a template changed after load is picked up at the next call).
    """

    render: Callable[[Conversation], str]
    probe: Callable[[tuple[str, ...], str | None], Conversation]
    st_ids: Callable[[Conversation], list[int]]
    template: Callable[[], str | None]


def text_slots(conversation: Conversation, prompted: bool) -> list[tuple[int, int | None]]:
    """(message, part) of every text content, in order; a leading prompt's system message is never one."""
    slots = []
    for i, message in enumerate(conversation):
        if i == 0 and prompted and message.get("role") == "system":
            continue
        content = message.get("content")
        if isinstance(content, str):
            slots.append((i, None))
        elif isinstance(content, list):
            slots += [(i, j) for j, part in enumerate(content) if isinstance(part, dict) and "text" in part]
    return slots


def get_text(conversation: Conversation, slot: tuple[int, int | None]) -> str:
    i, j = slot
    content = conversation[i]["content"]
    return content if j is None else content[j]["text"]


def with_text(conversation: Conversation, slot: tuple[int, int | None], text: str) -> Conversation:
    """A copy of the conversation with one text content replaced (the input is never changed)."""
    out = list(conversation)
    i, j = slot
    message = dict(out[i])
    if j is None:
        message["content"] = text
    else:
        parts = list(message["content"])
        parts[j] = {**parts[j], "text": text}
        message["content"] = parts
    out[i] = message
    return out


class ChatTemplate:
    """Renders conversations through one chat template and tokenizes the result (no special tokens added)."""

    def __init__(self, functions: ChatFunctions, tokenizer: TextTokenizer) -> None:
        self.functions = functions
        self.tokenizer = tokenizer
        self._lock = threading.Lock()
        self._template: str | None = None
        self._cache: dict[tuple, object] = {}  # per template: shared prefixes, prompt checks

    @property
    def template(self) -> str | None:
        return self.functions.template()

    def _cached(self, key: tuple, compute: Callable[[], object]):
        """A value computed once per template text (the template may be replaced on the model after load)."""
        template = self.template
        with self._lock:
            if template != self._template:
                self._template, self._cache = template, {}
            if key in self._cache:
                return self._cache[key]
        value = compute()
        with self._lock:
            if template == self._template:
                self._cache[key] = value
        return value

    def render(self, conversation: Conversation) -> str:
        return self.functions.render(conversation)

    def _length(self, conversation: Conversation) -> int:
        return int(self.tokenizer([self.render(conversation)], None, False).lengths[0])

    # -- validation ---------------------------------------------------------------------------------------------

    def missing_pair_roles(self, instruction: str | None = None) -> list[str]:
        """The pair roles whose content never reaches a render (with ``instruction`` as ST's system message)."""
        base = self.render(self.functions.probe(PROBES[0], instruction))
        missing = []
        for i, role in enumerate(PAIR_ROLES):
            varied = tuple(PROBES[1][j] if j == i else PROBES[0][j] for j in range(2))
            if self.render(self.functions.probe(varied, instruction)) == base:
                missing.append(role)
        return missing

    def check_pairs(self, model_name: str = "this model") -> None:
        """Raise ValueError if the template renders a pair without the query or without the document."""
        try:
            missing = self._cached(("pairs",), self.missing_pair_roles)
        except Exception as exc:
            raise ValueError(f"The chat template of {model_name} fails to render a query/document pair: {exc}") from exc
        if missing:
            which = " and ".join(f"the {role} (role {role!r})" for role in missing)
            raise ValueError(
                f"The chat template of {model_name} renders without {which}. A pair is passed as two messages "
                "with roles 'query' and 'document'; supply a template that selects each by its role, e.g.\n"
                f"{ROLE_BASED_EXAMPLE}\nwith CrossEncoder(..., chat_template=<template string or .jinja path>), "
                "or a chat_template.jinja file beside the model."
            )

    def check_prompt(self, instruction: str) -> None:
        """Raise ValueError when a prompt pushes the query or the document out of the render (a template that
        picks contents by position, ``messages[0]`` / ``messages[1]``, finds the prompt's system message first).
        ST has the same defect: it scores every document alike."""
        missing = self._cached(("prompt", instruction), lambda: self.missing_pair_roles(instruction))
        if missing:
            raise ValueError(
                f"With a prompt, this chat template renders without the {' and the '.join(missing)}: the prompt "
                "becomes a leading 'system' message, so a template that picks messages by position "
                "(messages[0], messages[1]) reads the wrong ones. Select each message by its role instead, e.g.\n"
                f"{ROLE_BASED_EXAMPLE}\nor call without a prompt."
            )

    # -- shared prefix ------------------------------------------------------------------------------------------

    def shared_prefix(self, instruction: str | None, arity: int = 2) -> np.ndarray | None:
        """Token ids every render of ``arity`` texts starts with (the template's head and instruction): see
        engine.prefix.shared_head."""

        def compute():
            probes = [p if arity == 2 else p[:1] for p in PROBES]
            rendered = [self.render(self.functions.probe(p, instruction)) for p in probes]
            return shared_head(*self.tokenizer(rendered, None, False).ids)

        return self._cached(("prefix", instruction or "", arity), compute)

    # -- encoding -----------------------------------------------------------------------------------------------

    def encode(
        self, conversations: list[Conversation], prompted: bool, max_length: int | None
    ) -> tuple[Tokenized, int]:
        """Tokenize each conversation's render, cutting content to fit ``max_length``; also returns how many
        were cut. ``prompted``: each conversation starts with the prompt's system message."""
        if max_length is not None:
            conversations = [self._cut_long(c, prompted, max_length) for c in conversations]
        tokens = self.tokenizer([self.render(c) for c in conversations], None, add_special_tokens=False)
        cut = 0
        if max_length is not None:
            for i, length in enumerate(tokens.lengths):
                if length > max_length:
                    fitted = self.fit(conversations[i], prompted, max_length)
                    if fitted is None:  # the template alone is longer than max_length: ST's own tokens
                        ids = np.asarray(self.functions.st_ids(conversations[i]), dtype=np.int64)
                    else:
                        ids = self.tokenizer([self.render(fitted)], None, False).ids[0]
                    tokens.ids[i], tokens.lengths[i] = ids, len(ids)
                    cut += 1
        return tokens, cut

    def _cut_long(self, conversation: Conversation, prompted: bool, max_length: int) -> Conversation:
        """The conversation with each text far past max_length replaced by a prefix that changes nothing of the
        result: its first S tokens (ids and offsets) are the full text's (precut.stable_prefix), and with the
        other contents empty, S of them already overflow max_length. fit's search then stops inside those S
        tokens whichever text it is given, so cutting long texts first only saves tokenizing them whole."""
        precut = self.tokenizer.precut
        if precut is None or precut.reason is not None:
            return conversation
        slots = text_slots(conversation, prompted)
        long = [slot for slot in slots if len(get_text(conversation, slot)) > precut.threshold(max_length + 1)]
        if not long:
            return conversation
        empty = conversation
        for slot in slots:
            empty = with_text(empty, slot, "")
        for slot in long:
            text = get_text(conversation, slot)
            prefix, stable = precut.stable_prefix(text, max_length + 1)
            if prefix is text:
                continue
            end = self.tokenizer.offsets(prefix)[stable - 1][1]
            if self._length(with_text(empty, slot, text[:end])) > max_length:
                conversation = with_text(conversation, slot, prefix)
        return conversation

    def fit(self, conversation: Conversation, prompted: bool, max_length: int) -> Conversation | None:
        """The conversation with text contents cut at token boundaries so that its render fits ``max_length``;
        None when even empty contents do not fit (the template alone is too long)."""
        slots = text_slots(conversation, prompted)
        empty = conversation
        for slot in slots:
            empty = with_text(empty, slot, "")
        room = max_length - self._length(empty)
        if room < 0:
            say_once(
                f"the chat template alone renders more than max_length={max_length} tokens: such rows are "
                "truncated as ST truncates them (the render cut, the template's suffix written back over its end)"
            )
            return None
        if len(slots) >= 2 and self._length(with_text(conversation, slots[-1], "")) > max_length:
            # The earlier contents alone fill the room: cut the one before the last (the query) to half of it
            # first, so the last (the document) keeps the other half instead of being emptied.
            say_once(
                "a query (the content before the last message) that alone fills max_length is cut to half of "
                "the room, so that the document keeps the other half"
            )
            query = self._cut(with_text(conversation, slots[-1], ""), slots[-2], max_length - room // 2)
            if query is not None:
                conversation = with_text(conversation, slots[-2], get_text(query, slots[-2]))
        for slot in reversed(slots):
            fitted = self._cut(conversation, slot, max_length)
            if fitted is not None:
                return fitted
            conversation = with_text(conversation, slot, "")
        return conversation

    def _cut(self, conversation: Conversation, slot, max_length: int) -> Conversation | None:
        """The longest cut of one content (at its own token ends) whose render fits, or None if even empty fails."""
        text = get_text(conversation, slot)
        cuts = [0, *sorted({end for _, end in self.tokenizer.offsets(text)})]
        if self._length(with_text(conversation, slot, "")) > max_length:
            return None
        lo, hi = 0, len(cuts) - 1  # largest index whose cut fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._length(with_text(conversation, slot, text[: cuts[mid]])) <= max_length:
                lo = mid
            else:
                hi = mid - 1
        return with_text(conversation, slot, text[: cuts[lo]])
