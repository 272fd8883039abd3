"""A small HTTP/1.1 keep-alive load client on raw asyncio streams, and the texts the server benchmarks send.

Raw streams instead of httpx/aiohttp: the client shares the machine's two cores with the server, so it should
cost as little per request as it can (one write, one header parse, one read of Content-Length bytes).
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STS = Path(os.environ.get("ST_BACKEND_DATA") or REPO.parent / "shared" / "data") / "stsbenchmark" / "sts-dev.csv"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sentences(n: int, seed: int = 0) -> list[str]:
    """n distinct sentences: STS Benchmark dev sentences when ../shared/data has them, else generated ones."""
    pool: list[str] = []
    if STS.exists():
        for line in STS.read_text(encoding="utf-8").splitlines():
            cols = line.split("\t")
            if len(cols) >= 7:
                pool += [cols[5], cols[6]]
    pool = list(dict.fromkeys(p.strip() for p in pool if p.strip()))
    rng = random.Random(seed)
    words = "the a cat dog man woman plays runs guitar street city river quickly slowly red green big small".split()
    while len(pool) < n:
        pool.append(" ".join(rng.choices(words, k=rng.randint(4, 24))).capitalize() + f" ({len(pool)}).")
    rng.shuffle(pool)
    return pool[:n]


def run(coro):
    """asyncio.run, on uvloop when it is installed (uvicorn[standard] brings it): the client shares the machine
    with the server and should cost little per request; every target meets the same client."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    rows: int = 0

    def summary(self) -> dict:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else float("nan")

        return {
            "requests": len(lat),
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
            "wall_s": round(self.wall, 3),
            "requests_per_s": round(len(lat) / self.wall, 2) if self.wall else 0.0,
            "rows_per_s": round(self.rows / self.wall, 2) if self.wall else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(1000 * lat[-1], 2) if lat else float("nan"),
        }


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        self.writer.write(head + headers + b"\r\n" + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_load(
    url: str,
    specs: Iterable,
    clients: int,
    send: Callable[[object], tuple[str, bytes, int]],
    check: Callable[[object, int, bytes], str | None],
    time_limit: float | None = None,
    headers: bytes = b"",
) -> Result:
    """``clients`` connections, each sending the next spec as soon as its last answer came. send(spec) ->
    (path, body, rows); check(spec, status, body) -> an error string or None. Stops when specs run out (or at
    time_limit seconds)."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    queue = list(specs)[::-1]
    result = Result()
    start = time.perf_counter()
    deadline = start + time_limit if time_limit else None

    async def client() -> None:
        conn = Connection(host, int(port))
        try:
            while queue and (deadline is None or time.perf_counter() < deadline):
                spec = queue.pop()
                path, body, rows = send(spec)
                t0 = time.perf_counter()
                try:
                    status, data = await conn.request("POST", path, body, headers)
                except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    continue
                result.latencies.append(time.perf_counter() - t0)
                error = check(spec, status, data)
                if error is not None:
                    result.errors.append(error)
                else:
                    result.rows += rows
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    result.wall = time.perf_counter() - start
    return result


async def wait_healthy(url: str, timeout: float = 300.0, path: str = "/health", proc=None) -> None:
    """Until ``url + path`` answers 200; ``proc``: the server's process, whose exit fails this at once (a server
    that cannot start must not cost the whole timeout)."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server at {url} exited with code {proc.returncode} before it was healthy")
        conn = Connection(host, int(port))
        try:
            status, _ = await conn.request("GET", path)
            if status == 200:
                return
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            conn.close()
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{url}{path} not healthy after {timeout:.0f} s")
