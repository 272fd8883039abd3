"""POST /embed_sparse (text-embeddings-inference): a sparse model's (SPLADE) nonzero entries of each input."""

from __future__ import annotations

from functools import partial

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from .bridge import SPARSE
from .dispatch import pick, state_of
from .embed_routes import ERRORS, json_response, sparse, sparse_entries
from .errors import ApiError
from .schemas import EmbedSparseRequest, EmbedSparseResponse

router = APIRouter()


def _entries(outputs, *, tokens) -> bytes:
    return orjson.dumps([sparse_entries(*row) for row in outputs])


@router.post("/embed_sparse", response_model=EmbedSparseResponse, responses=ERRORS, tags=["embeddings"])
async def embed_sparse(body: EmbedSparseRequest, request: Request) -> Response:
    """TEI's sparse embeddings: for each input, a list of {index, value} (its nonzero entries, sorted by index),
    equal to SparseEncoder.encode (encode_query / encode_document with input_type or role)."""
    st = state_of(request)
    served = pick(st, body.model, (SPARSE,), "/embed_sparse")
    if body.truncation_direction is not None and body.truncation_direction.lower() == "left":
        raise ApiError(
            400,
            "truncation_direction left is not served: inputs are cut on the right, as ST cuts them.",
            "truncation_direction",
            "invalid_value",
        )
    rows = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
    return json_response(await sparse(request, st, served, rows, body, "/embed_sparse", "inputs", partial(_entries)))
