"""Chat templates on the ST side: where a model's template comes from (given at load, a ``score_template`` in its
ST config, a ``chat_template.jinja`` beside it, its tokenizer), the one-time note for a template not written for
scoring, and the callables the engine renders conversations with (engine/chat.py), built from ST's own message
formatting so that every conversation is the one ST would render.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import st_backend._compat as _compat

from .engine.chat import ChatFunctions, Conversation, say_once

_GENERATIVE_MARKS = ("add_generation_prompt", "assistant")


def load_chat_template(value: str | os.PathLike) -> str:
    """A template from a .jinja file path or a template string (like a serving engine's --chat-template)."""
    text = str(value)
    if isinstance(value, os.PathLike) or (("{{" not in text and "{%" not in text) and len(text) < 4096):
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"chat_template={text!r} is neither a readable .jinja file nor a Jinja template string")
        return path.read_text(encoding="utf-8")
    return text


def score_template_of(model_name_or_path) -> str | None:
    """The ``score_template`` a model's ``config_sentence_transformers.json`` declares (a template string, or a
    file name beside it), or None."""
    if not isinstance(model_name_or_path, (str, os.PathLike)):
        return None
    config = Path(model_name_or_path) / "config_sentence_transformers.json"
    if not config.is_file():
        return None
    value = json.loads(config.read_text(encoding="utf-8")).get("score_template")
    if not value:
        return None
    beside = Path(model_name_or_path) / str(value)
    return beside.read_text(encoding="utf-8") if beside.is_file() else load_chat_template(value)


def with_chat_template(kwargs: dict, chat_template, model_name_or_path=None) -> dict:
    """Model constructor kwargs with the chat template ST's processor is loaded with: ``chat_template`` (a string
    or .jinja path), else the model's declared ``score_template``; ``chat_template=False`` loads none at all
    (plain pair tokenization, as ST's ``processor_kwargs={"chat_template": None}``)."""
    if chat_template is None and "chat_template" not in (kwargs.get("processor_kwargs") or {}):
        chat_template = score_template_of(model_name_or_path)
    if chat_template is None:
        return kwargs
    template = None if chat_template is False else load_chat_template(chat_template)
    processor_kwargs = {**(kwargs.get("processor_kwargs") or {}), "chat_template": template}
    return {**kwargs, "processor_kwargs": processor_kwargs}


def note_generative_template(template: str | None, model_name: str) -> None:
    """Say once when a cross-encoder's only template looks like a generative chat template (system / user /
    assistant turns) rather than one written for scoring a query and a document."""
    if not template or ("query" in template and "document" in template):
        return
    if any(mark in template for mark in _GENERATIVE_MARKS):
        say_once(
            f"the chat template of {model_name} comes from its tokenizer and looks like a generative chat "
            "template, not one written for scoring: pairs are rendered through it as ST does (roles 'query' and "
            "'document'). To score plain pairs instead, load with CrossEncoder(..., chat_template=False) (plain "
            "ST: processor_kwargs={'chat_template': None}); to give a scoring template, chat_template=<template "
            "or .jinja path>, or 'score_template' in config_sentence_transformers.json."
        )


def chat_functions(transformer, task: str | None = None) -> ChatFunctions | None:
    """The engine's view of a Transformer module whose text is rendered through a chat template ("message"
    modality), or None for plain text."""
    processor = transformer.processor
    if "message" not in transformer.modality_config or getattr(processor, "chat_template", None) is None:
        return None
    formatter = _compat.input_formatter(transformer)
    kwargs = _compat.chat_template_kwargs(transformer, task)

    def render(conversation: Conversation) -> str:
        return processor.apply_chat_template(conversation, tokenize=False, **kwargs)

    def probe(contents: tuple[str, ...], instruction: str | None) -> Conversation:
        conversation = text_conversation(formatter, contents[0] if len(contents) == 1 else contents)
        return formatter.prepend_prompt_to_messages([conversation], instruction)[0] if instruction else conversation

    def st_ids(conversation: Conversation) -> list[int]:
        features = transformer.preprocess([conversation], task=task) if task else transformer.preprocess([conversation])
        ids, mask = features["input_ids"][0], features["attention_mask"][0].bool()
        return ids[mask].tolist()

    return ChatFunctions(render=render, probe=probe, st_ids=st_ids, template=lambda: processor.chat_template)


def text_conversation(formatter, item) -> Conversation:
    """The conversation ST builds for one text (a "user" message) or text pair ("query" and "document")."""
    if isinstance(item, str):
        return formatter.to_message({"text": item})
    query, document = item
    return formatter.to_message({"text": query}, role="query") + formatter.to_message(
        {"text": document}, role="document"
    )


def to_conversations(transformer, inputs: list, prompt: str | None) -> list[Conversation] | str:
    """Every input as the conversation ST renders for it (texts, text pairs, conversations, single message
    dicts, ``{"text": ...}`` dicts), the prompt as a leading system message; or why they need ST's own path."""
    formatter = _compat.input_formatter(transformer)
    conversations, kinds = [], set()
    for item in inputs:
        if isinstance(item, str) or _compat.is_text_pair(item):
            conversations.append(text_conversation(formatter, item))
            kinds.add("text")
            continue
        modality, processor_inputs, _ = formatter.parse_inputs([item])
        if modality != "message":
            modality, processor_inputs = formatter.batch_to_message(modality, processor_inputs)
        conversations.append(processor_inputs["message"][0])
        kinds.add("pair" if isinstance(item, tuple) else "message" if _compat.is_conversation(item) else "text")
    if {"message", "text"} <= kinds and "pair" not in kinds:
        raise ValueError(
            "this call mixes conversations (message dicts) with texts: ST 6.2 then nests each conversation inside "
            "a 'user' message, so its result for a row depends on what else is in the call. Encode conversations "
            "and texts in separate calls."
        )
    if not formatter.is_text_only_messages(conversations):
        return "inputs that are not text (images, audio, video) go through ST's processor"
    return formatter.prepend_prompt_to_messages(conversations, prompt) if prompt else conversations
