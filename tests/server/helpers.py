"""What the server tests share: a real uvicorn server on 127.0.0.1 in a thread, and a row-by-row comparison."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

PROMPTS = {"query": "query: ", "document": "passage: "}
MATRYOSHKA = (32, 16, 8)  # the tiny BERT's hidden size is 32


class LiveServer:
    """``create_app(...)`` served on a socket bound here (no port race); stopped as uvicorn stops on SIGTERM."""

    def __init__(self, app) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        from st_backend.server.connection import uvicorn_config

        # The CLI's uvicorn settings (the connection limits among them), on this socket.
        config = uvicorn_config(app, app.state.st.config, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, timeout: float = 120) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.app.state.st
            if st.failed:
                raise RuntimeError(f"server failed to load: {st.failed}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError("server did not become healthy")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()


def serve(config=None, bridge=None) -> LiveServer:
    from st_backend.server.app import create_app

    return LiveServer(create_app(config, bridge)).start()


def serve_every_kind(embedder, reranker, colbert, splade, **config) -> LiveServer:
    """A server with one model of each kind (embedding, cross-encoder, multi-vector, sparse)."""
    from st_backend.server.config import ServerConfig

    kinds = dict(model=embedder, cross_encoder=reranker, multi_vector=colbert, sparse=splade)
    return serve(ServerConfig(**kinds, matryoshka_dimensions=MATRYOSHKA, **config))


def assert_rows_close(got, want, atol: float = 1e-5) -> None:
    """Row by row: cosine >= 0.99999 and max abs diff <= atol (fp32 CPU)."""
    import numpy as np

    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.abs(got - want).max(initial=0) <= atol, np.abs(got - want).max()
    if got.ndim == 2 and len(got):
        norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
        cos = (got * want).sum(1) / np.maximum(norms, 1e-30)
        assert cos.min() >= 0.99999, cos.min()
