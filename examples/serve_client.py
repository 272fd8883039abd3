"""Call a running ``st-backend serve`` two ways: a plain HTTP POST (what curl sends) and the official openai client.

    python examples/serve_client.py                                   # starts its own server, then stops it
    st-backend serve & python examples/serve_client.py --url http://127.0.0.1:8000   # or a running one

The same call with curl:

    curl http://127.0.0.1:8000/v1/embeddings -H 'Content-Type: application/json' \\
        -d '{"model": "all-MiniLM-L6-v2", "input": ["The weather is lovely today.", "It is sunny."]}'
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

TEXTS = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]


def call(url: str, path: str, body: dict | None, api_key: str | None) -> dict:
    """What curl sends: a GET, or a POST of a JSON body; the bearer key when the server has one."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def start_server() -> tuple[subprocess.Popen, str]:
    """``st-backend serve`` (the embedded default model) on a free loopback port, once /health says ready."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "st_backend.server", "--port", str(port), "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="a running server (default: start one here)")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    proc = None
    if args.url is None:
        proc, args.url = start_server()
    try:
        calls(args)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)  # answers what it accepted, then exits
            proc.wait(60)


def calls(args) -> None:

    model = call(args.url, "/v1/models", None, args.api_key)["data"][0]["id"]

    raw = call(args.url, "/v1/embeddings", {"model": model, "input": TEXTS}, args.api_key)
    vectors = [d["embedding"] for d in raw["data"]]
    print(f"http post: {len(vectors)} vectors of {len(vectors[0])} floats, {raw['usage']['prompt_tokens']} tokens")

    from openai import OpenAI  # pip install openai

    client = OpenAI(base_url=f"{args.url}/v1", api_key=args.api_key or "unused")
    response = client.embeddings.create(model=model, input=TEXTS)  # the client asks for base64 and decodes it
    first = response.data[0].embedding
    print(f"openai client: {len(response.data)} vectors of {len(first)} floats, model {response.model}")
    similarity = sum(a * b for a, b in zip(first, response.data[1].embedding))
    print(f"cosine(texts[0], texts[1]) = {similarity:.4f} (the model's vectors are unit length)")


if __name__ == "__main__":
    main()
