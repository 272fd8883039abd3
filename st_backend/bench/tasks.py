"""What ``st-backend bench`` runs per task: how both sides load, the call a user writes without changing code (ST's
defaults), the tuned call, one input for latency, and how outputs are compared. One table, no per-task branches
in the runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..engine.plan import Call


def _tensor(out) -> torch.Tensor:
    """Any call's output (array, tensor, list of either) as one float32 CPU tensor of rows."""
    if isinstance(out, list):
        out = torch.cat([torch.as_tensor(np.asarray(o) if not isinstance(o, torch.Tensor) else o) for o in out])
    return torch.as_tensor(out).float().cpu().reshape(len(out), -1)


def min_cosine(ref, got) -> tuple[str, float]:
    ref, got = _tensor(ref), _tensor(got)
    return "min cosine", float(torch.nn.functional.cosine_similarity(ref, got).min())


def pearson(ref, got) -> tuple[str, float]:
    ref, got = _tensor(ref).numpy().ravel(), _tensor(got).numpy().ravel()
    return "pearson of scores", float(np.corrcoef(ref, got)[0, 1]) if len(ref) > 1 else float(np.isclose(ref, got))


def sparse_min_cosine(ref, got) -> tuple[str, float]:
    """Min cosine of SparseEncoder rows (sparse COO or dense), as dense rows."""
    dense = [o.to_dense() if isinstance(o, torch.Tensor) and o.is_sparse else o for o in (ref, got)]
    return min_cosine(*dense)


@dataclass(frozen=True)
class Task:
    unit: str
    plain_class: str  # the sentence_transformers class name; st_backend has one of the same name
    inputs: Callable[[list[str], object], list]  # (the corpus texts, bench's args) -> this task's inputs
    default_call: Callable  # (model, inputs) -> output, exactly as ST's docs write it
    tuned_call: Callable  # (model, inputs, batch_size) -> tensor
    compare: Callable  # (ref, got) -> (name, value)
    tokens: Callable  # (st_backend model, inputs) -> token counts per input (what the engine runs)


def _queries(n: int) -> list[str]:
    from .corpora import synthetic_corpus

    return synthetic_corpus(n, median_words=6, sigma=0.3, seed=1)


def embed_tokens(model, inputs: list) -> list[int]:
    """Tokens per input, as the engine counts them, or as ST's tokenizer does where calls run ST's own path."""
    engine = model.engine_for(None)
    if not isinstance(engine, str):
        return engine.tokenize(inputs).lengths
    step = 1024
    return [
        int(m.sum())
        for i in range(0, len(inputs), step)
        for m in model.preprocess(inputs[i : i + step])["attention_mask"]
    ]


#: Median words of rank's and rerank's queries: ~300 characters (mean 299 over 500 queries of seed 1).
QUERY_WORDS = 38
#: --num-queries / --docs-per-query where not given (rank, maxsim); rerank takes both or neither.
QUERY_SHAPE_DEFAULTS = {"num_queries": 100, "docs_per_query": 1000}


def query_shape(args) -> tuple[int, int]:
    """(--num-queries, --docs-per-query), each QUERY_SHAPE_DEFAULTS' value where not given."""
    queries, per = (getattr(args, name, None) for name in QUERY_SHAPE_DEFAULTS)
    return (
        queries if queries is not None else QUERY_SHAPE_DEFAULTS["num_queries"],
        per if per is not None else QUERY_SHAPE_DEFAULTS["docs_per_query"],
    )


def shape_given(args) -> bool:
    """Both --num-queries and --docs-per-query given explicitly."""
    return all(getattr(args, name, None) is not None for name in QUERY_SHAPE_DEFAULTS)


def shape_problem(args) -> str | None:
    """Why these --num-queries / --docs-per-query cannot run, or None."""
    given = [name for name in QUERY_SHAPE_DEFAULTS if getattr(args, name, None) is not None]
    if any(getattr(args, name) < 1 for name in given):
        return "--num-queries and --docs-per-query must be at least 1"
    if getattr(args, "task", None) == "rerank" and len(given) == 1:
        return "--task rerank takes --num-queries and --docs-per-query together (or neither: random pairs)"
    return None


def rank_inputs(texts: list[str], args) -> list[tuple[str, str]]:
    """``--num-queries`` queries of ~300 characters, each with its own ``--docs-per-query`` documents of the corpus
    (as many whole groups as the corpus holds), as (query, document) pairs grouped by query."""
    from .corpora import synthetic_corpus

    num_queries, per = query_shape(args)
    groups = max(1, min(num_queries, len(texts) // per))
    queries = synthetic_corpus(groups, median_words=QUERY_WORDS, sigma=0.2, seed=1)
    return [(queries[g], d) for g in range(groups) for d in texts[g * per : (g + 1) * per]]


def rerank_inputs(texts: list[str], args) -> list[tuple[str, str]]:
    """Pairs of different queries, one per text (ST's predict on mixed pairs); or, with both --num-queries and
    --docs-per-query given, rank_inputs' queries and documents interleaved round-robin (q0 d0, q1 d0, ..., q0 d1,
    q1 d1, ...): several queries' candidates in one ``predict``, as MTEB's reranking sends them."""
    if not shape_given(args):
        return list(zip(_queries(len(texts)), texts))
    grouped = rank_inputs(texts, args)
    if not grouped:
        return []
    per = min(query_shape(args)[1], len(grouped))  # one query may hold fewer documents than asked (a short corpus)
    groups = len(grouped) // per
    return [grouped[g * per + d] for d in range(per) for g in range(groups)]


def pairs_shape(pairs: list) -> dict:
    """{"queries", "docs_per_query", "order"} of (query, document) pairs: "grouped" when each query's pairs are
    consecutive, else "interleaved"."""
    queries = list(dict.fromkeys(q for q, _ in pairs))
    runs = 1 + sum(a[0] != b[0] for a, b in zip(pairs, pairs[1:]))
    return {
        "queries": len(queries),
        "docs_per_query": len(pairs) // max(1, len(queries)),
        "order": "grouped" if runs == len(queries) else "interleaved",
    }


def rank_call(model, pairs: list, batch_size: int | None = None) -> torch.Tensor:
    """``rank(query, documents)`` for each query's group, as a user writes it; the scores in document order."""
    out, start = [], 0
    while start < len(pairs):
        query = pairs[start][0]
        stop = start
        while stop < len(pairs) and pairs[stop][0] == query:
            stop += 1
        docs = [d for _, d in pairs[start:stop]]
        kwargs = {} if batch_size is None else {"batch_size": batch_size}
        ranked = model.rank(query, docs, **kwargs)
        out.append(torch.tensor([r["score"] for r in sorted(ranked, key=lambda r: r["corpus_id"])]))
        start = stop
    return torch.cat(out)


TASKS: dict[str, Task] = {
    "embed": Task(
        unit="texts",
        plain_class="SentenceTransformer",
        inputs=lambda texts, args: texts,
        default_call=lambda model, inputs: model.encode(inputs),
        tuned_call=lambda model, inputs, bs: model.encode(inputs, batch_size=bs, convert_to_tensor=True),
        compare=min_cosine,
        tokens=lambda model, inputs: embed_tokens(model, inputs),
    ),
    "rerank": Task(
        unit="pairs",
        plain_class="CrossEncoder",
        inputs=rerank_inputs,
        default_call=lambda model, inputs: model.predict(inputs),
        tuned_call=lambda model, inputs, bs: model.predict(
            inputs, batch_size=bs, activation_fn=torch.nn.Identity(), convert_to_tensor=True
        ),
        compare=pearson,
        tokens=lambda model, inputs: [len(ids) for ids in model.token_ids(inputs)],
    ),
    "rank": Task(
        unit="pairs",
        plain_class="CrossEncoder",
        inputs=rank_inputs,
        default_call=lambda model, inputs: rank_call(model, inputs),
        tuned_call=lambda model, inputs, bs: rank_call(model, inputs, bs),
        compare=pearson,
        tokens=lambda model, inputs: [len(ids) for ids in model.token_ids(inputs)],
    ),
    "colbert": Task(
        unit="texts",
        plain_class="MultiVectorEncoder",
        inputs=lambda texts, args: texts,
        default_call=lambda model, inputs: model.encode_document(inputs),
        tuned_call=lambda model, inputs, bs: torch.cat(model.encode_document(inputs, batch_size=bs)),
        compare=min_cosine,
        tokens=lambda model, inputs: (
            model.engine_for("document").tokenize(inputs, Call(inputs, model.prompts.get("document"))).lengths
        ),
    ),
    "sparse": Task(
        unit="texts",
        plain_class="SparseEncoder",
        inputs=lambda texts, args: texts,
        default_call=lambda model, inputs: model.encode(inputs),
        tuned_call=lambda model, inputs, bs: model.encode(inputs, batch_size=bs),
        compare=sparse_min_cosine,
        tokens=lambda model, inputs: embed_tokens(model, inputs),
    ),
}
