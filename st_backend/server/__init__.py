"""``st-backend serve``: an OpenAI-compatible embedding, rerank and scoring server that batches across requests.

Layers, top to bottom: routes (``embed_routes``, ``score_routes``, ``app``) validate and translate; ``dispatch``
checks limits, counts tokens and queues rows; ``batcher`` merges rows of concurrent requests into one model call;
``bridge`` is the only module that touches st_backend's models and engine; with ``--devices``, ``devices`` runs
the bridge's calls in one process per device (``device_process``) instead. Needs the ``server`` extra
(fastapi, uvicorn); ``import st_backend`` never imports this package.
"""

from __future__ import annotations

from .config import ServerConfig

__all__ = ["ServerConfig", "create_app"]


def create_app(*args, **kwargs):
    """The FastAPI app (see ``app.create_app``); imported lazily so ServerConfig needs no fastapi."""
    from .app import create_app as build

    return build(*args, **kwargs)
