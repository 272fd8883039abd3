"""BGE-M3-style multi-output encoding: dense, sparse (lexical weights) and ColBERT vectors from one packed forward.

A BGE-M3 checkpoint is an XLM-RoBERTa model plus two heads saved beside it: ``colbert_linear.pt`` (hidden ->
colbert dim) and ``sparse_linear.pt`` (hidden -> 1). Outputs follow FlagEmbedding's ``BGEM3FlagModel.encode``:
``dense_vecs`` the normalised CLS state; ``lexical_weights`` one ``{token id (str): weight}`` dict per text, the
max of relu(sparse head) over each id's occurrences, special tokens (cls, eos, pad, unk) and zero weights left out;
``colbert_vecs`` the ColBERT head on every token but the first, normalised.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import _compat
from .engine.architectures import spec_for
from .engine.base import PackedEngine
from .engine.config import EngineConfig
from .engine.plan import TransformerPlan, why_not_transformer


def _head(path: str, name: str) -> torch.nn.Linear:
    state = torch.load(os.path.join(path, name), map_location="cpu", weights_only=True)
    out_features, in_features = state["weight"].shape
    head = torch.nn.Linear(in_features, out_features, bias="bias" in state)
    head.load_state_dict(state)
    return head


class BGEM3Encoder:
    """``encode(texts, return_dense=..., return_sparse=..., return_colbert_vecs=...)`` as FlagEmbedding's, packed."""

    def __init__(
        self,
        model_name_or_path: str,
        device: str | None = None,
        normalize_embeddings: bool = True,
        engine: EngineConfig | None = None,
    ) -> None:
        path = str(model_name_or_path)
        self.transformer = _compat.Transformer(path)
        reason = why_not_transformer(self.transformer)
        if reason:
            raise ValueError(f"{path}: the packed engine cannot run this model: {reason}")
        self.colbert_linear = _head(path, "colbert_linear.pt")
        self.sparse_linear = _head(path, "sparse_linear.pt")
        self.normalize_embeddings = normalize_embeddings
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        for module in (self.transformer, self.colbert_linear, self.sparse_linear):
            module.to(self.device).eval()
        plan = TransformerPlan(self.transformer, spec_for(self.transformer.model.config))
        self.engine = PackedEngine(plan, engine if engine is not None else EngineConfig())
        tokenizer = self.transformer.tokenizer
        special = (tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id)
        self._unused = torch.tensor([i for i in special if i is not None], dtype=torch.int64)

    def half(self) -> BGEM3Encoder:
        for module in (self.transformer, self.colbert_linear, self.sparse_linear):
            module.half()
        return self

    @torch.inference_mode()
    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 256,
        max_length: int = 512,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert_vecs: bool = False,
    ) -> dict:
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"sentences[{i}] is {type(text).__name__}; BGE-M3 encodes strings")
        n = len(texts)
        dense: torch.Tensor | None = None
        sparse: list = [None] * n
        colbert: list = [None] * n
        unused = self._unused.to(self.device)
        for batch, hidden in self.engine.forward_all(
            n, lambda a, b: self.engine.tokenizer(texts[a:b], max_length), self.device, False, None
        ):
            starts = batch.cu_seqlens[:-1].long()
            if return_dense:
                cls = hidden[starts]
                cls = F.normalize(cls, dim=-1) if self.normalize_embeddings else cls
                dense = cls.new_empty((n, cls.shape[1])) if dense is None else dense
                dense[batch.index] = cls
            lengths = batch.host_lengths.tolist()
            if return_sparse:
                weights = torch.relu(self.sparse_linear(hidden)).squeeze(-1)
                keep = (weights > 0) & ~torch.isin(batch.input_ids, unused)
                for i, ids, w, k in zip(
                    batch.indices,
                    torch.split(batch.input_ids.cpu(), lengths),
                    torch.split(weights.float().cpu(), lengths),
                    torch.split(keep.cpu(), lengths),
                ):
                    sparse[i] = _lexical_weights(ids[k].numpy(), w[k].numpy())
            if return_colbert_vecs:
                not_first = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
                not_first[starts] = False
                vecs = self.colbert_linear(hidden[not_first])
                vecs = F.normalize(vecs, dim=-1) if self.normalize_embeddings else vecs
                for i, rows in zip(batch.indices, torch.split(vecs.float().cpu(), [m - 1 for m in lengths])):
                    colbert[i] = rows.numpy()
        out = {
            "dense_vecs": dense.float().cpu().numpy() if return_dense and dense is not None else None,
            "lexical_weights": sparse if return_sparse else None,
            "colbert_vecs": colbert if return_colbert_vecs else None,
        }
        if return_dense and dense is None:
            out["dense_vecs"] = np.zeros((0, self.transformer.get_embedding_dimension()), dtype=np.float32)
        if single:
            out = {k: (v[0] if v is not None else None) for k, v in out.items()}
        return out

    @staticmethod
    def compute_lexical_matching_score(weights1: dict, weights2: dict) -> float:
        return float(sum(w * weights2[token] for token, w in weights1.items() if token in weights2))

    @staticmethod
    def colbert_score(q_reps: np.ndarray, p_reps: np.ndarray) -> float:
        """Mean over query vectors of their best document-vector similarity (FlagEmbedding's colbert_score)."""
        scores = torch.from_numpy(q_reps) @ torch.from_numpy(p_reps).T
        return float(scores.max(-1).values.sum() / q_reps.shape[0])


def _lexical_weights(ids: np.ndarray, weights: np.ndarray) -> dict[str, np.float32]:
    """{token id: max weight over its occurrences}, in first-occurrence order as FlagEmbedding builds it."""
    out: dict[str, np.float32] = {}
    for token, w in zip(ids.tolist(), weights):
        key = str(token)
        if w > out.get(key, 0):
            out[key] = w
    return out
