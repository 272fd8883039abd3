"""BGE-M3-style multi-output encoding: dense, sparse (lexical weights) and ColBERT vectors from one packed forward.

A BGE-M3 checkpoint is an XLM-RoBERTa model plus two heads saved beside it: ``colbert_linear.pt`` (hidden ->
colbert dim) and ``sparse_linear.pt`` (hidden -> 1). Outputs follow FlagEmbedding's ``BGEM3FlagModel.encode``:
``dense_vecs`` the normalised CLS state; ``lexical_weights`` one ``{token id (str): weight}`` dict per text, the
max of relu(sparse head) over each id's occurrences, special tokens (cls, eos, pad, unk) and zero weights left out;
``colbert_vecs`` the ColBERT head on every token but the first, normalised.

``BGEM3FlagModel``'s other entry points are here too: ``use_fp16`` / ``use_bf16`` at load, ``encode_queries`` /
``encode_corpus`` (instructions, query / passage max lengths), ``compute_score`` (dense, sparse, ColBERT and
weighted sums over sentence pairs), ``convert_id_to_token`` and ``compute_lexical_matching_score`` on lists.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

import st_backend._compat as _compat

from .engine.architectures import spec_for
from .engine.config import EngineConfig
from .engine.engine import Engine
from .engine.errors import InputError
from .engine.plan import Call, Plan
from .models.plans import why_not_transformer

HEADS = {
    "colbert_linear.pt": "the ColBERT head (hidden -> ColBERT dim) behind return_colbert_vecs and the 'colbert' score",
    "sparse_linear.pt": "the sparse head (hidden -> 1) behind return_sparse, the lexical weights and the 'sparse' score",
}


def _head(path: str, name: str) -> torch.nn.Linear:
    file = os.path.join(path, name)
    if not os.path.isfile(file):
        where = "beside the model" if os.path.isdir(path) else "(not a local directory: pass the checkpoint's folder)"
        raise FileNotFoundError(
            f"{path}: no {name} {where}: it holds {HEADS[name]}. A BGE-M3 checkpoint saves both "
            f"{' and '.join(HEADS)} next to the XLM-RoBERTa weights (FlagEmbedding would initialise a missing head at "
            "random, which only training may do); for dense vectors alone, load the model with "
            "st_backend.SentenceTransformer."
        )
    state = torch.load(file, map_location="cpu", weights_only=True)
    out_features, in_features = state["weight"].shape
    head = torch.nn.Linear(in_features, out_features, bias="bias" in state)
    head.load_state_dict(state)
    return head


class BGEM3Encoder:
    """FlagEmbedding's ``BGEM3FlagModel`` on the packed engine: ``encode`` / ``encode_queries`` / ``encode_corpus``
    (dense, sparse and ColBERT outputs), ``compute_score``, ``convert_id_to_token``, ``compute_lexical_matching_score``,
    ``colbert_score``.

    use_fp16 / use_bf16: run in float16 / bfloat16 (bfloat16 first) on an accelerator; on CPU it runs in float32,
    as FlagEmbedding does. ``engine=EngineConfig(dtype=...)``, when its dtype is set, decides instead. Outputs keep
    the dtype the model runs in (float16 arrays from a float16 model, as FlagEmbedding's), bfloat16 as float32.
    devices: FlagEmbedding's name for ``device`` (one device: a string, a CUDA index or a list of one).
    query_instruction_for_retrieval / query_instruction_format (and the passage_ pair): the instruction
    ``encode_queries`` (``encode_corpus``) puts before each text, ``format.format(instruction, text)``.
    batch_size, query_max_length, passage_max_length, return_dense, return_sparse, return_colbert_vecs: the
    defaults of the encode and score calls, as FlagEmbedding's.
    """

    def __init__(
        self,
        model_name_or_path: str,
        device: str | None = None,
        normalize_embeddings: bool = True,
        engine: EngineConfig | None = None,
        *,
        use_fp16: bool = True,
        use_bf16: bool = False,
        devices: str | int | Sequence[str | int] | None = None,
        query_instruction_for_retrieval: str | None = None,
        query_instruction_format: str = "{}{}",
        passage_instruction_for_retrieval: str | None = None,
        passage_instruction_format: str = "{}{}",
        batch_size: int = 256,
        query_max_length: int = 512,
        passage_max_length: int = 512,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert_vecs: bool = False,
    ) -> None:
        path = str(model_name_or_path)
        device = _one_device(device, devices)
        # The heads first: a missing one fails before the model loads.
        self.colbert_linear = _head(path, "colbert_linear.pt")
        self.sparse_linear = _head(path, "sparse_linear.pt")
        self.transformer = _compat.Transformer(path)
        reason = why_not_transformer(self.transformer)
        if reason:
            raise ValueError(f"{path}: the packed engine cannot run this model: {reason}")
        self.normalize_embeddings = normalize_embeddings
        self.use_fp16, self.use_bf16 = use_fp16, use_bf16
        self.query_instruction_for_retrieval = query_instruction_for_retrieval
        self.query_instruction_format = query_instruction_format
        self.passage_instruction_for_retrieval = passage_instruction_for_retrieval
        self.passage_instruction_format = passage_instruction_format
        self.batch_size = batch_size
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length
        self.return_dense = return_dense
        self.return_sparse = return_sparse
        self.return_colbert_vecs = return_colbert_vecs
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        config = engine if engine is not None else EngineConfig()
        if config.dtype is not None:
            dtype = config.load_dtype(self.device, False, torch.float32)
        elif self.device.type == "cpu":
            dtype = torch.float32  # FlagEmbedding casts the model to float32 on CPU whatever use_fp16 says
        else:
            dtype = torch.bfloat16 if use_bf16 else torch.float16 if use_fp16 else None
        for module in (self.transformer, self.colbert_linear, self.sparse_linear):
            module.to(self.device).eval()
            if dtype is not None:
                module.to(dtype)
        tokenizer = self.transformer.tokenizer
        special = (tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id)
        self._unused = torch.tensor([i for i in special if i is not None], dtype=torch.int64)
        plan = Plan(
            model=self.transformer.model,
            tokenizer=tokenizer,
            arch=spec_for(self.transformer.model.config),
            head=self._head,
            max_length=lambda call: call.options["max_length"],
            description={"task": "bge-m3"},
        )
        self.engine = Engine(plan, config)

    def _head(self, hidden: torch.Tensor, batch, call: Call) -> dict:
        """FlagEmbedding's three outputs of one packed batch, in the batch's order."""
        asked, out = call.options, {}
        starts = batch.cu_seqlens[:-1].long()
        if asked["dense"]:
            cls = hidden[starts]
            out["dense"] = F.normalize(cls, dim=-1) if self.normalize_embeddings else cls
        lengths = batch.host_lengths.tolist()
        if asked["sparse"]:
            weights = torch.relu(self.sparse_linear(hidden)).squeeze(-1)
            keep = (weights > 0) & ~torch.isin(batch.input_ids, self._unused.to(hidden.device))
            out["sparse"] = [
                _lexical_weights(ids[k].numpy(), w[k].numpy())
                for ids, w, k in zip(
                    torch.split(batch.input_ids.cpu(), lengths),
                    torch.split(_host(weights), lengths),
                    torch.split(keep.cpu(), lengths),
                )
            ]
        if asked["colbert"]:
            not_first = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
            not_first[starts] = False
            vecs = self.colbert_linear(hidden[not_first])
            vecs = F.normalize(vecs, dim=-1) if self.normalize_embeddings else vecs
            out["colbert"] = [rows.numpy() for rows in torch.split(_host(vecs), [m - 1 for m in lengths])]
        return out

    def half(self) -> BGEM3Encoder:
        for module in (self.transformer, self.colbert_linear, self.sparse_linear):
            module.half()
        return self

    def encode_queries(
        self,
        queries: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        return_dense: bool | None = None,
        return_sparse: bool | None = None,
        return_colbert_vecs: bool | None = None,
    ) -> dict:
        """``encode`` of the queries with the query instruction and ``query_max_length`` (FlagEmbedding's)."""
        return self.encode(
            _instructed(queries, self.query_instruction_for_retrieval, self.query_instruction_format),
            batch_size,
            self.query_max_length if max_length is None else max_length,
            return_dense,
            return_sparse,
            return_colbert_vecs,
        )

    def encode_corpus(
        self,
        corpus: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        return_dense: bool | None = None,
        return_sparse: bool | None = None,
        return_colbert_vecs: bool | None = None,
    ) -> dict:
        """``encode`` of the passages with the passage instruction and ``passage_max_length`` (FlagEmbedding's)."""
        return self.encode(
            _instructed(corpus, self.passage_instruction_for_retrieval, self.passage_instruction_format),
            batch_size,
            self.passage_max_length if max_length is None else max_length,
            return_dense,
            return_sparse,
            return_colbert_vecs,
        )

    @torch.inference_mode()
    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        return_dense: bool | None = None,
        return_sparse: bool | None = None,
        return_colbert_vecs: bool | None = None,
    ) -> dict:
        """FlagEmbedding's ``encode``: ``{"dense_vecs", "lexical_weights", "colbert_vecs"}``, None for what was not
        asked for; None arguments take the defaults given at load (``max_length``: ``passage_max_length``).

        ``batch_size`` is accepted for FlagEmbedding compatibility and ignored: the engine's token budget
        (``EngineConfig.max_batch_tokens``) decides the packed batches, and the outputs do not depend on them."""
        max_length = self.passage_max_length if max_length is None else max_length
        return_dense = self.return_dense if return_dense is None else return_dense
        return_sparse = self.return_sparse if return_sparse is None else return_sparse
        return_colbert_vecs = self.return_colbert_vecs if return_colbert_vecs is None else return_colbert_vecs
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"sentences[{i}] is {type(text).__name__}; BGE-M3 encodes strings")
        asked = {"dense": return_dense, "sparse": return_sparse, "colbert": return_colbert_vecs}
        kinds = {"dense": "rows", "sparse": "items", "colbert": "items"}
        options = {"max_length": max_length, **asked}
        outputs = {name: kind for name, kind in kinds.items() if asked[name]}
        if texts and outputs:
            got = self.engine.run(Call(texts, outputs=outputs, options=options), self.device).outputs
        else:
            got = {}
        dense, sparse, colbert = got.get("dense"), got.get("sparse", []), got.get("colbert", [])
        out = {
            "dense_vecs": _host(dense).numpy() if return_dense and dense is not None else None,
            "lexical_weights": sparse if return_sparse else None,
            "colbert_vecs": colbert if return_colbert_vecs else None,
        }
        if return_dense and dense is None:
            empty = torch.empty(0, self.transformer.get_embedding_dimension(), dtype=self.sparse_linear.weight.dtype)
            out["dense_vecs"] = _host(empty).numpy()
        if single:
            out = {k: (v[0] if v is not None else None) for k, v in out.items()}
        return out

    def compute_score(
        self,
        sentence_pairs: Sequence[tuple[str, str]] | tuple[str, str],
        batch_size: int | None = None,
        max_query_length: int | None = None,
        max_passage_length: int | None = None,
        weights_for_different_modes: Sequence[float] | None = None,
    ) -> dict[str, list[float] | float] | list:
        """FlagEmbedding's ``compute_score``: per (query, passage) pair, the dense score (dot product of the dense
        vectors), the sparse score (lexical matching score), the ColBERT score (``colbert_score``) and their weighted
        means "sparse+dense" and "colbert+sparse+dense", with ``weights_for_different_modes`` = [dense, sparse,
        colbert] weights (default [1, 1, 1]). Lists of floats, one per pair; floats for one pair given alone; [] for
        no pairs. The query is not given the query instruction (FlagEmbedding's). ``batch_size``: ignored, as in
        ``encode``. FlagEmbedding pads each batch's passages with zero ColBERT vectors, so a query token whose best
        similarity is negative scores 0 against a passage shorter than its batch's longest; here every passage is
        scored on its own vectors, as ``colbert_score`` does, whatever the batch."""
        if isinstance(sentence_pairs, list) and not sentence_pairs:
            return []
        one = isinstance(sentence_pairs, tuple | list) and bool(sentence_pairs) and isinstance(sentence_pairs[0], str)
        pairs = [sentence_pairs] if one else list(sentence_pairs)
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                raise InputError(
                    f"sentence_pairs[{i}] is {type(pair).__name__} ({pair!r:.60}); compute_score takes "
                    "(query, passage) pairs of strings"
                )
        if weights_for_different_modes is None:
            weights = [1.0, 1.0, 1.0]
        else:
            weights = [float(w) for w in weights_for_different_modes]
            if len(weights) != 3:
                raise ValueError(
                    f"weights_for_different_modes must be 3 weights, [dense, sparse, colbert], got "
                    f"{list(weights_for_different_modes)}"
                )
        every = {"return_dense": True, "return_sparse": True, "return_colbert_vecs": True}
        max_query_length = self.query_max_length if max_query_length is None else max_query_length
        max_passage_length = self.passage_max_length if max_passage_length is None else max_passage_length
        q = self.encode([p[0] for p in pairs], max_length=max_query_length, **every)
        d = self.encode([p[1] for p in pairs], max_length=max_passage_length, **every)
        dense = np.einsum("ij,ij->i", q["dense_vecs"].astype(np.float32), d["dense_vecs"].astype(np.float32))
        sparse = np.array(
            [
                sum(float(w) * float(b[token]) for token, w in a.items() if token in b)
                for a, b in zip(q["lexical_weights"], d["lexical_weights"])
            ],
            np.float32,
        )
        colbert = np.array(
            [
                self.colbert_score(a.astype(np.float32), b.astype(np.float32))
                for a, b in zip(q["colbert_vecs"], d["colbert_vecs"])
            ],
            np.float32,
        )
        w_dense, w_sparse, w_colbert = weights
        scores = {
            "colbert": colbert,
            "sparse": sparse,
            "dense": dense,
            "sparse+dense": (sparse * w_sparse + dense * w_dense) / (w_sparse + w_dense),
            "colbert+sparse+dense": (colbert * w_colbert + sparse * w_sparse + dense * w_dense) / sum(weights),
        }
        return {k: (v[0].item() if one else v.tolist()) for k, v in scores.items()}

    def convert_id_to_token(self, lexical_weights: dict | Sequence[dict]) -> dict | list[dict]:
        """Lexical weights keyed by token text instead of id (FlagEmbedding's: one dict for a dict or a list of
        one, else a list; ids that decode to the same text keep the last weight)."""
        items = [lexical_weights] if isinstance(lexical_weights, dict) else list(lexical_weights)
        decode = self.transformer.tokenizer.decode
        out = [{decode([int(token)]): w for token, w in item.items()} for item in items]
        return out[0] if len(out) == 1 else out

    @staticmethod
    def compute_lexical_matching_score(weights1: dict | list[dict], weights2: dict | list[dict]) -> float | np.ndarray:
        """Sum over the token ids both share of the product of their weights; two lists of dicts: the
        (len(weights1), len(weights2)) array of every pair's score (FlagEmbedding's)."""
        if isinstance(weights1, dict) and isinstance(weights2, dict):
            return float(_lexical_score(weights1, weights2))
        if isinstance(weights1, list) and isinstance(weights2, list):
            return np.array([[_lexical_score(a, b) for b in weights2] for a in weights1])
        raise InputError(
            "compute_lexical_matching_score takes two lexical-weight dicts or two lists of them, got "
            f"{type(weights1).__name__} and {type(weights2).__name__}"
        )

    @staticmethod
    def colbert_score(q_reps: np.ndarray, p_reps: np.ndarray) -> float:
        """Mean over query vectors of their best document-vector similarity (FlagEmbedding's colbert_score)."""
        scores = torch.from_numpy(q_reps) @ torch.from_numpy(p_reps).T
        return float(scores.max(-1).values.sum() / q_reps.shape[0])


def _lexical_score(weights1: dict, weights2: dict):
    """FlagEmbedding's sum (0 when no token is shared), in the weights' own type."""
    score = 0
    for token, w in weights1.items():
        if token in weights2:
            score += w * weights2[token]
    return score


def _host(t: torch.Tensor) -> torch.Tensor:
    """On the CPU in the dtype it was computed in (bfloat16, which numpy lacks, as float32)."""
    return (t.float() if t.dtype == torch.bfloat16 else t).cpu()


def _instructed(texts: str | Sequence[str], instruction: str | None, fmt: str) -> str | list[str]:
    """FlagEmbedding's get_detailed_instruct: ``fmt.format(instruction, text)`` ("\\n" in fmt read as a newline)."""
    if instruction is None:
        return texts
    fmt = fmt.replace("\\n", "\n")
    return fmt.format(instruction, texts) if isinstance(texts, str) else [fmt.format(instruction, t) for t in texts]


def _one_device(device: str | None, devices: object) -> str | None:
    if devices is None:
        return device
    if device is not None:
        raise ValueError(f"give device= or FlagEmbedding's devices=, not both (got {device!r} and {devices!r})")
    items = list(devices) if isinstance(devices, list | tuple) else [devices]
    if len(items) != 1 or not isinstance(items[0], str | int) or isinstance(items[0], bool):
        raise ValueError(f"BGEM3Encoder runs on one device; devices={devices!r} names {len(items)}")
    return f"cuda:{items[0]}" if isinstance(items[0], int) else items[0]


def _lexical_weights(ids: np.ndarray, weights: np.ndarray) -> dict[str, np.float32]:
    """{token id: max weight over its occurrences}, in first-occurrence order as FlagEmbedding builds it."""
    out: dict[str, np.float32] = {}
    for token, w in zip(ids.tolist(), weights):
        key = str(token)
        if w > out.get(key, 0):
            out[key] = w
    return out
