"""POST /v1/embeddings without FastAPI's per-request machinery (routing, dependency solving, exception middleware):
on a one-sentence request those cost the event loop more than the route itself, and the event loop is what
limits a server under many clients.

Only a request the schema accepts as it is takes this path, and it runs the route's own code (``embed``); any
other body (not JSON, a wrong type, a byte-order mark, ...) is replayed to FastAPI, which answers it as it would
without this layer, so the errors and the OpenAPI document stay FastAPI's.
"""

from __future__ import annotations

from pydantic import ValidationError

from .auth import replay, send_json
from .bridge import EMBEDDING
from .dispatch import State, parsed, pick
from .embed_routes import embed
from .errors import ApiError, error_body, unexpected_body
from .schemas import EmbeddingRequest

PATH = "/v1/embeddings"


class _Client:
    """What ``dispatch.run`` reads of a request: ``receive``, which after the body only returns at a disconnect."""

    __slots__ = ("receive",)

    def __init__(self, receive) -> None:
        self.receive = receive


class FastEmbeddings:
    def __init__(self, app, *, st: State) -> None:
        self.app = app
        self.st = st

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST" or not self.st.ready:
            await self.app(scope, receive, send)
            return
        # A small body comes in one message (Guard has joined a chunked one); one split over several goes to FastAPI.
        first = await receive()
        body = first.get("body", b"") if first["type"] == "http.request" else None
        if body is not None and not first.get("more_body", False):
            try:
                request = EmbeddingRequest.model_validate_json(body)
            except ValidationError:
                request = None
            if request is not None:
                parsed(self.st, scope)
                await self._embed(request, receive, send)
                return
        await self.app(scope, replay(first, receive), send)

    async def _embed(self, body: EmbeddingRequest, receive, send) -> None:
        status, headers = 200, {}
        try:
            served = pick(self.st, body.model, (EMBEDDING,), PATH)
            content = await embed(_Client(receive), self.st, served, body, PATH, "embed", "embedding")
        except ApiError as exc:
            status, headers = exc.status, exc.headers or {}
            content = error_body(exc.status, exc.message, exc.param, exc.code)
        except Exception as exc:  # as errors._unexpected answers on FastAPI's path
            status, content = 500, unexpected_body(PATH, exc)
        await send_json(send, status, content, headers)
