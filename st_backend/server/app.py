"""The FastAPI app: models load in the background at startup (GET /health is 503 until they are loaded and warm),
one batcher per model, the routes, and a shutdown that answers every accepted request before it returns."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.metadata
import logging
import os
import pkgutil
import signal
import threading

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from . import errors
from .auth import Guard
from .bridge import Backend, Bridge
from .config import ServerConfig
from .devices import DeviceBridge
from .dispatch import State, state_of
from .errors import error_response
from .fast_path import FastEmbeddings
from .metrics import Metrics
from .openapi import document
from .schemas import ErrorResponse, ModelList

logger = logging.getLogger("st_backend.server")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _load(st: State, loop: asyncio.AbstractEventLoop) -> None:
    """Load and warm every model, then start one batcher each (runs on its own thread)."""
    try:
        st.bridge.load()
        for name, served in st.bridge.served.items():
            options = dict(
                max_batch_tokens=st.config.max_batch_tokens or st.bridge.batch_budget(served),
                capacity=st.config.queue_capacity,
                batching=st.config.batching,
                metrics=st.metrics,
            )
            batcher = st.bridge.batcher(served, **options)
            batcher.start(loop)
            st.batchers[name] = batcher
        st.trimmer.start()
        st.ready = True
        logger.info("st_backend server: ready (%s)", ", ".join(st.bridge.served))
    except BaseException as exc:
        st.failed = f"{type(exc).__name__}: {exc}"
        logger.exception("st_backend server: loading failed")
        if st.config.exit_on_load_failure:
            if st.stop is not None:
                st.stop()
            else:
                os.kill(os.getpid(), signal.SIGTERM)


def create_app(config: ServerConfig | None = None, bridge: Backend | None = None) -> FastAPI:
    """The app for ``config``; ``bridge`` (tests) replaces the one built from the config's model paths."""
    config = config or ServerConfig()
    metrics = Metrics()
    if bridge is None and config.devices:
        bridge = DeviceBridge(config, metrics)
    bridge = bridge or Bridge(
        config.model,
        config.cross_encoder,
        config.multi_vector,
        config.sparse,
        device=config.device,
        matryoshka_dimensions=config.matryoshka_dimensions,
        attention=config.attention,
    )
    st = State(config, bridge, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = threading.Thread(target=_load, args=(st, asyncio.get_running_loop()), name="st_backend-load")
        loader.start()
        try:
            yield
        finally:
            # uvicorn calls this after it stopped accepting and every open request was answered; the queues
            # are then empty, and close() waits for a call still running.
            await asyncio.to_thread(loader.join)
            for batcher in st.batchers.values():
                await asyncio.to_thread(batcher.close)
            await asyncio.to_thread(st.bridge.close)  # --devices: stops the device processes
            st.tokenizers.shutdown(wait=False)
            st.trimmer.close()

    app = FastAPI(
        title="st_backend server",
        version=_version("st-backend"),
        description="OpenAI-compatible embeddings, Cohere/Jina rerank, vLLM-style scoring and pooling, and "
        "TEI-style sparse embeddings on st_backend.",
        lifespan=lifespan,
    )
    app.state.st = st
    errors.install(app)
    routers = route_modules()
    for router in routers:
        app.include_router(router)
    _add_service_routes(app)
    app.openapi = lambda: document(app, st)
    routers = (app, *routers)
    routes = {r.path for router in routers for r in router.routes if getattr(r, "path", None)}
    app.add_middleware(FastEmbeddings, st=st)  # inside Guard: the key, the size limit and the metrics apply
    app.add_middleware(
        Guard, api_key=config.api_key, max_body_bytes=config.max_body_bytes, metrics=st.metrics, routes=routes
    )
    return app


def route_modules() -> list:
    """The ``router`` of every ``*_routes.py`` module in this package: a new route is one file."""
    names = sorted(m.name for m in pkgutil.iter_modules([os.path.dirname(__file__)]) if m.name.endswith("_routes"))
    return [importlib.import_module(f"{__package__}.{name}").router for name in names]


def _add_service_routes(app: FastAPI) -> None:
    st: State = app.state.st
    errors_doc = {code: {"model": ErrorResponse} for code in (401, 503)}

    # HEAD too: load balancers and uptime checks probe with it (a route each: one operation id per method).
    @app.get("/health", tags=["service"], responses={503: {"model": ErrorResponse}})
    @app.head("/health", tags=["service"], responses={503: {"model": ErrorResponse}})
    async def health() -> Response:
        """200 once every model is loaded and warmed up; 503 before (or when loading failed)."""
        devices = st.bridge.health() if st.ready else None
        if devices is not None:
            return _device_health(devices)
        if st.ready:
            return Response(b'{"status":"ok"}', media_type="application/json")
        why = f"loading failed: {st.failed}" if st.failed else "models are loading"
        return error_response(503, f"Not ready: {why}.", None, "not_ready", {"Retry-After": "5"})

    @app.get("/metrics", tags=["service"], response_class=Response)
    @app.head("/metrics", tags=["service"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format (names like TEI's: st_request_count, st_batch_size, st_queue_size, ...)."""
        for name, batcher in st.batchers.items():
            st.metrics.queue_size.set(name, value=batcher.depth)
        st.bridge.refresh_metrics()
        return Response(st.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", tags=["service"], response_model=ModelList, responses=errors_doc)
    async def models(request: Request) -> Response:
        """The served models (OpenAI's list)."""
        cards = [
            {"id": s.name, "object": "model", "created": s.created, "owned_by": "st_backend", "kind": s.kind}
            for s in state_of(request).bridge.served.values()
        ]
        return Response(orjson.dumps({"object": "list", "data": cards}), media_type="application/json")

    @app.get("/info", tags=["service"], responses=errors_doc)
    async def info(request: Request) -> Response:
        """Models, engine settings (attention backend, token budget, dtype), limits and versions."""
        current = state_of(request)
        body = {
            "models": await asyncio.to_thread(current.bridge.describe),
            "limits": {
                **current.config.limits(),
                "max_batch_tokens": {n: b.max_batch_tokens for n, b in current.batchers.items()},
            },
            "auth": current.config.api_key is not None,
            "versions": {
                d: _version(d)
                for d in ("st-backend", "sentence-transformers", "transformers", "torch", "fastapi", "uvicorn")
            },
        }
        return Response(orjson.dumps(body), media_type="application/json")


def _device_health(devices: list[dict]) -> Response:
    """--devices: 200 while at least one device serves ("degraded" unless all do), each device's state."""
    serving = sum(d["state"] == "ready" for d in devices)
    if not serving:
        states = ", ".join(f"{d['device']} (worker {d['worker']}): {d['state']}" for d in devices)
        return error_response(
            503, f"Not ready: no device is serving ({states}).", None, "no_device", {"Retry-After": "5"}
        )
    status = "ok" if serving == len(devices) else "degraded"
    return Response(orjson.dumps({"status": status, "devices": devices}), media_type="application/json")
