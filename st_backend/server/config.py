"""What a server is started with: the models, where it listens, and its limits (each a ``st-backend serve`` flag)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServerConfig:
    model: str | None = "default"  # the embedding model; "default" is the embedded all-MiniLM-L6-v2
    cross_encoder: str | None = None
    multi_vector: str | None = None
    sparse: str | None = None  # a SparseEncoder (SPLADE) for /embed_sparse and /pooling embed_sparse
    device: str | None = None  # None: ST's choice (CUDA when there is one)
    devices: tuple[str, ...] | None = None  # one engine process per device (serve --devices); None: in-process
    device_timeout: float = 300.0  # --devices: seconds a device may go without answering before it is restarted
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_inputs: int = 2048  # inputs (texts, documents, pairs) per request, as OpenAI
    max_input_tokens: int = 300_000  # tokens per request summed over its inputs after truncation, as OpenAI
    max_body_bytes: int = 8 * 1024 * 1024
    # Seconds a request's headers may take from the connection's opening (or the request's first byte): a client
    # that sends nothing or trickles its headers (slowloris) must not hold a connection forever.
    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0  # seconds an idle kept-alive connection stays open (uvicorn's default)
    queue_capacity: int = 1024  # requests waiting or running per model; beyond: 429
    # Tokens per merged model call. None: the engine's packed-batch budget on the model's device, at most TEI's
    # 16384 (4096 on CPU, where one 16k-token call takes seconds and every request behind it waits).
    max_batch_tokens: int | None = None
    batching: bool = True  # False: each request its own model call (for comparison)
    matryoshka_dimensions: tuple[int, ...] | None = None
    attention: str = "auto"
    exit_on_load_failure: bool = False  # the CLI stops the process when a model fails to load

    def limits(self) -> dict:
        return {
            "max_inputs": self.max_inputs,
            "max_input_tokens": self.max_input_tokens,
            "max_body_bytes": self.max_body_bytes,
            "header_timeout": self.header_timeout,
            "keep_alive_timeout": self.keep_alive_timeout,
            "queue_capacity": self.queue_capacity,
            "max_batch_tokens": self.max_batch_tokens,
            "batching": self.batching,
        }
