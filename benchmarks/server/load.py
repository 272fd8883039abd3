"""Bounded load test of ``st-backend serve``: many concurrent clients, mixed sizes and routes, every response
checked against a local encode of its own inputs (errors and misrouted rows counted), p50/p99 and throughput.

    OMP_NUM_THREADS=1 python benchmarks/server/load.py --clients 200 --requests 10000 --json load.json

Starts its own server (the embedded all-MiniLM-L6-v2, OMP_NUM_THREADS=1) unless --url names a running one; the
request loop is bounded by --requests and --time-limit, and only talks to 127.0.0.1.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: spinning OpenMP threads distort shared-core runs

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import REPO, cpu_name, run, run_load, sentences, wait_healthy  # noqa: E402

ROUTES = [("embed-float", 40), ("embed-base64", 30), ("pool-embed", 10), ("pool-token", 10), ("tokenize", 10)]
SIZES = [(1, 55), (2, 10), (3, 8), (4, 7), (8, 8), (16, 7), (32, 5)]
ATOL = 1e-4  # per element; a misrouted row differs by ~1e-1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "st_backend.server", model, "--port", str(port), "--log-level", "warning", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]}
    return subprocess.Popen(cmd, cwd=REPO, env=env)


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(120)


def make_specs(n: int, pool: int, seed: int) -> list[tuple[str, list[int]]]:
    rng = random.Random(seed)
    routes, route_w = zip(*ROUTES)
    sizes, size_w = zip(*SIZES)
    return [(rng.choices(routes, route_w)[0], rng.sample(range(pool), rng.choices(sizes, size_w)[0])) for _ in range(n)]


class Oracle:
    """Local encodes of every text in the pool, and the per-request check."""

    def __init__(self, model: str, texts: list[str]) -> None:
        from st_backend import SentenceTransformer
        from st_backend.default_model import resolve_model

        local = SentenceTransformer(resolve_model(model), device="cpu")
        self.texts = texts
        self.sentence = local.encode(texts, batch_size=64)
        self.tokens = [t.numpy() for t in local.encode(texts, output_value="token_embeddings", batch_size=64)]
        self.ids = [local.tokenizer(t)["input_ids"] for t in texts]
        self.misrouted = 0

    def send(self, spec) -> tuple[str, bytes, int]:
        route, idx = spec
        texts = [self.texts[i] for i in idx]
        if route == "tokenize":
            return "/tokenize", orjson.dumps({"input": texts}), len(idx)
        if route.startswith("pool"):
            task = "token_embed" if route == "pool-token" else "embed"
            return "/pooling", orjson.dumps({"input": texts, "task": task}), len(idx)
        fmt = "base64" if route == "embed-base64" else "float"
        return "/v1/embeddings", orjson.dumps({"input": texts, "encoding_format": fmt}), len(idx)

    def check(self, spec, status: int, body: bytes) -> str | None:
        route, idx = spec
        if status != 200:
            return f"{route}: HTTP {status}: {body[:200]!r}"
        data = orjson.loads(body)["data"]
        if [d["index"] for d in data] != list(range(len(idx))):
            self.misrouted += len(idx)
            return f"{route}: indices {[d['index'] for d in data]}"
        bad = 0
        for d, i in zip(data, idx):
            if route == "tokenize":
                bad += d["ids"] != self.ids[i]
                continue
            if route == "pool-token":
                got, want = np.asarray(d["data"], dtype=np.float32), self.tokens[i]
            elif route == "embed-base64":
                got, want = np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4"), self.sentence[i]
            else:
                got, want = np.asarray(d["embedding" if route.startswith("embed") else "data"]), self.sentence[i]
            bad += got.shape != want.shape or float(np.abs(got - want).max()) > ATOL
        if bad:
            self.misrouted += bad
            return f"{route}: {bad} of {len(idx)} rows differ from their local encode"
        return None


def batch_stats(metrics: str) -> dict:
    """Merged model calls and how many requests / rows they held, from /metrics."""
    out = {}
    for name in (
        "st_batch_requests",
        "st_batch_size",
        "st_batch_tokens",
        "st_batch_inference_duration",
        "st_request_queue_duration",
    ):
        total = sum(float(v) for v in re.findall(rf"^{name}_sum{{[^}}]*}} (\S+)", metrics, re.M))
        count = sum(float(v) for v in re.findall(rf"^{name}_count{{[^}}]*}} (\S+)", metrics, re.M))
        out[name.removeprefix("st_") + "_mean"] = round(total / count, 3) if count else None
        if name == "st_batch_requests":
            out["model_calls"] = int(count)
    single = sum(int(v) for v in re.findall(r'^st_batch_requests_bucket{[^}]*le="1"} (\d+)', metrics, re.M))
    out["calls_with_several_requests"] = out["model_calls"] - single
    return out


async def fetch_metrics(url: str) -> str:
    from client import Connection

    host, port = url.removeprefix("http://").split(":")
    conn = Connection(host, int(port))
    try:
        _, body = await conn.request("GET", "/metrics")
        return body.decode()
    finally:
        conn.close()


def versions() -> dict:
    import importlib.metadata as md

    names = ("st-backend", "sentence-transformers", "transformers", "torch", "fastapi", "uvicorn", "uvloop")
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running server (default: start one on a free loopback port)")
    p.add_argument("--model", default="default")
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--requests", type=int, default=10000)
    p.add_argument("--texts", type=int, default=2000, help="distinct texts the requests draw from")
    p.add_argument("--time-limit", type=float, default=1800.0, help="stop sending after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-arg", action="append", default=[], help="extra st-backend serve flag (repeatable)")
    p.add_argument("--json", help="write the report here")
    args = p.parse_args()

    url, proc = args.url, None
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(args.model, port, ["--queue-capacity", str(max(1024, 2 * args.clients)), *args.server_arg])
    try:
        texts = sentences(args.texts, args.seed)
        oracle = Oracle(args.model, texts)  # while the server loads
        run(wait_healthy(url))
        specs = make_specs(args.requests, len(texts), args.seed)
        result = run(run_load(url, specs, args.clients, oracle.send, oracle.check, args.time_limit))
        metrics = run(fetch_metrics(url))
    finally:
        exit_code = stop(proc) if proc is not None else None
    report = {
        "command": " ".join(["OMP_NUM_THREADS=" + os.environ["OMP_NUM_THREADS"], "python", *sys.argv]),
        "clients": args.clients,
        "sent": len(result.latencies) + len(result.errors),
        "misrouted_rows": oracle.misrouted,
        **result.summary(),
        "server": batch_stats(metrics),
        "server_exit_code": exit_code,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "versions": versions(),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if not result.errors and not oracle.misrouted and len(result.latencies) == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
