"""``st-backend serve``: ``add_parser(subparsers)`` adds the subcommand; ``main(argv)`` runs it standalone
(``python -m st_backend.server``)."""

from __future__ import annotations

import argparse
import logging
import os

from .config import ServerConfig

KEY_ENV = "ST_BACKEND_API_KEY"


def _dims(value: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--matryoshka-dimensions takes integers like 384,256,128, got {value!r}"
        ) from exc
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"--matryoshka-dimensions takes positive integers, got {value!r}")
    return dims


def _devices(value: str) -> tuple[str, ...]:
    devices = tuple(v.strip() for v in value.split(",") if v.strip())
    if not devices:
        raise argparse.ArgumentTypeError(f"--devices takes devices like cuda:0,cuda:1 (or cpu,cpu), got {value!r}")
    return devices


def _seconds(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value}")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ServerConfig()
    p.add_argument(
        "model", nargs="?", default="default", help="embedding model path (default: the embedded all-MiniLM-L6-v2)"
    )
    p.add_argument("--cross-encoder", metavar="MODEL", help="a reranker for /v1/rerank, /score and /classify")
    p.add_argument(
        "--multi-vector", metavar="MODEL", help="a ColBERT-style model for /pooling token_embed and MaxSim /score"
    )
    p.add_argument("--sparse", metavar="MODEL", help="a SparseEncoder (SPLADE) for /embed_sparse and /pooling")
    p.add_argument("--no-embedding", action="store_true", help="serve no embedding model (only the others)")
    p.add_argument("--host", default=d.host, help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--api-key", default=None, help=f"require 'Authorization: Bearer KEY' (or set ${KEY_ENV})")
    p.add_argument("--device", default=None, help="torch device (default: ST's choice)")
    p.add_argument(
        "--devices",
        type=_devices,
        default=None,
        metavar="D1,D2,...",
        help="one engine process per device (cuda:0,cuda:1; cpu,cpu), each call to the least loaded one",
    )
    p.add_argument(
        "--device-timeout",
        type=_seconds,
        default=d.device_timeout,
        help="--devices: seconds a device may go without answering its work before it is restarted",
    )
    p.add_argument("--max-inputs", type=_positive, default=d.max_inputs, help="inputs per request")
    p.add_argument(
        "--max-input-tokens",
        type=_positive,
        default=d.max_input_tokens,
        help="tokens per request, summed over its inputs after truncation",
    )
    p.add_argument("--max-body-bytes", type=_positive, default=d.max_body_bytes, help="request body size (413)")
    p.add_argument(
        "--header-timeout",
        type=_seconds,
        default=d.header_timeout,
        help="seconds a request's headers may take to arrive (408; a connection that sends nothing is closed)",
    )
    p.add_argument(
        "--keep-alive-timeout",
        type=_seconds,
        default=d.keep_alive_timeout,
        help="seconds an idle kept-alive connection stays open",
    )
    p.add_argument(
        "--queue-capacity",
        type=_positive,
        default=d.queue_capacity,
        help="requests waiting or running per model before 429",
    )
    p.add_argument(
        "--max-batch-tokens",
        type=_positive,
        default=d.max_batch_tokens,
        help="token budget of one merged model call (default: the engine's packed-batch budget, at most 16384)",
    )
    p.add_argument("--no-batching", action="store_true", help="run each request as its own model call")
    p.add_argument(
        "--matryoshka-dimensions",
        type=_dims,
        default=None,
        metavar="D1,D2,...",
        help="declare the model's Matryoshka sizes (allowed `dimensions` values)",
    )
    p.add_argument("--attention", default="auto", help="the engine's attention backend")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``serve`` to an argparse subparsers object (st_backend.cli wires it in)."""
    p = subparsers.add_parser("serve", help="an OpenAI-compatible embedding / rerank / scoring server")
    add_arguments(p)
    p.set_defaults(fn=run)
    return p


def config_from(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        model=None if args.no_embedding else args.model,
        cross_encoder=args.cross_encoder,
        multi_vector=args.multi_vector,
        sparse=args.sparse,
        device=args.device,
        devices=args.devices,
        device_timeout=args.device_timeout,
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get(KEY_ENV) or None,
        max_inputs=args.max_inputs,
        max_input_tokens=args.max_input_tokens,
        max_body_bytes=args.max_body_bytes,
        header_timeout=args.header_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        queue_capacity=args.queue_capacity,
        max_batch_tokens=args.max_batch_tokens,
        batching=not args.no_batching,
        matryoshka_dimensions=args.matryoshka_dimensions,
        attention=args.attention,
        exit_on_load_failure=True,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; accepted requests are answered before the process exits."""
    try:
        import uvicorn
    except ImportError as exc:
        raise SystemExit("st-backend serve needs the server extra: pip install 'st-backend[server]'") from exc
    from .app import create_app
    from .connection import uvicorn_config

    config = config_from(args)
    if not any((config.model, config.cross_encoder, config.multi_vector, config.sparse)):
        raise SystemExit(
            "st-backend serve: --no-embedding leaves no model; give --cross-encoder, --multi-vector or --sparse"
        )
    if config.devices and config.device:
        raise SystemExit("st-backend serve: give --device or --devices, not both")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    # uvloop / httptools when installed (uvicorn[standard]); no access log: it costs more than a short request.
    server = uvicorn.Server(uvicorn_config(app, config, log_level=args.log_level))
    app.state.st.stop = lambda: setattr(server, "should_exit", True)
    server.run()
    return 1 if app.state.st.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="st-backend serve", description="an OpenAI-compatible embedding server")
    add_arguments(parser)
    return run(parser.parse_args(argv))
