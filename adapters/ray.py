"""Ray Data on st_backend: callable classes for ``ray.data.Dataset.map_batches`` that load one model per actor
(in ``__init__``) and add one output column to every batch.

- ``Embed``: SentenceTransformer embeddings of a text column (as a query, a document, or with a prompt name).
- ``Rerank``: CrossEncoder scores of a (query column, document column) pair.
- ``TokenVectors``: MultiVectorEncoder (ColBERT) token vectors of a text column, one ragged row per text.

::

    import ray
    from st_backend.adapters.ray import Embed

    ds = ray.data.read_json("corpus.jsonl.gz")
    ds = ds.map_batches(
        Embed,
        fn_constructor_kwargs={"model": "path/to/model", "role": "document"},
        batch_size=256,                              # rows per call; each call is one packed encode
        compute=ray.data.ActorPoolStrategy(size=2),  # two actors, one model each (Ray < 2.51: concurrency=2)
        num_cpus=1,                                  # per actor; Ray sets its OMP_NUM_THREADS to this
        batch_format="pyarrow",                      # plain Arrow lists out: Parquet any reader can read
    )
    ds.write_parquet("embeddings/")

On GPUs: ``num_gpus=1`` per actor and ``"device": "cuda"`` in ``fn_constructor_kwargs`` (Ray makes the one GPU it
gives the actor ``cuda``). Pass the model as a path: a loaded model works too, but is pickled to every actor.

Output columns: with ``batch_format="pyarrow"``, embeddings are ``fixed_size_list<float32>[dim]``, token vectors
``list<fixed_size_list<float32>[dim]>`` (one row per text, one item per token) and scores ``float32`` (a
``fixed_size_list`` per label for several labels); with numpy batches (Ray's default) a 2D array (Ray's tensor
column), an object array of ``(tokens, dim)`` arrays, or a 1D array; with pandas, a column of arrays.

Installed as ``st_backend.adapters.ray``; needs ``ray[data]`` (``pip install "st-backend[ray]"``), imported by
Ray itself: st_backend never imports ray.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

ROLES = (None, "query", "document")


def _load(cls, model, device: str | None, model_kwargs: dict | None):
    if isinstance(model, (str, os.PathLike)):
        return cls(str(model), device=device, **(model_kwargs or {}))
    if model_kwargs:
        raise ValueError("model_kwargs apply when the model is loaded here: pass the model as a path or name")
    return model


def _encoder(model, role: str | None):
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return {None: model.encode, "query": model.encode_query, "document": model.encode_document}[role]


def _texts(batch, column: str) -> list[str]:
    names = list(batch.column_names if hasattr(batch, "column_names") else batch.keys())
    if column not in names:
        raise KeyError(f"the batch has no column {column!r} (it has {names}); pass the text column's name")
    if hasattr(batch, "column_names"):  # pyarrow.Table
        values = batch.column(column).to_pylist()
    else:  # dict of numpy arrays, or pandas
        values = list(batch[column])
    return ["" if v is None else str(v) for v in values]


def _arrow(values):
    import pyarrow as pa

    if isinstance(values, np.ndarray):
        if values.ndim == 1:
            return pa.array(values)
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    dim = values[0].shape[1] if values else 0
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32)
    flat = np.concatenate(values).reshape(-1) if values else np.zeros(0, np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.FixedSizeListArray.from_arrays(pa.array(flat), dim))


def _with_column(batch, name: str, values):
    """``batch`` with column ``name`` set to ``values`` (a (rows, ...) array, or a list of 2D arrays)."""
    if hasattr(batch, "column_names"):  # pyarrow.Table
        if name in batch.column_names:
            batch = batch.drop_columns([name])
        return batch.append_column(name, _arrow(values))
    if hasattr(batch, "iloc"):  # pandas
        batch = batch.copy(deep=False)
        batch[name] = list(values) if not (isinstance(values, np.ndarray) and values.ndim == 1) else values
        return batch
    batch = dict(batch)
    if isinstance(values, list):  # ragged: Ray stores an object array of arrays as a variable-shaped tensor
        column = np.empty(len(values), dtype=object)
        column[:] = values
        values = column
    batch[name] = values
    return batch


class Embed:
    """Embeddings of ``column`` into ``output_column``, ``(rows, dim)`` float32 per batch.

    model: a path or name, loaded as ``st_backend.SentenceTransformer(model, device=device, **model_kwargs)``
        (e.g. ``model_kwargs={"engine": EngineConfig(...)}``), or a loaded model.
    role: None (``encode``), ``"query"`` (``encode_query``) or ``"document"`` (``encode_document``): the model's
        query / document prompts apply as in ST. prompt_name / prompt: as for ``encode``.
    encode_kwargs: the rest of ``encode``'s arguments (``normalize_embeddings``, ``batch_size``,
        ``truncate_dim``, ...).
    """

    def __init__(
        self,
        model: Any,
        *,
        column: str = "text",
        output_column: str = "embedding",
        role: str | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        encode_kwargs: dict[str, Any] | None = None,
        device: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        from st_backend import SentenceTransformer

        self.model = _load(SentenceTransformer, model, device, model_kwargs)
        self.encode = _encoder(self.model, role)
        self.column, self.output_column = column, output_column
        self.kwargs = {"prompt_name": prompt_name, "prompt": prompt, **(encode_kwargs or {})}

    def __call__(self, batch):
        texts = _texts(batch, self.column)
        if not texts:  # ST returns a flat empty array: keep the column's (rows, dim) shape
            return _with_column(
                batch, self.output_column, np.zeros((0, self.model.get_embedding_dimension()), np.float32)
            )
        embeddings = self.encode(texts, convert_to_numpy=True, **self.kwargs)
        return _with_column(batch, self.output_column, np.asarray(embeddings))


class Rerank:
    """CrossEncoder scores of (``query_column``, ``document_column``) pairs into ``output_column``: float32,
    ``(rows,)`` for one label, ``(rows, labels)`` for several. model / device / model_kwargs: as for Embed,
    with ``st_backend.CrossEncoder``; predict_kwargs: ``predict``'s other arguments (``activation_fn``,
    ``batch_size``, ...)."""

    def __init__(
        self,
        model: Any,
        *,
        query_column: str = "query",
        document_column: str = "document",
        output_column: str = "score",
        prompt_name: str | None = None,
        prompt: str | None = None,
        predict_kwargs: dict[str, Any] | None = None,
        device: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        from st_backend import CrossEncoder

        self.model = _load(CrossEncoder, model, device, model_kwargs)
        self.query_column, self.document_column, self.output_column = query_column, document_column, output_column
        self.kwargs = {"prompt_name": prompt_name, "prompt": prompt, **(predict_kwargs or {})}

    def __call__(self, batch):
        pairs = list(zip(_texts(batch, self.query_column), _texts(batch, self.document_column)))
        scores = self.model.predict(pairs, convert_to_numpy=True, **self.kwargs) if pairs else np.zeros(0)
        return _with_column(batch, self.output_column, np.asarray(scores, dtype=np.float32))


class TokenVectors:
    """MultiVectorEncoder token vectors of ``column`` into ``output_column``: one ``(tokens, dim)`` float32 row
    per text, ragged. role: ``"document"`` (default), ``"query"`` or None, as ``encode_document`` /
    ``encode_query`` / ``encode``. model / device / model_kwargs / encode_kwargs: as for Embed, with
    ``st_backend.MultiVectorEncoder``."""

    def __init__(
        self,
        model: Any,
        *,
        column: str = "text",
        output_column: str = "token_vectors",
        role: str | None = "document",
        prompt_name: str | None = None,
        prompt: str | None = None,
        encode_kwargs: dict[str, Any] | None = None,
        device: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        from st_backend import MultiVectorEncoder

        self.model = _load(MultiVectorEncoder, model, device, model_kwargs)
        self.encode = _encoder(self.model, role)
        self.column, self.output_column = column, output_column
        self.kwargs = {"prompt_name": prompt_name, "prompt": prompt, **(encode_kwargs or {})}

    def __call__(self, batch):
        texts = _texts(batch, self.column)
        rows = self.encode(texts, convert_to_numpy=True, **self.kwargs) if texts else []
        return _with_column(batch, self.output_column, [np.asarray(r, dtype=np.float32) for r in rows])


__all__ = ["Embed", "Rerank", "TokenVectors"]
