"""What every model route does between validation and the batcher: pick the model, check limits and count
tokens, queue the rows, and wait for the answer (or for the client to leave)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from fastapi import Request

from ..engine.tokenizer import FEW_TEXTS, LONG_TEXT_CHARS
from .auth import RECEIVED
from .batcher import Batcher, Closed, Job, QueueFull
from .bridge import Backend, Served
from .config import ServerConfig
from .errors import ApiError
from .memory import Trimmer
from .metrics import Metrics
from .ops import Operation

ROLES = {
    "query": "query",
    "search_query": "query",
    "retrieval.query": "query",
    "document": "document",
    "search_document": "document",
    "passage": "document",
    "retrieval.passage": "document",
}
# Counting fewer rows than this on the event loop (one by one, the GIL kept) is cheaper than a thread hop.
INLINE_ROWS = FEW_TEXTS
# Past this many characters a request is counted off the event loop, whatever its row count: one long text (8 MiB
# took 13 s) must not hold up every other request and /health.
INLINE_CHARS = LONG_TEXT_CHARS


def _chars(rows: list) -> int:
    return sum(len(r) if isinstance(r, str) else sum(len(p) for p in r if isinstance(p, str)) for r in rows)


@dataclass
class State:
    """Everything the routes share; app.state.st."""

    config: ServerConfig
    bridge: Backend
    metrics: Metrics = field(default_factory=Metrics)
    batchers: dict[str, Batcher] = field(default_factory=dict)
    ready: bool = False
    failed: str | None = None
    # Set by the CLI: ends uvicorn's loop (a load failure then exits 1; a SIGTERM to ourselves would exit 143).
    stop: Callable[[], None] | None = None
    tokenizers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="st_backend-count")
    )
    trimmer: Trimmer = field(default_factory=Trimmer)  # gives freed memory back after requests


def state_of(request: Request) -> State:
    """The routes' state, 503 until the models are loaded. A POST route calls this first, its body read and
    validated: the end of the request's parse stage."""
    st: State = request.app.state.st
    if not st.ready:
        why = f"a model failed to load: {st.failed}" if st.failed else "the models are still loading"
        raise ApiError(503, f"Not ready: {why}; GET /health says when.", None, "not_ready", {"Retry-After": "5"})
    if request.method == "POST":
        parsed(st, request.scope)
    return st


def parsed(st: State, scope) -> None:
    """Record the request's parse stage: from its headers (auth.Guard) to now."""
    received = scope.get(RECEIVED)
    if received is not None:
        st.metrics.parse.observe(scope["path"], value=time.perf_counter() - received)


def pick(st: State, name: str | None, kinds: tuple[str, ...], route: str) -> Served:
    """The model a request names (None: the first served model of the first kind in ``kinds`` that has one); 404
    for unknown names, 400 for a model of another kind."""
    allowed = sorted((s for s in st.bridge.served.values() if s.kind in kinds), key=lambda s: kinds.index(s.kind))
    if name is None:
        if not allowed:
            flags = {"cross-encoder": "--cross-encoder", "multi-vector": "--multi-vector", "sparse": "--sparse"}
            flag = flags.get(kinds[0], "MODEL")
            raise ApiError(
                400,
                f"{route} needs a {' or '.join(kinds)} model; start the server with {flag} MODEL.",
                "model",
                "model_not_loaded",
            )
        return allowed[0]
    for s in st.bridge.served.values():
        if name in (s.name, s.path, f"sentence-transformers/{s.name}"):
            if s.kind not in kinds:
                raise ApiError(
                    400,
                    f"model {name!r} is a {s.kind} model; {route} takes a {' or '.join(kinds)} model.",
                    "model",
                    "wrong_model_kind",
                )
            return s
    names = [s.name for s in st.bridge.served.values()]
    raise ApiError(404, f"The model {name!r} does not exist; served models: {names}.", "model", "model_not_found")


def role_of(input_type: str | None, role: str | None) -> str | None:
    mapped = ROLES[input_type] if input_type is not None else None
    if mapped is not None and role is not None and mapped != role:
        raise ApiError(400, f"input_type {input_type!r} and role {role!r} disagree; send one of them.", "role")
    return role or mapped


def check_count(st: State, n: int, param: str) -> None:
    if n == 0:
        raise ApiError(400, f"{param} must not be empty; send at least one input.", param, "empty_input")
    if n > st.config.max_inputs:
        raise ApiError(
            400,
            f"{param} has {n} items; this server takes at most {st.config.max_inputs} per request (--max-inputs).",
            param,
            "too_many_inputs",
        )


async def count_tokens(
    st: State,
    served: Served,
    rows: list,
    prompt: str | None,
    role: str | None,
    truncate: bool,
    param: str,
    route: str,
) -> np.ndarray:
    """Tokens each row gives the model (after ST's truncation); 400 for an over-long row with truncate=false and
    for a request over --max-input-tokens."""
    return (await count_parts(st, served, [(rows, prompt, role, param)], truncate, route))[0]


async def count_parts(st: State, served: Served, parts: list[tuple], truncate: bool, route: str) -> list[np.ndarray]:
    """count_tokens for a request whose inputs come in parts with their own prompt and role, each part
    ``(rows, prompt, role, param)`` (e.g. queries and documents): the limits apply to the request as a whole."""
    counted = [await _lengths(st, served, *part, truncate, route) for part in parts]
    total = int(sum(int(lengths.sum()) for lengths in counted))
    if total > st.config.max_input_tokens:
        raise ApiError(
            400,
            f"The request holds {total} tokens after truncation; this server takes at most "
            f"{st.config.max_input_tokens} per request (--max-input-tokens): split it.",
            parts[-1][3],
            "too_many_tokens",
        )
    st.metrics.input_tokens.observe(route, value=total)
    return counted


async def _lengths(st: State, served: Served, rows, prompt, role, param: str, truncate: bool, route: str):
    start = time.perf_counter()
    if rows and isinstance(rows[0], list):  # token ids: the count is the length
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    elif len(rows) < INLINE_ROWS and _chars(rows) <= INLINE_CHARS:
        lengths = st.bridge.count(served, rows, prompt, role)
    else:
        loop = asyncio.get_running_loop()
        lengths = await loop.run_in_executor(st.tokenizers, st.bridge.count, served, rows, prompt, role)
    st.metrics.tokenization.observe(route, value=time.perf_counter() - start)
    limit = served.limit(role)
    if limit is not None:
        if not truncate:
            over = np.flatnonzero(lengths > limit)
            if len(over):
                i = int(over[0])
                raise ApiError(
                    400,
                    f"{param}[{i}] has {int(lengths[i])} tokens, more than the model's limit of {limit}"
                    f" ({len(over)} input(s) over it); shorten it or send truncate=true.",
                    f"{param}[{i}]",
                    "input_too_long",
                )
        lengths = np.minimum(lengths, limit)
    return lengths


async def run(request: Request, st: State, served: Served, op: Operation, rows: list, tokens: int, finish: Callable):
    """Queue the rows for ``op``, wait for ``finish(outputs)``; 429 when the queue is full; a gone client is
    dropped. Jobs of equal operations may share a merged call."""
    loop = asyncio.get_running_loop()
    job = Job(op, rows, tokens, loop.create_future(), finish)
    try:
        st.batchers[served.name].submit(job)
    except QueueFull as exc:
        raise ApiError(
            429,
            f"The queue of {served.name} is full ({st.config.queue_capacity} requests, "
            "--queue-capacity); retry after a moment.",
            None,
            "queue_full",
            {"Retry-After": "1"},
        ) from exc
    except Closed as exc:
        raise ApiError(503, "The server is shutting down.", None, "shutting_down") from exc
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((job.future, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        st.trimmer.touch()
    if not job.future.done():
        job.gone = True
        job.future.cancel()
        raise ApiError(499, "The client closed the connection before the answer.", None, "client_closed")
    error = job.future.exception()
    if isinstance(error, ValueError):  # the model refused the input (e.g. a template that cannot fit)
        raise ApiError(400, str(error), None, "model_refused") from error
    return job.future.result()


async def _disconnected(request: Request) -> None:
    # After the body is read, receive() returns only when the client disconnects (or the response is done).
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
