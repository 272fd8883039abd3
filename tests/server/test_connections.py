"""Connections that send nothing, trickle their headers (slowloris) or stream headers without end are closed
after a bounded time or size; kept-alive connections still serve several requests. Raw sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import time

import pytest

from st_backend.server.config import ServerConfig

from .helpers import serve

HEADER_TIMEOUT = 0.5
KEEP_ALIVE = 1.0
BOUND = 5.0  # seconds a test waits before it calls the connection kept open


@pytest.fixture(scope="module")
def server(tiny_embedder):
    live = serve(ServerConfig(model=tiny_embedder, header_timeout=HEADER_TIMEOUT, keep_alive_timeout=KEEP_ALIVE))
    yield live
    live.stop()


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=BOUND)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed; a timeout fails the test."""
    start, data = time.monotonic(), b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"the server kept the connection open past {BOUND} s (got {data[:80]!r})")
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


def read_response(sock: socket.socket) -> bytes:
    """One whole response (headers and a Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_a_connection_that_sends_nothing_is_closed(server):
    with connect(server) as sock:
        data, waited = read_until_closed(sock)
    assert data == b"" and waited < HEADER_TIMEOUT + 2


def test_slowloris_headers_get_408(server):
    """One header byte every 50 ms: each resets no timer; the deadline runs from the request's first byte."""
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        try:
            while time.monotonic() - start < BOUND:
                sock.sendall(b"x")
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, _ = read_until_closed(sock)
        waited = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b'"header_timeout"' in data and b"--header-timeout" in data
    assert waited < HEADER_TIMEOUT + 2


def test_slow_headers_after_a_kept_alive_request(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # a second request, never finished
        data, waited = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408") and waited < HEADER_TIMEOUT + 2


def test_headers_without_end_get_431_before_they_are_all_sent(server):
    """8 KiB header lines, never an empty line: refused once past MAX_HEADER_BYTES, not buffered up to 8 MiB."""
    sent = 0
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        line = b"x-filler: " + b"y" * 8192 + b"\r\n"
        try:
            while sent < 8 * 1024 * 1024:
                sock.sendall(line)
                sent += len(line)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, _ = read_until_closed(sock)
    assert sent < 8 * 1024 * 1024, "the server read 8 MiB of headers"
    if data:  # a reset may eat the answer; when it arrives, it is a 431
        assert data.startswith(b"HTTP/1.1 431"), data[:200]


def test_kept_alive_connection_serves_requests_then_idles_out(server):
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            time.sleep(HEADER_TIMEOUT * 1.2)  # idle between requests: the keep-alive timeout applies, not this one
        data, waited = read_until_closed(sock)
    assert data == b"" and waited < KEEP_ALIVE + 2


def test_a_body_is_not_cut_by_the_header_timeout(server):
    """The deadline covers the headers only: a body that takes longer than it still arrives."""
    body = b'{"input": ["a b c"]}'
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        sock.sendall(body[:5])
        time.sleep(HEADER_TIMEOUT * 2)
        sock.sendall(body[5:])
        assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_the_flags():
    import argparse

    from st_backend.server.cli import add_arguments, config_from

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from(parser.parse_args([]))
    assert (config.header_timeout, config.keep_alive_timeout) == (10.0, 5.0)
    config = config_from(parser.parse_args(["--header-timeout", "2.5", "--keep-alive-timeout", "30"]))
    assert (config.header_timeout, config.keep_alive_timeout) == (2.5, 30.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--header-timeout", "0"])
