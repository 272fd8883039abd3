"""``st-backend serve`` through its add_parser / main (the top-level CLI wires it in), and SIGTERM: the server
stops accepting, answers every request it had accepted, and exits."""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from st_backend.server.cli import add_parser, config_from


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="st-backend")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])


def test_defaults_and_flags(monkeypatch):
    monkeypatch.delenv("ST_BACKEND_API_KEY", raising=False)
    config = config_from(parse([]))
    assert (config.model, config.host, config.port, config.api_key, config.batching) == (
        "default",
        "127.0.0.1",
        8000,
        None,
        True,
    )
    monkeypatch.setenv("ST_BACKEND_API_KEY", "from-env")
    args = parse(
        [
            "my/model",
            "--cross-encoder",
            "ce",
            "--sparse",
            "splade",
            "--no-batching",
            "--matryoshka-dimensions",
            "384,128",
            "--max-inputs",
            "7",
            "--queue-capacity",
            "3",
            "--max-batch-tokens",
            "99",
        ]
    )
    config = config_from(args)
    assert config.api_key == "from-env" and config.model == "my/model" and config.cross_encoder == "ce"
    assert config.sparse == "splade" and config.multi_vector is None
    assert (config.batching, config.matryoshka_dimensions, config.max_inputs) == (False, (384, 128), 7)
    assert (config.queue_capacity, config.max_batch_tokens) == (3, 99)
    assert args.fn.__name__ == "run"
    with pytest.raises(SystemExit):
        parse(["--max-inputs", "0"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_arguments_serves_the_default_model_and_sigterm_drains():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    code = f"import sys; from st_backend.server.cli import main; sys.exit(main(['--port', '{port}']))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["all-MiniLM-L6-v2"]

        n, results = 4, {}
        texts = [f"sentence {i} about a quiet evening by the river, with some more words to embed" for i in range(48)]

        def call(i: int) -> None:
            results[i] = httpx.post(f"{url}/v1/embeddings", json={"input": texts}, timeout=120)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        while True:  # every request counted (accepted and queued) before the signal
            metrics = httpx.get(f"{url}/metrics").text
            match = re.search(r'st_request_input_length_count{route="/v1/embeddings"} (\d+)', metrics)
            if match and int(match.group(1)) >= n:
                break
            time.sleep(0.02)
        assert len(results) < n, "the requests finished before the signal: make them longer"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.post(f"{url}/v1/embeddings", json={"input": "late"}, timeout=5)
        for t in threads:
            t.join(120)
        assert all(results[i].status_code == 200 and len(results[i].json()["data"]) == len(texts) for i in range(n))
        # uvicorn re-raises the signal after its graceful shutdown: the exit status says SIGTERM.
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_model_that_fails_to_load_exits_1(tmp_path):
    """The CLI ends its own loop when loading fails: exit status 1, not the 143 of a SIGTERM to itself."""
    missing = tmp_path / "no-such-model"
    missing.mkdir()
    code = f"import sys; from st_backend.server.cli import main; sys.exit(main([{str(missing)!r}, '--port', '{free_port()}']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "loading failed" in proc.stdout + proc.stderr
