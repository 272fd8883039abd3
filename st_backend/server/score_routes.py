"""POST /v1/rerank and /rerank (Cohere/Jina), /score and /v1/score (vLLM), and /classify.

/classify, and rerank / score on a cross-encoder, run CrossEncoder.predict on (query, document) pairs. Rerank and
score on an embedding model (the default when the server has no cross-encoder, or when the request names it) give
the model's similarity (its similarity_fn_name: cosine unless it says otherwise) of encode_query(query) and
encode_document(document), as model.similarity does; on a multi-vector model, MaxSim (MeanMaxSim when its
similarity_fn_name says so) of the same, as MultiVectorEncoder.rank / similarity do. The request's prompt /
prompt_name then go to the query side. vLLM scores an embedding model by cosine on the texts as given: equal to
this for a model with no query / document prompts and cosine similarity."""

from __future__ import annotations

from functools import partial

import orjson
import torch
from fastapi import APIRouter, Request
from fastapi.responses import Response

from .bridge import CROSS_ENCODER, EMBEDDING, MULTI_VECTOR, Served
from .dispatch import State, check_count, count_parts, count_tokens, pick, run, state_of
from .embed_routes import ERRORS, json_response
from .errors import ApiError
from .ops import ClassifyTexts, Pairs, QueryDocument
from .schemas import ClassifyRequest, ClassifyResponse, RerankRequest, RerankResponse, ScoreRequest, ScoreResponse

router = APIRouter()
# What rerank and score run on when a request names no model: the cross-encoder, else the embedding model, else
# the multi-vector model.
SCORERS = (CROSS_ENCODER, EMBEDDING, MULTI_VECTOR)
# vLLM's names of a score request's two sides: exactly one of each is given.
SIDES = (("text_1", "queries", "data_1"), ("text_2", "documents", "items", "data_2"))


def _usage(tokens: int) -> dict:
    return {"prompt_tokens": tokens, "total_tokens": tokens}


def _one_label(served: Served, route: str) -> None:
    if len(served.labels or ()) != 1:
        raise ApiError(
            400,
            f"{route} needs a model with one output label (a relevance score); {served.name} has "
            f"{len(served.labels or ())}: use /classify.",
            "model",
            "wrong_model_kind",
        )


def _prompt(st: State, served: Served, prompt_name: str | None, prompt: str | None, role=None) -> str | None:
    try:
        return st.bridge.prompt_of(served, prompt_name, prompt, role)
    except ValueError as exc:
        raise ApiError(400, f"{exc}.", "prompt_name", "unknown_prompt") from exc


async def _scores(request: Request, st: State, served: Served, pairs: list, body, route: str, param: str, finish):
    prompt = _prompt(st, served, body.prompt_name, body.prompt)
    lengths = await count_tokens(st, served, pairs, prompt, None, body.truncate, param, route)
    tokens = int(lengths.sum())
    op = Pairs(body.prompt_name, body.prompt)
    return json_response(await run(request, st, served, op, pairs, tokens, partial(finish, tokens=tokens)))


async def _bi_scores(
    request: Request,
    st: State,
    served: Served,
    queries: list,
    documents: list,
    body,
    route: str,
    params: tuple[str, str],
    finish,
):
    """An embedding or multi-vector model: queries through encode_query (with the request's prompt), documents
    through encode_document, in one job (so concurrent requests' rows share the merged calls); ``finish`` scores
    the request's own outputs (rows: queries, then documents)."""
    query_prompt = _prompt(st, served, body.prompt_name, body.prompt, "query")
    document_prompt = _prompt(st, served, None, None, "document")
    parts = [(queries, query_prompt, "query", params[0]), (documents, document_prompt, "document", params[1])]
    counted = await count_parts(st, served, parts, body.truncate, route)
    tokens = sum(int(lengths.sum()) for lengths in counted)
    rows = [("query", q) for q in queries] + [("document", d) for d in documents]
    op = QueryDocument(body.prompt_name, body.prompt)
    return json_response(await run(request, st, served, op, rows, tokens, partial(finish, tokens=tokens)))


def _similarities(outputs, *, served: Served, queries: int, pairwise: bool) -> torch.Tensor:
    """Scores of the request's rows (``queries`` query outputs, then the documents'): one query against every
    document, or query i against document i; the model's own similarity (on the batcher's thread)."""
    model = served.model
    if served.kind == MULTI_VECTOR:
        q, d = list(outputs[:queries]), list(outputs[queries:])
        if not pairwise:
            return model.similarity(q, d)[0]
        return torch.stack([model.similarity([a], [b])[0, 0] for a, b in zip(q, d)])
    q, d = outputs[:queries].float(), outputs[queries:].float()
    return model.similarity_pairwise(q, d) if pairwise else model.similarity(q, d)[0]


def _bi_finish(finish, *, served: Served, queries: int, pairwise: bool, **kwargs):
    return lambda outputs, tokens: finish(
        _similarities(outputs, served=served, queries=queries, pairwise=pairwise), tokens=tokens, **kwargs
    )


def _ranked(scores, *, texts, top_n, return_documents, model, tokens) -> bytes:
    # CrossEncoder.rank's order: a stable sort by score, best first (ties keep input order).
    values = scores.float().tolist()
    order = sorted(range(len(values)), key=lambda i: values[i], reverse=True)[:top_n]
    results = [{"index": i, "relevance_score": values[i]} for i in order]
    if return_documents:
        for r in results:
            r["document"] = {"text": texts[r["index"]]}
    return orjson.dumps({"model": model, "results": results, "usage": _usage(tokens)})


async def _rerank(body: RerankRequest, request: Request, route: str) -> Response:
    st = state_of(request)
    served = pick(st, body.model, SCORERS, route)
    texts = [d if isinstance(d, str) else d.text for d in body.documents]
    check_count(st, len(texts), "documents")
    options = dict(texts=texts, top_n=body.top_n, return_documents=body.return_documents, model=served.name)
    if served.kind != CROSS_ENCODER:
        finish = _bi_finish(_ranked, served=served, queries=1, pairwise=False, **options)
        return await _bi_scores(request, st, served, [body.query], texts, body, route, ("query", "documents"), finish)
    _one_label(served, route)
    pairs = [(body.query, t) for t in texts]
    return await _scores(request, st, served, pairs, body, route, "documents", partial(_ranked, **options))


@router.post("/v1/rerank", response_model=RerankResponse, responses=ERRORS, tags=["scores"])
async def rerank_v1(body: RerankRequest, request: Request) -> Response:
    """Cohere/Jina rerank: documents ordered by relevance to the query, as CrossEncoder.rank."""
    return await _rerank(body, request, "/v1/rerank")


@router.post("/rerank", response_model=RerankResponse, responses=ERRORS, tags=["scores"])
async def rerank(body: RerankRequest, request: Request) -> Response:
    """The same as /v1/rerank."""
    return await _rerank(body, request, "/rerank")


def _scored(scores, *, model, tokens) -> bytes:
    data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores.float().tolist())]
    return orjson.dumps({"object": "list", "model": model, "data": data, "usage": _usage(tokens)})


def _side(body: ScoreRequest, names: tuple[str, ...]) -> tuple[str, list[str]]:
    """(field name, texts) of one side of a score request: exactly one of its vLLM names."""
    given = [n for n in names if getattr(body, n) is not None]
    if len(given) != 1:
        listed = " / ".join(names)
        why = "is missing" if not given else f"is given twice ({', '.join(given)})"
        raise ApiError(400, f"One of {listed} {why}: send one of them.", names[0], "invalid_value")
    value = getattr(body, given[0])
    return given[0], [value] if isinstance(value, str) else list(value)


async def _score(body: ScoreRequest, request: Request, route: str) -> Response:
    st = state_of(request)
    served = pick(st, body.model, SCORERS, route)
    (name_1, first), (name_2, second) = (_side(body, names) for names in SIDES)
    check_count(st, len(first), name_1)
    check_count(st, len(second), name_2)
    if len(first) != 1 and len(first) != len(second):
        raise ApiError(
            400,
            f"{name_1} has {len(first)} texts and {name_2} {len(second)}: send one {name_1}, or lists of "
            "equal length (scored pairwise).",
            name_2,
            "length_mismatch",
        )
    if served.kind != CROSS_ENCODER:
        # One to many: the one text is encoded once. The score count is len(second), within --max-inputs.
        finish = _bi_finish(_scored, served=served, queries=len(first), pairwise=len(first) > 1, model=served.name)
        return await _bi_scores(request, st, served, first, second, body, route, (name_1, name_2), finish)
    _one_label(served, route)
    if len(first) == 1:
        first = first * len(second)
    check_count(st, len(first), name_2)
    finish = partial(_scored, model=served.name)
    return await _scores(request, st, served, list(zip(first, second)), body, route, name_2, finish)


@router.post("/score", response_model=ScoreResponse, responses=ERRORS, tags=["scores"])
async def score(body: ScoreRequest, request: Request) -> Response:
    """vLLM's score: text_1 against each text_2 (one to many), or pairwise (equal-length lists); a cross-encoder's
    score, or an embedding / multi-vector model's similarity of the query and document encodings."""
    return await _score(body, request, "/score")


@router.post("/v1/score", response_model=ScoreResponse, responses=ERRORS, tags=["scores"])
async def score_v1(body: ScoreRequest, request: Request) -> Response:
    """The same as /score."""
    return await _score(body, request, "/v1/score")


def _classified(logits, *, labels, model, tokens) -> bytes:
    logits = logits.float()
    if logits.ndim == 1:
        logits = logits[:, None]
    probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
    data = []
    for i, (row, p) in enumerate(zip(logits.tolist(), probs.tolist())):
        best = max(range(len(p)), key=p.__getitem__)
        data.append({"index": i, "label": labels[best], "probs": p, "logits": row, "num_classes": len(p)})
    return orjson.dumps({"object": "list", "model": model, "data": data, "usage": _usage(tokens)})


@router.post("/classify", response_model=ClassifyResponse, responses=ERRORS, tags=["scores"])
async def classify(body: ClassifyRequest, request: Request) -> Response:
    """Sequence-classification logits and probabilities (softmax; sigmoid for one label) with config.id2label."""
    st = state_of(request)
    served = pick(st, body.model, (CROSS_ENCODER,), "/classify")
    value = body.input
    rows = [value] if isinstance(value, str) else list(value)
    check_count(st, len(rows), "input")
    pairs = bool(rows) and isinstance(rows[0], list)
    rows = [tuple(r) for r in rows] if pairs else rows
    lengths = await count_tokens(st, served, rows, None, None, body.truncate, "input", "/classify")
    tokens = int(lengths.sum())
    op = Pairs(logits=True) if pairs else ClassifyTexts()
    finish = partial(_classified, labels=served.labels, model=served.name, tokens=tokens)
    return json_response(await run(request, st, served, op, rows, tokens, finish))
