"""POST /v1/embeddings (OpenAI), /pooling (vLLM: embed, token_embed and embed_sparse) and /tokenize; ``sparse``,
the sparse-model call behind /pooling and /embed_sparse (sparse_routes.py)."""

from __future__ import annotations

import asyncio
import base64
from functools import partial

import numpy as np
import orjson
import torch
import torch.nn.functional as F
from fastapi import APIRouter, Request
from fastapi.responses import Response

from .bridge import CROSS_ENCODER, EMBEDDING, MULTI_VECTOR, SPARSE, Served
from .dispatch import INLINE_ROWS, State, check_count, count_tokens, pick, role_of, run, state_of
from .errors import ApiError
from .ops import Encode, EncodeIds, Sparse
from .schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    PoolingRequest,
    PoolingResponse,
    TokenizeRequest,
    TokenizeResponse,
)

ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 429, 503)}
# The model kinds that serve each /pooling task (the first served one is the default).
POOLING_KINDS = {"embed": (EMBEDDING, SPARSE), "token_embed": (EMBEDDING, MULTI_VECTOR), "embed_sparse": (SPARSE,)}
router = APIRouter()


def json_response(content: bytes) -> Response:
    return Response(content, media_type="application/json")


def rows_of(value, served: Served, param: str) -> tuple[list, bool]:
    """(rows, token_ids?) from OpenAI's four input forms; 400 for empty or out-of-vocabulary token lists."""
    if isinstance(value, str):
        return [value], False
    if not value or isinstance(value[0], str):
        return list(value), False
    rows = [value] if isinstance(value[0], int) else list(value)
    for i, ids in enumerate(rows):
        where = param if isinstance(value[0], int) else f"{param}[{i}]"
        if not ids:
            raise ApiError(400, f"{where} is an empty list of token ids; send at least one id.", where, "empty_input")
        top = max(ids)
        if top >= served.vocab_size:
            raise ApiError(
                400,
                f"{where} holds token id {top}, outside the vocabulary (0..{served.vocab_size - 1}).",
                where,
                "invalid_token_id",
            )
    return rows, True


def _encode_row(row: np.ndarray, fmt: str):
    if fmt == "base64":
        return base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode("ascii")
    return np.ascontiguousarray(row, dtype=np.float32)


def _finish(outputs, *, dims, normalize, fmt, model, tokens, obj, token_level) -> bytes:
    """Per-request post-processing on the batcher thread: Matryoshka cut, normalisation, encoding, JSON."""
    if token_level:
        rows = [F.normalize(t.float(), p=2, dim=-1) if normalize else t for t in outputs]
        arrays = [r.detach().float().cpu().numpy() for r in rows]
    else:
        emb = (outputs if isinstance(outputs, torch.Tensor) else torch.stack(list(outputs))).float()
        if dims is not None:
            emb = emb[:, :dims]  # ST's truncate_embeddings
        if normalize:
            emb = F.normalize(emb, p=2, dim=1)
        arrays = list(emb.detach().float().cpu().numpy())
    field = "embedding" if obj == "embedding" else "data"
    data = [{"object": obj, "index": i, field: _encode_row(a, fmt)} for i, a in enumerate(arrays)]
    body = {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


async def embed(request: Request, st: State, served: Served, body, route: str, task: str, obj: str) -> bytes:
    """The JSON body of an embeddings / pooling answer (the routes', and fast_path's for /v1/embeddings)."""
    role = role_of(body.input_type, body.role)
    rows, ids = rows_of(body.input, served, "input")
    check_count(st, len(rows), "input")
    token_level = task == "token_embed"
    if token_level and body.dimensions is not None:
        raise ApiError(400, "dimensions applies to task 'embed' only.", "dimensions", "invalid_value")
    try:
        st.bridge.check_dimensions(served, body.dimensions)
    except ValueError as exc:
        raise ApiError(400, f"{exc}.", "dimensions", "unsupported_dimensions") from exc
    if ids:
        if body.prompt is not None or body.prompt_name is not None:
            raise ApiError(
                400,
                "prompt / prompt_name cannot apply to token-id input (the ids are used as given); "
                "send texts, or put the prompt's ids in front.",
                "prompt",
                "invalid_value",
            )
        if served.kind == MULTI_VECTOR:
            raise ApiError(400, "a multi-vector model takes texts, not token ids.", "input", "invalid_value")
        reason = st.bridge.engine_reason(served)
        if reason is not None:
            raise ApiError(
                400,
                f"token-id input needs the packed engine; this model runs ST's own path ({reason}).",
                "input",
                "unsupported_input",
            )
        prompt = None
    else:
        try:
            prompt = st.bridge.prompt_of(served, body.prompt_name, body.prompt, role)
        except ValueError as exc:
            raise ApiError(400, f"{exc}.", "prompt_name", "unknown_prompt") from exc
    lengths = await count_tokens(st, served, rows, prompt, role, body.truncate, "input", route)
    if ids:
        rows = [r[: int(n)] for r, n in zip(rows, lengths)]  # truncate=true: the first max_seq_length ids
        op = EncodeIds(role, tokens=token_level)
    else:  # a multi-vector model gives token embeddings
        op = Encode(role, body.prompt_name, body.prompt, tokens=token_level or served.kind == MULTI_VECTOR)
    tokens = int(lengths.sum())
    finish = partial(
        _finish,
        dims=body.dimensions,
        normalize=bool(body.normalize),
        fmt=body.encoding_format,
        model=served.name,
        tokens=tokens,
        obj=obj,
        token_level=token_level,
    )
    return await run(request, st, served, op, rows, tokens, finish)


def sparse_entries(indices, values) -> list[dict]:
    """TEI's sparse row: [{"index", "value"}] (nonzero entries, sorted by index: the bridge gives them so)."""
    return [{"index": i, "value": v} for i, v in zip(indices.tolist(), values.float().tolist())]


async def sparse(request: Request, st: State, served: Served, rows: list[str], body, route: str, param: str, finish):
    """A sparse model's call on texts (encode / encode_query / encode_document by the body's role, its prompt and
    max_active_dims): ``finish(outputs, tokens=...)`` gets one (indices, values) pair per row."""
    role = role_of(body.input_type, body.role)
    check_count(st, len(rows), param)
    try:
        prompt = st.bridge.prompt_of(served, body.prompt_name, body.prompt, role)
    except ValueError as exc:
        raise ApiError(400, f"{exc}.", "prompt_name", "unknown_prompt") from exc
    lengths = await count_tokens(st, served, rows, prompt, role, body.truncate, param, route)
    tokens = int(lengths.sum())
    op = Sparse(role, body.prompt_name, body.prompt, body.max_active_dims)
    return await run(request, st, served, op, rows, tokens, partial(finish, tokens=tokens))


def _pooled_sparse(outputs, *, dimension, fmt, model, tokens) -> bytes:
    """/pooling on a sparse model: embed_sparse (dimension None) as TEI's entries, embed as dense rows."""
    if dimension is None:
        data = [{"index": i, "object": "pooling", "data": sparse_entries(*row)} for i, row in enumerate(outputs)]
        body = {"object": "list", "data": data, "model": model}
        body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return orjson.dumps(body)
    dense = torch.zeros((len(outputs), dimension))
    for i, (indices, values) in enumerate(outputs):
        dense[i, indices] = values.float()
    return _finish(
        dense, dims=None, normalize=False, fmt=fmt, model=model, tokens=tokens, obj="pooling", token_level=False
    )


async def _pooling_sparse(request: Request, st: State, served: Served, body: PoolingRequest) -> bytes:
    for name in ("dimensions", "normalize"):
        if getattr(body, name):
            raise ApiError(
                400, f"{name} applies to dense embedding models, not to a sparse one.", name, "invalid_value"
            )
    if body.task == "embed_sparse" and body.encoding_format != "float":
        raise ApiError(
            400,
            "task embed_sparse answers {index, value} entries: encoding_format must be float.",
            "encoding_format",
            "invalid_value",
        )
    rows, ids = rows_of(body.input, served, "input")
    if ids:
        raise ApiError(400, "a sparse model takes texts, not token ids.", "input", "invalid_value")
    dimension = served.dimension if body.task == "embed" else None
    finish = partial(_pooled_sparse, dimension=dimension, fmt=body.encoding_format, model=served.name)
    return await sparse(request, st, served, rows, body, "/pooling", "input", finish)


@router.post("/v1/embeddings", response_model=EmbeddingResponse, responses=ERRORS, tags=["embeddings"])
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    """OpenAI's embeddings: texts or token ids in, one vector each (float or base64), with token usage."""
    st = state_of(request)
    served = pick(st, body.model, (EMBEDDING,), "/v1/embeddings")
    return json_response(await embed(request, st, served, body, "/v1/embeddings", "embed", "embedding"))


@router.post("/pooling", response_model=PoolingResponse, responses=ERRORS, tags=["embeddings"])
async def pooling(body: PoolingRequest, request: Request) -> Response:
    """vLLM's pooling: task embed (one vector per input), token_embed (one per token; multi-vector models) or
    embed_sparse (a sparse model's nonzero entries; its task embed gives dense vocabulary-sized rows)."""
    st = state_of(request)
    served = pick(st, body.model, POOLING_KINDS[body.task], f"/pooling task {body.task!r}")
    if served.kind == SPARSE:
        return json_response(await _pooling_sparse(request, st, served, body))
    if body.max_active_dims is not None:
        raise ApiError(400, "max_active_dims applies to sparse models.", "max_active_dims", "invalid_value")
    return json_response(await embed(request, st, served, body, "/pooling", body.task, "pooling"))


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERRORS, tags=["tokens"])
async def tokenize(body: TokenizeRequest, request: Request) -> Response:
    """Token ids and strings of each text as the model's tokenizer gives them (no truncation)."""
    st = state_of(request)
    served = pick(st, body.model, (EMBEDDING, CROSS_ENCODER, MULTI_VECTOR, SPARSE), "/tokenize")
    if body.input is not None and body.prompt is not None:
        raise ApiError(400, "send input or prompt, not both.", "prompt", "invalid_value")
    value = body.input if body.input is not None else body.prompt
    if value is None:
        raise ApiError(400, "input is required: a text or a list of texts.", "input", "missing_input")
    texts = [value] if isinstance(value, str) else list(value)
    check_count(st, len(texts), "input")
    if len(texts) < INLINE_ROWS:
        pieces = st.bridge.tokenize(served, texts, body.add_special_tokens)
    else:
        loop = asyncio.get_running_loop()
        pieces = await loop.run_in_executor(st.tokenizers, st.bridge.tokenize, served, texts, body.add_special_tokens)
    st.trimmer.touch()
    data = [{"index": i, "ids": ids, "tokens": toks, "count": len(ids)} for i, (ids, toks) in enumerate(pieces)]
    out = {
        "model": served.name,
        "data": data,
        "count": sum(d["count"] for d in data),
        "max_model_len": served.limit(None) or 0,
    }
    return json_response(orjson.dumps(out))
