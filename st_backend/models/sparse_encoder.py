"""``st_backend.SparseEncoder``: ST's SPLADE class with ``_inference`` on the packed engine.

A plain ``[MLMTransformer (or Transformer with transformer_task="fill-mask"), SpladePooling]`` pipeline runs
packed: the backbone on unpadded batches, the model's own masked-LM head on real tokens only, a bounded chunk
of logits at a time, then SpladePooling's activation and max / sum per input (models/heads.py sparse_head). Behind
a Router (inference-free SPLADE), each route is looked at alone: a document route of that shape runs packed, a
SparseStaticEmbedding query route runs ST's own path (a lookup, no transformer to pack). Outputs are ST's: sparse
COO rows stacked as ST stacks them, ``max_active_dims`` by ST's own top-k per row, dense rows with
``convert_to_sparse_tensor=False``. encode / encode_query / encode_document / similarity / decode are ST's.
"""

from __future__ import annotations

from typing import Any

import sentence_transformers
import torch
from sentence_transformers.sparse_encoder.modules import SpladePooling

from .. import _compat
from ..engine.config import EngineConfig
from ..engine.engine import Engine
from ..engine.plan import Call
from ._fallback import call_reason
from ._inputs import text_items
from .base import PackedModel, split_arguments
from .heads import SparseOptions
from .plans import sparse_plan
from .pool import PoolMixin


class SparseEncoder(PackedModel, PoolMixin, sentence_transformers.SparseEncoder):
    """Drop-in ``sentence_transformers.SparseEncoder``; engine settings come in as ``engine=EngineConfig(...)``."""

    def __init__(self, *args: Any, engine: EngineConfig | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **_compat.init_kwargs(kwargs))
        self._init_packed(engine)

    def engine_for(self, task: str | None = None) -> Engine | str:
        """The engine that serves ``task``, or the reason its calls run ST's own path."""
        return self._packed_engine(task, lambda: sparse_plan(self._modules_for(task), task))

    def _learn_dimension(self, task: str | None) -> None:
        """SpladePooling records its output size (the vocabulary) at its first forward, which a packed call does
        not run; record it as that forward would (get_embedding_dimension reads it), before the engine is looked
        up, so the changed setting does not rebuild it at the next call."""
        try:
            modules = self._modules_for(task)
        except ValueError:  # no route for this task: ST's path raises its own error
            return
        if len(modules) == 2 and isinstance(modules[1], SpladePooling) and modules[1].embedding_dimension is None:
            output = getattr(getattr(modules[0], "model", None), "get_output_embeddings", lambda: None)()
            if isinstance(output, torch.nn.Linear):
                modules[1].embedding_dimension = output.out_features

    def _inference(self, inputs: list, **arguments: Any):
        rows_only = arguments.pop("_st_rows", False)  # from _multi_process below: a list of rows, not one tensor
        out = self._packed_rows(inputs, arguments)
        if isinstance(out, str):
            out = self._st_path(out, inputs, arguments)
            return list(out) if rows_only else out
        if rows_only:
            return list(out)
        if not inputs:  # as ST: an empty tensor (sparse, unless asked for dense) on the output device
            device = "cpu" if arguments.get("save_to_cpu") else self._resolve_inference_device(arguments.get("device"))
            empty = torch.tensor([], device=device)
            return empty.to_sparse() if arguments.get("convert_to_sparse_tensor", True) else empty
        # Stacked outside inference mode, as ST stacks: a sparse tensor stacked inside it cannot be coalesced.
        return torch.stack(out) if isinstance(out, list) else out.clone()

    @torch.inference_mode()
    def _packed_rows(self, inputs: list, arguments: dict) -> list | torch.Tensor | str:
        """The call's rows (a list of 1D sparse rows, or dense (n, vocab)), or why it runs ST's own path."""
        a, kwargs = split_arguments(arguments, ST_ARGUMENTS)
        task = kwargs.get("task")
        if inputs:
            self._learn_dimension(task)
        engine = self.engine_for(task)
        reason = engine if isinstance(engine, str) else call_reason(self, kwargs, frozenset({"task"}))
        items = text_items(inputs) if reason is None else None
        reason = items if isinstance(items, str) else reason
        if reason is not None or not inputs:
            return reason or []
        self.eval()
        sparse, to_cpu = a.get("convert_to_sparse_tensor", True), a.get("save_to_cpu", False)
        call = Call(
            items,
            a.get("prompt"),
            outputs="items" if sparse else "rows",
            options=SparseOptions(a.get("max_active_dims"), sparse, to_cpu),
            save_to_cpu=to_cpu,
            show_progress_bar=a.get("show_progress_bar", False),
        )
        return engine.run(call, self._resolve_inference_device(a.get("device"))).outputs

    def _multi_process(
        self, inputs, show_progress_bar: bool | None = True, pool=None, device=None, chunk_size=None, **kwargs: Any
    ):
        # st_backend's pool puts rows back in input order by indexing, which sparse COO tensors do not support:
        # its workers send lists of sparse rows, stacked here as ST stacks them. A pool plain ST started keeps its
        # own chunks and cat; dense rows are indexed as any tensor.
        if (pool is not None and "workers" not in pool) or not kwargs.get("convert_to_sparse_tensor", True):
            return super()._multi_process(inputs, show_progress_bar, pool, device, chunk_size, **kwargs)
        rows = super()._multi_process(inputs, show_progress_bar, pool, device, chunk_size, _st_rows=True, **kwargs)
        return torch.stack(rows) if len(rows) else rows


# ST's own _inference arguments; everything else is a module kwarg it passes through (task, processing_kwargs).
ST_ARGUMENTS = frozenset(
    {
        "prompt",
        "batch_size",
        "show_progress_bar",
        "convert_to_sparse_tensor",
        "save_to_cpu",
        "max_active_dims",
        "device",
    }
)
