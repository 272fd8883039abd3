"""The one module that touches st_backend's models and engine: loading, warm-up, token counts, and the merged
calls the batchers make. Everything above it (routes, batcher) sees rows in and per-row outputs out.

Text rows go through the public Python API (encode / encode_query / encode_document / predict), so prompts,
roles, templates and template-aware truncation are the Python API's. Token-id rows (OpenAI's list-of-ints input)
and single-text classification run the packed engine directly on exactly the given ids / texts, since the
public API only takes texts (and CrossEncoder only pairs). Scoring on an embedding or multi-vector model sends
("query", text) and ("document", text) rows in one job: the merged call runs encode_query on the first and
encode_document on the second. A sparse model's rows come back as (indices, values) of their nonzero entries.

Token counts (usage, limits, the batch budget) come from a private copy of the model's tokenizer, so text is
tokenized twice (here and inside encode) until the engine takes tokenized items; for chat-template models they
count the texts without the template's own tokens.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from .. import _compat
from ..engine.plan import Call
from ..engine.tokenizer import TextTokenizer
from ..models.heads import EmbedOptions
from .batcher import Batcher
from .ops import ClassifyTexts, Encode, EncodeIds, Operation, Pairs, QueryDocument, Sparse

logger = logging.getLogger("st_backend.server")

EMBEDDING, CROSS_ENCODER, MULTI_VECTOR, SPARSE = "embedding", "cross-encoder", "multi-vector", "sparse"
ROLE_PROMPTS = {"query": ("query",), "document": ("document", "passage", "corpus")}
ENCODE = {None: "encode", "query": "encode_query", "document": "encode_document"}  # the method of each role


@dataclass
class Served:
    """One loaded model and what the routes need to know about it."""

    name: str
    kind: str
    path: str
    model: object
    counter: TextTokenizer  # a private tokenizer copy for counting and /tokenize (never the model's own)
    vocab_size: int
    dimension: int | None = None  # sparse: the vocabulary size of its output rows
    labels: list[str] | None = None  # cross-encoders: config.id2label in label order
    created: int = field(default_factory=lambda: int(time.time()))

    def limit(self, role: str | None = None) -> int | None:
        """Most tokens one input may have (ST truncates to this): the role's length, else max_seq_length."""
        first = self.model[0] if len(self.model) else None
        if isinstance(first, _compat.Transformer):
            return _compat.text_max_length(first, role)
        return getattr(self.model, "max_seq_length", None)

    def engine(self, role: str | None = None):
        if self.kind == CROSS_ENCODER:
            return self.model.engine()
        return self.model.engine_for(role)


def _name(path: str, taken: set[str]) -> str:
    """The served name: the model an alias names ("default": the embedded model's own name; a PyPI-shipped
    model's name), else the folder's (made unique)."""
    from ..default_model import model_alias

    base = model_alias(path) or os.path.basename(os.path.normpath(path)) or path
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


class Backend(Protocol):
    """What the app and the routes use of the models: ``Bridge`` runs them in this process, ``DeviceBridge``
    (devices.py) in one process per device."""

    served: dict[str, Served]

    def load(self) -> None: ...
    def close(self) -> None: ...
    def batcher(self, served: Served, **options) -> Batcher: ...
    def run(self, served: Served, op: Operation, rows: list): ...
    def count(self, served: Served, rows: list, prompt: str | None, role: str | None) -> np.ndarray: ...
    def prompt_of(
        self, served: Served, prompt_name: str | None, prompt: str | None, role: str | None
    ) -> str | None: ...
    def check_dimensions(self, served: Served, dimensions: int | None) -> None: ...
    def batch_budget(self, served: Served) -> int: ...
    def engine_reason(self, served: Served) -> str | None: ...
    def tokenize(self, served: Served, texts: list[str], add_special_tokens: bool) -> list[tuple[list[int], list]]: ...
    def describe(self) -> list[dict]: ...
    def health(self) -> list[dict] | None: ...
    def refresh_metrics(self) -> None: ...


class Bridge:
    """Loads the models (paths, or "default" for the embedded one) and runs merged calls."""

    def __init__(
        self,
        embedding: str | None,
        cross_encoder: str | None = None,
        multi_vector: str | None = None,
        sparse: str | None = None,
        *,
        device: str | None = None,
        matryoshka_dimensions: Sequence[int] | None = None,
        attention: str = "auto",
    ) -> None:
        self.paths = {EMBEDDING: embedding, CROSS_ENCODER: cross_encoder, MULTI_VECTOR: multi_vector, SPARSE: sparse}
        self.device = device
        self.matryoshka_dimensions = matryoshka_dimensions
        self.attention = attention
        self.served: dict[str, Served] = {}

    # -- loading ----------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Load every model given and run one call of each kind through it (so /health means ready)."""
        from .. import CrossEncoder, EngineConfig, MultiVectorEncoder, SentenceTransformer, SparseEncoder
        from ..default_model import resolve_model

        engine = EngineConfig(attention=self.attention)
        for kind, path in self.paths.items():
            if path is None:
                continue
            resolved = resolve_model(path)
            kwargs = {"device": self.device, "engine": engine}
            if kind == EMBEDDING:
                model = SentenceTransformer(resolved, matryoshka_dimensions=self.matryoshka_dimensions, **kwargs)
            elif kind == CROSS_ENCODER:
                model = CrossEncoder(resolved, **kwargs)
            elif kind == SPARSE:
                model = SparseEncoder(resolved, **kwargs)
            else:
                model = MultiVectorEncoder(resolved, **kwargs)
            served = self._describe(kind, path, model, set(self.served))
            self.served[served.name] = served
            self._warm(served)
            if kind == SPARSE:  # SpladePooling learns its output size (the vocabulary) at the first call
                served.dimension = model.get_embedding_dimension()
            logger.info("st_backend server: %s %s loaded from %s", kind, served.name, resolved)

    def _describe(self, kind: str, path: str, model, taken: set[str]) -> Served:
        hf = getattr(model[0], "model", None)  # None behind a Router (inference-free SPLADE)
        config = getattr(model, "config", None) or getattr(hf, "config", None)
        if hf is not None:
            vocab = int(hf.get_input_embeddings().num_embeddings)  # the ids the embedding matrix has rows for
        else:
            vocab = len(model.tokenizer)
        served = Served(_name(path, taken), kind, path, model, TextTokenizer(model.tokenizer), vocab)
        if kind == CROSS_ENCODER:
            id2label = getattr(config, "id2label", None) or {}
            served.labels = [str(id2label.get(i, f"LABEL_{i}")) for i in range(model.num_labels)]
        elif kind != SPARSE:
            served.dimension = model.get_embedding_dimension()
        return served

    def _warm(self, served: Served) -> None:
        self.count(served, ["warm up"], None, None)  # builds the counting tokenizer's copy
        for role in (None, "query", "document") if served.kind != CROSS_ENCODER else (None,):
            served.engine(role)  # built here, not raced for by two threads later
        if served.kind == CROSS_ENCODER:
            self.run(served, Pairs(), [("warm up", "warm up")])
        elif served.kind == SPARSE:
            self.run(served, Sparse(), ["warm up"])
        else:
            self.run(served, Encode(tokens=served.kind == MULTI_VECTOR), ["warm up"])

    # -- what routes check before queueing --------------------------------------------------------------------

    def count(self, served: Served, rows: list, prompt: str | None, role: str | None) -> np.ndarray:
        """Untruncated token count of each row (texts, or (a, b) pairs), the prompt in front as ST puts it. For a
        chat-template model this counts the texts' own tokens, not the template's (see the module docstring)."""
        if prompt:
            rows = [(prompt + r[0], r[1]) if isinstance(r, tuple) else prompt + r for r in rows]
        return served.counter.lengths(rows)

    def prompt_of(self, served: Served, prompt_name: str | None, prompt: str | None, role: str | None) -> str | None:
        """The prompt text ST will use (for counting); ValueError naming the prompts when prompt_name is unknown."""
        model = served.model
        prompts = getattr(model, "prompts", {}) or {}
        if prompt is not None:
            return prompt
        if prompt_name is not None:
            if prompt_name not in prompts:
                raise ValueError(f"prompt_name {prompt_name!r} is not one of this model's prompts {sorted(prompts)}")
            return prompts[prompt_name]
        for name in ROLE_PROMPTS.get(role, ()):  # encode_query / encode_document pick these, in this order
            if name in prompts:
                return prompts[name]
        default = getattr(model, "default_prompt_name", None)
        return prompts.get(default) if default else None

    def check_dimensions(self, served: Served, dimensions: int | None) -> None:
        """ValueError unless ``dimensions`` is a size the model serves (Matryoshka rules, st_backend.matryoshka)."""
        full = served.dimension
        if dimensions is None or dimensions == full:
            return
        if full is not None and dimensions > full:
            raise ValueError(f"dimensions={dimensions} is larger than the model's {full}")
        mat = served.model.matryoshka
        if mat.any_prefix:
            return
        if mat.dimensions is None:
            raise ValueError(
                f"this model declares no Matryoshka dimensions, so only its full size {full} is served; start the "
                "server with --matryoshka-dimensions to allow smaller ones"
            )
        if dimensions not in mat.dimensions:
            raise ValueError(
                f"dimensions={dimensions} is not a size this model was trained for; supported: {list(mat.dimensions)}"
            )

    def batch_budget(self, served: Served) -> int:
        """Default tokens per merged call: the engine's packed-batch budget here, at most 16384 (TEI's)."""
        engine = served.engine(None)
        return 16384 if isinstance(engine, str) else min(16384, engine.token_budget(served.model.device))

    def engine_reason(self, served: Served) -> str | None:
        """Why token-id input cannot run on this model (it needs the packed engine), or None."""
        engine = served.engine(None)
        return engine if isinstance(engine, str) else None

    def tokenize(self, served: Served, texts: list[str], add_special_tokens: bool) -> list[tuple[list[int], list]]:
        tokens = served.counter(texts, None, add_special_tokens)
        backend = served.counter._backend(None)
        return [(ids.tolist(), [backend.id_to_token(int(i)) or "" for i in ids]) for ids in tokens.ids]

    # -- merged calls (batcher worker threads) ----------------------------------------------------------------

    def batcher(self, served: Served, **options) -> Batcher:
        """The model's queue: one worker thread running its merged calls here."""
        return Batcher(served.name, lambda op, rows: self.run(served, op, rows), **options)

    def run(self, served: Served, op: Operation, rows: list):
        """One merged call of ``op`` (ops.py: the route builds it) on the rows. One output per row."""
        model = served.model
        # No progress bar: ST shows one per call at log level INFO, which would log one per merged call.
        match op:
            case Encode(role, prompt_name, prompt, tokens=False):
                # One copy to the host for the whole merged call: each request's post-processing then slices
                # host memory instead of making its own device copy and sync (in the model's dtype: --devices
                # sends it over a pipe; _finish works in fp32).
                out = getattr(model, ENCODE[role])(
                    rows, prompt_name=prompt_name, prompt=prompt, convert_to_tensor=True, show_progress_bar=False
                )
                return out.cpu()
            case Encode(role, prompt_name, prompt, tokens=True):
                return getattr(model, ENCODE[role])(
                    rows,
                    prompt_name=prompt_name,
                    prompt=prompt,
                    output_value="token_embeddings",
                    convert_to_numpy=False,
                    show_progress_bar=False,
                )
            case EncodeIds(role, tokens):
                return self._embed_ids(served, rows, token_level=tokens, role=role)
            case QueryDocument(prompt_name, prompt):
                return self._query_document(served, rows, prompt_name=prompt_name, prompt=prompt)
            case Sparse(role, prompt_name, prompt, max_active_dims):
                out = getattr(model, ENCODE[role])(
                    rows,
                    prompt_name=prompt_name,
                    prompt=prompt,
                    max_active_dims=max_active_dims,
                    convert_to_sparse_tensor=True,
                    save_to_cpu=True,
                    show_progress_bar=False,
                )
                return _sparse_rows(out, len(rows))
            case Pairs(prompt_name, prompt, logits):
                kwargs = {"prompt_name": prompt_name, "prompt": prompt, "show_progress_bar": False}
                if logits:
                    kwargs.update(activation_fn=torch.nn.Identity(), apply_softmax=False)
                return model.predict([tuple(r) for r in rows], convert_to_tensor=True, **kwargs)
            case ClassifyTexts():
                return self._classify_texts(served, rows)
        raise ValueError(f"unknown operation {op!r}")

    def _query_document(self, served: Served, rows: list, prompt_name: str | None, prompt: str | None):
        """Rows ("query", text) through encode_query (with the request's prompt, if any), rows ("document", text)
        through encode_document; one output per row in row order: a tensor (n, dim) for an embedding model, a
        list of (tokens, dim) token embeddings for a multi-vector model."""
        model = served.model
        sides = {"query": [], "document": []}
        for i, (side, _) in enumerate(rows):
            sides[side].append(i)
        kwargs = {"show_progress_bar": False}
        if served.kind == MULTI_VECTOR:
            kwargs.update(output_value="token_embeddings", convert_to_numpy=False)
        else:
            kwargs.update(convert_to_tensor=True)
        outputs = {}
        for side, fn, extra in (
            ("query", model.encode_query, {"prompt_name": prompt_name, "prompt": prompt}),
            ("document", model.encode_document, {}),
        ):
            if sides[side]:
                outputs[side] = fn([rows[i][1] for i in sides[side]], **extra, **kwargs)
        if served.kind == MULTI_VECTOR:
            out: list = [None] * len(rows)
            for side, index in sides.items():
                for i, e in zip(index, outputs.get(side, ())):
                    out[i] = e.cpu()
            return out
        first = next(iter(outputs.values()))
        out = torch.empty((len(rows), first.shape[1]), dtype=first.dtype)
        for side, index in sides.items():
            if index:
                out[index] = outputs[side].cpu()
        return out

    @torch.inference_mode()
    def _embed_ids(self, served: Served, rows: list[list[int]], token_level: bool, role: str | None):
        """Exactly these ids through the engine's stream (no re-tokenizing): sentence or token embeddings."""
        model = served.model
        engine = model.engine_for(role)
        if isinstance(engine, str):
            raise RuntimeError(f"token-id input needs the packed engine; this model runs ST's own path ({engine})")
        model.eval()
        # No truncation, no normalisation: the routes do those per request.
        call = Call([], outputs="ragged" if token_level else "rows", options=EmbedOptions())
        out: list = [None] * len(rows)
        for i, output in engine.stream(enumerate(rows), call, model.device):
            out[i] = output
        return out if token_level else torch.stack(out)

    @torch.inference_mode()
    def _classify_texts(self, served: Served, texts: list[str]) -> torch.Tensor:
        """Logits (n, labels) of single texts, as ST's CrossEncoder.predict("text") scores each, packed. (Not
        predict(texts) itself: ST reads a list of two strings as one pair.)"""
        model = served.model
        logits = model._inference(
            list(texts),
            prompt=None,
            batch_size=32,
            show_progress_bar=False,
            activation_fn=torch.nn.Identity(),
            apply_softmax=False,
        ).float()
        return logits[:, None] if logits.ndim == 1 else logits

    def close(self) -> None:
        """Release what load() started: nothing here (DeviceBridge stops its device processes)."""

    def health(self) -> list[dict] | None:
        """Each device's state (DeviceBridge); None: the models run in this process."""
        return None

    def refresh_metrics(self) -> None:
        """Bring the backend's own /metrics series up to date (DeviceBridge: the devices')."""

    # -- /info ------------------------------------------------------------------------------------------------

    def describe(self) -> list[dict]:
        out = []
        for s in self.served.values():
            engine = s.engine(None)
            device = s.model.device
            entry = {
                "name": s.name,
                "kind": s.kind,
                "path": s.path,
                "device": str(device),
                "max_seq_length": s.limit(None),
                "vocab_size": s.vocab_size,
                "prompts": dict(getattr(s.model, "prompts", {}) or {}),
            }
            if s.kind == CROSS_ENCODER:
                entry["labels"] = s.labels
            elif s.kind == SPARSE:
                entry.update(dimension=s.dimension, max_active_dims=getattr(s.model, "max_active_dims", None))
            else:
                mat = s.model.matryoshka
                entry.update(
                    dimension=s.dimension,
                    matryoshka_dimensions=list(mat.dimensions or ()) or None,
                    matryoshka_any_prefix=mat.any_prefix,
                )
            if isinstance(engine, str):
                entry["engine"] = {"path": "sentence-transformers", "reason": engine}
            else:
                described = engine.describe(device)
                entry["engine"] = {
                    "path": "packed",
                    "attention": described["attention_backend"],
                    "max_batch_tokens": described["token_budget"],
                    "dtype": str(engine.runners.dtype).replace("torch.", ""),
                    **described,
                }
            out.append(entry)
        return out


def _sparse_rows(out: torch.Tensor, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A (n, vocab) sparse COO tensor as one (indices, values) pair per row: nonzero entries only, sorted by
    index (coalescing sorts by row, then column)."""
    out = out.coalesce()
    rows, columns = out.indices()
    values = out.values().float()
    keep = values != 0
    rows, columns, values = rows[keep], columns[keep], values[keep]
    counts = torch.bincount(rows, minlength=n).tolist()
    return list(zip(torch.split(columns, counts), torch.split(values, counts)))
