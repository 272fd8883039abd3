"""The door every request passes: the API key, the body-size limit, and per-route request metrics.

Plain ASGI (not a Starlette BaseHTTPMiddleware) so it costs a few microseconds per request and never buffers a
response. /health and /metrics stay open without the key, as TEI does, for probes and scrapers.
"""

from __future__ import annotations

import hmac
import time

from .errors import error_body
from .metrics import Metrics

OPEN_PATHS = frozenset({"/health", "/metrics"})
# The scope key holding when the request's headers were in (perf_counter): its route measures the parse from it.
RECEIVED = "st_backend.received"
# Headers past this are refused (431), as nginx's and uvicorn-h11's defaults do (8-16 KiB a line; 64 KiB in all).
MAX_HEADER_BYTES = 65536


class Guard:
    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, metrics: Metrics, routes: set[str]) -> None:
        self.app = app
        self.expected = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.routes = routes  # metric labels: known paths only (a fuzzer must not grow the label set)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope[RECEIVED] = start
        path = scope["path"]
        route = path if path in self.routes else "other"
        status = [500]

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refused = self._refuse(scope, path)
            if refused is not None:
                await _reply(send_status, *refused)
                return
            if not _header(scope, b"content-length") and _header(scope, b"transfer-encoding"):
                receive = await self._buffered(receive)  # chunked: read it here, up to the limit
                if receive is None:
                    await _reply(send_status, *self._too_large(None))
                    return
            if scope["method"] == "POST":
                scope = _as_json(scope)
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.inc(route, str(status[0]))
            self.metrics.request_duration.observe(route, value=time.perf_counter() - start)

    def _refuse(self, scope, path: str) -> tuple | None:
        header_bytes = sum(len(k) + len(v) for k, v in scope["headers"])
        if header_bytes > MAX_HEADER_BYTES:  # the body limit must not be bypassed through the headers
            message = f"The request's headers have {header_bytes} bytes; this server takes at most {MAX_HEADER_BYTES}."
            return 431, message, "headers_too_large", {}
        if self.expected is not None and path not in OPEN_PATHS:
            given = _header(scope, b"authorization") or b""
            # RFC 9110: the scheme is case-insensitive ("bearer" as well as "Bearer"); the key is compared exactly.
            scheme, _, key = given.strip().partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(key.strip(), self.expected):
                why = "no Authorization header" if not given else "the API key does not match"
                message = f"Unauthorized: {why}; send 'Authorization: Bearer <key>' (the server's --api-key)."
                return 401, message, "invalid_api_key", {"www-authenticate": "Bearer"}
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return 400, "Content-Length is not a number.", "invalid_header", {}
            if size > self.max_body_bytes:
                return self._too_large(size)
        return None

    def _too_large(self, size: int | None) -> tuple:
        got = f"{size} bytes" if size is not None else "more"
        message = f"The body has {got}; this server takes at most {self.max_body_bytes} (--max-body-bytes): split it."
        return 413, message, "body_too_large", {}

    async def _buffered(self, receive):
        """The whole body read up front (None past the limit), replayed to the app as one message."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return replay({"type": "http.request", "body": b"".join(chunks), "more_body": False}, receive)


def replay(first: dict, receive):
    """receive() for the app behind: a message already read here, then the rest from the client."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replayed


def _as_json(scope):
    # Every POST route takes JSON: a body sent as curl's default form type (or none) is read as JSON too.
    kind = _header(scope, b"content-type") or b""
    if kind.startswith(b"application/json") or b"+json" in kind:
        return scope
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"] + [(b"content-type", b"application/json")]
    return {**scope, "headers": headers}


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


async def _reply(send, status: int, message: str, code: str, headers: dict) -> None:
    await send_json(send, status, error_body(status, message, None, code), headers)


async def send_json(send, status: int, body: bytes, headers: dict) -> None:
    """A whole JSON response, straight on the ASGI ``send`` (no Starlette Response)."""
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
