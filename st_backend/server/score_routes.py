"""POST /v1/rerank and /rerank (Cohere/Jina), /score (vLLM) and /classify, all on the cross-encoder."""

from __future__ import annotations

from functools import partial

import orjson
import torch
from fastapi import APIRouter, Request
from fastapi.responses import Response

from .bridge import CROSS_ENCODER, Served
from .dispatch import State, check_count, count_tokens, pick, run, state_of
from .embed_routes import ERRORS, json_response
from .errors import ApiError
from .schemas import ClassifyRequest, ClassifyResponse, RerankRequest, RerankResponse, ScoreRequest, ScoreResponse

router = APIRouter()


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


def _prompt(st: State, served: Served, prompt_name: str | None, prompt: str | None) -> str | None:
    try:
        return st.bridge.prompt_of(served, prompt_name, prompt, None)
    except ValueError as exc:
        raise ApiError(400, f"{exc}.", "prompt_name", "unknown_prompt") from exc


async def _scores(request: Request, st: State, served: Served, pairs: list, body, route: str, param: str, finish):
    prompt = _prompt(st, served, body.prompt_name, body.prompt)
    lengths = await count_tokens(st, served, pairs, prompt, None, body.truncate, param, route)
    tokens = int(lengths.sum())
    key = ("pairs", body.prompt_name, body.prompt)
    return json_response(await run(request, st, served, key, pairs, tokens, partial(finish, tokens=tokens)))


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
    served = pick(st, body.model, (CROSS_ENCODER,), route)
    _one_label(served, route)
    texts = [d if isinstance(d, str) else d.text for d in body.documents]
    check_count(st, len(texts), "documents")
    pairs = [(body.query, t) for t in texts]
    finish = partial(_ranked, texts=texts, top_n=body.top_n, return_documents=body.return_documents, model=served.name)
    return await _scores(request, st, served, pairs, body, route, "documents", finish)


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


@router.post("/score", response_model=ScoreResponse, responses=ERRORS, tags=["scores"])
async def score(body: ScoreRequest, request: Request) -> Response:
    """vLLM's score: text_1 against each text_2 (one to many), or pairwise (equal-length lists)."""
    st = state_of(request)
    served = pick(st, body.model, (CROSS_ENCODER,), "/score")
    _one_label(served, "/score")
    first = [body.text_1] if isinstance(body.text_1, str) else list(body.text_1)
    second = [body.text_2] if isinstance(body.text_2, str) else list(body.text_2)
    check_count(st, len(first), "text_1")
    check_count(st, len(second), "text_2")
    if len(first) == 1:
        first = first * len(second)
    elif len(first) != len(second):
        raise ApiError(
            400,
            f"text_1 has {len(first)} texts and text_2 {len(second)}: send one text_1, or lists of "
            "equal length (scored pairwise).",
            "text_2",
            "length_mismatch",
        )
    check_count(st, len(first), "text_2")
    finish = partial(_scored, model=served.name)
    return await _scores(request, st, served, list(zip(first, second)), body, "/score", "text_2", finish)


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
    key = ("logits", None, None) if pairs else ("classify_texts",)
    finish = partial(_classified, labels=served.labels, model=served.name, tokens=tokens)
    return json_response(await run(request, st, served, key, rows, tokens, finish))
