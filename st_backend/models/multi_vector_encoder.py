"""``st_backend.MultiVectorEncoder``: ST's late-interaction (ColBERT) class with ``_inference`` on the packed
engine, MaxSim on packed document matrices (``rank``, ``similarity``), packed outputs and Matryoshka sizes.

Loading is ST's own, so its three on-disk formats (ST, PyLate, Stanford ``HF_ColBERT``) load as in ST. Queries
with ``query_expansion`` ``attend=False`` (classic ColBERT: expansion tokens read the query but nothing reads
them) run ST's own padded path; every other call runs packed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import sentence_transformers
import torch

from .. import _compat
from ..engine.config import EngineConfig
from ..engine.engine import Engine
from ..engine.errors import InputError
from ..engine.plan import Call
from ..late_interaction import MAX_ELEMENTS, PackedEmbeddings, maxsim, rank_scores
from ._fallback import call_reason
from ._inputs import text_items
from .base import PackedModel, split_arguments
from .heads import MultiVectorOptions
from .plans import multi_vector_plan
from .pool import PoolMixin

logger = logging.getLogger("st_backend")


def _as_rows(embeddings) -> list | PackedEmbeddings | None:
    """Ragged per-input embeddings as a list of 2D rows (or PackedEmbeddings); None for other layouts."""
    if isinstance(embeddings, PackedEmbeddings):
        return embeddings
    if isinstance(embeddings, (torch.Tensor, np.ndarray)) and embeddings.ndim == 2:
        return [embeddings]  # one input, as ST scores it
    if isinstance(embeddings, (list, tuple)) and all(
        isinstance(e, (torch.Tensor, np.ndarray)) and e.ndim == 2 for e in embeddings
    ):
        return list(embeddings)
    return None


class MultiVectorEncoder(PackedModel, PoolMixin, sentence_transformers.MultiVectorEncoder):
    """Drop-in ``sentence_transformers.MultiVectorEncoder``.

    engine: EngineConfig for the packed engine. truncate_dim: keep the first dimensions of every token vector
    (also per call); with a Normalize step at the end of the pipeline, or normalize_embeddings=True, truncated
    vectors are re-normalised. matryoshka_dimensions / matryoshka_strict: as for SentenceTransformer.
    """

    def __init__(
        self,
        *args: Any,
        engine: EngineConfig | None = None,
        truncate_dim: int | None = None,
        matryoshka_dimensions: Sequence[int] | None = None,
        matryoshka_strict: bool | None = None,
        is_matryoshka: bool | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs = _compat.init_kwargs(kwargs)
        if _compat.MVE_TRUNCATES:
            kwargs["truncate_dim"] = truncate_dim
        super().__init__(*args, **kwargs)
        if not _compat.MVE_TRUNCATES:  # ST 6.2: the load-time default and the saved one, as ST 6.3 keeps them
            self.truncate_dim = (
                truncate_dim if truncate_dim is not None else getattr(self, "_st_config", {}).get("truncate_dim")
            )
        hf_config = getattr(getattr(self[0], "model", None), "config", None) if len(self) else None
        self._init_matryoshka(matryoshka_dimensions, matryoshka_strict, is_matryoshka, hf_config)
        self.matryoshka.check(self.truncate_dim, _compat.untruncated_dimension(self), self)
        self._init_packed(engine)

    def _get_model_config(self) -> dict[str, Any]:
        config = super()._get_model_config()
        if self.truncate_dim is not None:  # ST 6.3 writes it too; on 6.2 it is kept for 6.3 and for us
            config["truncate_dim"] = self.truncate_dim
        return config

    def engine_for(self, task: str | None = None) -> Engine | str:
        """The engine that serves ``task``, or the reason its calls run ST's own path."""
        return self._packed_engine(task, lambda: multi_vector_plan(list(self), task))

    # -- encoding ---------------------------------------------------------------------------------------------

    def encode(self, inputs, *args: Any, truncate_dim: int | None = None, **kwargs: Any):
        truncate_dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        self.matryoshka.check(truncate_dim, _compat.untruncated_dimension(self), self)
        if _compat.MVE_TRUNCATES:  # ST 6.3 passes truncate_dim on to _inference, which truncates after pooling
            return super().encode(inputs, *args, truncate_dim=truncate_dim, **kwargs)
        # ST 6.2 knows no truncate_dim: truncate its result as 6.3 does (after pooling, then L2-normalise).
        result = super().encode(inputs, *args, **kwargs)
        if truncate_dim is None:
            return result
        if kwargs.get("output_value", "token_embeddings") is None:
            for features in result if isinstance(result, list) else [result]:
                features["token_embeddings"] = _truncated(features["token_embeddings"], truncate_dim)
            return result
        return (
            [_truncated(e, truncate_dim) for e in result]
            if isinstance(result, list)
            else _truncated(result, truncate_dim)
        )

    def _why_not_call(self, output_value: str | None, kwargs: dict) -> str | None:
        if output_value is None:
            return "output_value=None returns ST's full per-input feature dicts"
        if kwargs.get("max_length") is not None:
            return "a per-call max_length"
        return call_reason(self, kwargs, frozenset({"max_length"}))

    @torch.inference_mode()
    def _inference(self, inputs: list, **arguments: Any):
        a, kwargs = split_arguments(arguments, ST_ARGUMENTS)
        task, token_pooling = a.get("task"), a.get("token_pooling")
        engine = self.engine_for(task)
        reason = engine if isinstance(engine, str) else self._why_not_call(a.get("output_value"), kwargs)
        texts = _texts(inputs) if reason is None else None
        reason = texts if isinstance(texts, str) else reason
        if reason is not None:
            return self._st_path(reason, inputs, arguments)
        if not inputs:
            return []
        packed = self._encode_packed(
            engine, texts, a.get("prompt"), task, a.get("normalize_embeddings", False), a.get("device")
        )
        rows = packed.to_list()
        if token_pooling is not None:
            if token_pooling.applies_to(task) and any(isinstance(m, _compat.BaseTokenPooling) for m in self):
                logger.warning("st_backend: the per-call token_pooling pools further on top of the model's own")
            rows = token_pooling.pool(rows, task=task)
        if a.get("truncate_dim") is not None:
            rows = [_truncated(r, a["truncate_dim"]) for r in rows]
        return [r.cpu() for r in rows] if a.get("save_to_cpu") else rows

    def _encode_packed(self, engine, texts, prompt, task, normalize, device) -> PackedEmbeddings:
        device = self._resolve_inference_device(device)
        self.eval()
        call = Call(texts, prompt, outputs="ragged", options=MultiVectorOptions(task, normalize))
        result = engine.run(call, device)
        if result.filled:
            logger.warning(
                "st_backend: %d queries filled the whole query_expansion length; their content beyond it was cut "
                "(as in ST, queries are always processed at that width).",
                result.filled,
            )
        return result.outputs

    def encode_packed(
        self,
        inputs: Sequence[str],
        task: str | None = "document",
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        device: str | torch.device | None = None,
        truncate_dim: int | None = None,
    ) -> PackedEmbeddings:
        """Token vectors of every input as one (total_tokens, dim) matrix with offsets, in input order, for
        storing without padding. ``task`` picks the prompt, lengths and masking as encode_query/encode_document."""
        if prompt_name is None and prompt is None and task is not None:
            prompt_name = next((p for p in _TASK_PROMPTS.get(task, (task,)) if p in self.prompts), None)
        engine = self.engine_for(task)
        truncating = truncate_dim is not None or self.truncate_dim is not None
        texts = _texts(list(inputs))
        if isinstance(engine, str) or truncating or isinstance(texts, str):
            rows = self.encode(
                list(inputs),
                prompt_name=prompt_name,
                prompt=prompt,
                batch_size=batch_size,
                normalize_embeddings=normalize_embeddings,
                device=device,
                task=task,
                truncate_dim=truncate_dim,
            )
            return PackedEmbeddings.from_list(rows)
        with torch.inference_mode():
            prompt = self._resolve_prompt(prompt, prompt_name)
            return self._encode_packed(engine, texts, prompt, task, normalize_embeddings, device)

    # -- scoring ----------------------------------------------------------------------------------------------

    def similarity(self, embeddings1, embeddings2, **kwargs: Any) -> torch.Tensor:
        """As ST's, computed on packed document matrices when both sides are ragged rows (lists of 2D tensors or
        arrays, PackedEmbeddings) and no masks are given; padded 3D inputs and masks go to ST's maxsim."""
        a, b = _as_rows(embeddings1), _as_rows(embeddings2)
        if a is None or b is None or set(kwargs) - {"device", "chunk_elements", "length_normalize"}:
            return super().similarity(embeddings1, embeddings2, **kwargs)
        normalize = kwargs.get("length_normalize", self.similarity_fn_name == "meanmaxsim")
        device = kwargs.get("device")
        if device is None:
            device = _rows_device(b) or _rows_device(a) or "cpu"
        scores = maxsim(
            a, b, length_normalize=normalize, max_elements=kwargs.get("chunk_elements") or MAX_ELEMENTS, device=device
        )
        return scores.to(_rows_device(b) or scores.device)

    def rank(
        self,
        query: str | torch.Tensor | np.ndarray,
        documents: Sequence[str] | PackedEmbeddings | Sequence[torch.Tensor],
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int = 32,
        max_elements: int = MAX_ELEMENTS,
        device: str | torch.device | None = None,
    ) -> list[dict]:
        """Documents ordered by MaxSim (MeanMaxSim when ``similarity_fn_name`` says so) against ``query``, best
        first, as CrossEncoder.rank: ``[{"corpus_id", "score"(, "text")}]``; equal scores keep input order.

        query / documents: texts (encoded here, documents packed without padding) or their token embeddings.
        Scoring holds one (query tokens x chunk tokens) block of at most ``max_elements`` at a time.
        """
        texts = (
            documents if isinstance(documents, (list, tuple)) and all(isinstance(d, str) for d in documents) else None
        )
        if return_documents and texts is None:
            raise ValueError("return_documents=True needs the documents as texts")
        if isinstance(documents, (list, tuple)) and len(documents) == 0:
            return []
        if texts is not None:
            docs = self.encode_packed(list(texts), task="document", batch_size=batch_size, device=device)
        else:
            docs = _as_rows(documents)
            if docs is None:
                raise InputError("documents must be texts, PackedEmbeddings or a list of (tokens, dim) embeddings")
        if isinstance(query, str):
            q = self.encode_query([query], batch_size=batch_size, device=device)
        elif isinstance(query, (torch.Tensor, np.ndarray)) and query.ndim == 2:
            q = [query]
        else:
            raise InputError(f"query must be a string or one (tokens, dim) embedding, not {type(query).__name__}")
        scores = maxsim(
            q,
            docs,
            length_normalize=self.similarity_fn_name == "meanmaxsim",
            max_elements=max_elements,
            device=_rows_device(docs) if device is None else device,
        )[0]
        results = [{"corpus_id": i, "score": s} for i, s in rank_scores(scores, top_k)]
        if return_documents:
            for r in results:
                r["text"] = texts[r["corpus_id"]]
        return results


ST_ARGUMENTS = frozenset(
    {
        "prompt",
        "batch_size",
        "show_progress_bar",
        "output_value",
        "save_to_cpu",
        "normalize_embeddings",
        "token_pooling",
        "truncate_dim",
        "task",
        "device",
    }
)
_TASK_PROMPTS = {"document": ("document", "passage", "corpus"), "query": ("query",)}


def _truncated(rows, dim: int):
    """The first ``dim`` dimensions of token vectors, L2-normalised again (ST 6.3's truncate_dim)."""
    if isinstance(rows, np.ndarray):
        return _compat.normalize_token_vectors(torch.from_numpy(rows[..., :dim])).numpy()
    return _compat.normalize_token_vectors(rows[..., :dim])


def _rows_device(rows) -> torch.device | None:
    if isinstance(rows, PackedEmbeddings):
        return rows.values.device
    first = rows[0] if len(rows) else None
    return first.device if isinstance(first, torch.Tensor) else None


def _texts(inputs: list) -> list | str:
    """The inputs as texts for the engine, or why they need ST's own path."""
    items = text_items(inputs)
    if not isinstance(items, str) and any(isinstance(item, tuple) for item in items):
        return "text pairs are tokenized together by ST's processor"
    return items
