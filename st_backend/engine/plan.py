"""What the engine runs, in its own terms: no sentence-transformers class here. The ST-facing side translates a
loaded pipeline into a Plan once (st_backend/models/plans.py) and each call into a Call; a call returns a
Result, its outputs and its facts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .architectures import ArchSpec
from .chat import ChatFunctions

# (packed last hidden states (T, H), the batch, the call) -> the batch's outputs: (n, ...) rows, outputs.Tokens,
# a list of objects, or a dict of those (the call's ``outputs`` kind says which).
Head = Callable[[torch.Tensor, object, "Call"], object]


@dataclass(frozen=True)
class Expansion:
    """ColBERT query expansion with attended expansion tokens: each query is tokenized to at most ``cap`` tokens,
    then filled up to ``floor`` with the ``fill`` token id; ``fixed`` queries are exactly ``floor`` wide."""

    floor: int
    cap: int | None
    fill: int
    fixed: bool


@dataclass
class Plan:
    """model: the transformers module the runner calls on packed batches (a base model); tokenizer: its HF
    tokenizer; max_length(call): the truncation length now (read at each call: max_seq_length may change after load);
    template: the chat template inputs are rendered through, if any; expansion: query expansion, if any;
    last_token_head: the head reads only each input's last token, so a shared head of the inputs (a template's,
    a prompt's) may run once per call (engine/prefix.py); description: what `info` and tests may read."""

    model: torch.nn.Module
    tokenizer: object
    arch: ArchSpec
    head: Head
    max_length: Callable[[Call], int | None]
    template: ChatFunctions | None = None
    expansion: Expansion | None = None
    last_token_head: bool = False
    description: dict = field(default_factory=dict)


@dataclass
class Call:
    """One call: items are texts or (text, text) pairs (the prompt goes in front of each text, of a pair's first),
    or, with a template, the conversations ST renders (the prompt already their leading system message).

    outputs: "rows", "ragged", "items" or {name: kind} (outputs.collector); options: what the head reads (per call);
    prefix_arity: texts per input when the inputs may share a template's or prompt's head (1 or 2), else None."""

    items: list
    prompt: str | None = None
    outputs: str | dict = "rows"
    options: object = None
    prefix_arity: int | None = None
    save_to_cpu: bool = False
    show_progress_bar: bool = False
    desc: str = "Inputs"


@dataclass
class Result:
    """A call's outputs in input order (a tensor of rows, a PackedEmbeddings, a list, or a dict of those) and its
    facts: inputs whose content template-aware truncation cut, queries left no room for an expansion token,
    the tokens in the inputs against those that ran through the layers, and the stage timings when
    EngineConfig(profile=True)."""

    outputs: object
    truncated: int = 0
    filled: int = 0
    profile: dict | None = None
    row_tokens: int = 0  # tokens in the inputs (after rendering and truncation)
    forward_tokens: int = 0  # tokens that ran through the layers: fewer where inputs shared a prefix
