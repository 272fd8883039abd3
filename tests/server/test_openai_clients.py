"""Real clients against a real server on the embedded all-MiniLM-L6-v2: the official openai client (float and
base64), LangChain's OpenAIEmbeddings, token-id input, usage, /tokenize, and the example script."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import sentence_transformers
import torch

from st_backend.server.config import ServerConfig

from .helpers import assert_rows_close, serve

openai = pytest.importorskip("openai")
TEXTS = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "",
    "Ünïcödé text, 東京, emoji 🙂",
    "Sentence embeddings map text to vectors; similar meanings land close together. " * 30,  # truncated at 256
]
MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def server():
    live = serve(ServerConfig(model="default"))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def plain(default_model_path):
    return sentence_transformers.SentenceTransformer(default_model_path, device="cpu")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("encoding_format", ["float", "base64", None])
def test_openai_client_equals_encode(client, plain, encoding_format):
    kwargs = {"encoding_format": encoding_format} if encoding_format else {}  # None: the client asks for base64
    response = client.embeddings.create(model=MODEL, input=TEXTS, **kwargs)
    got = [d.embedding for d in sorted(response.data, key=lambda d: d.index)]
    if encoding_format == "base64":  # asked for by name, the client hands the strings back as they came
        got = [np.frombuffer(base64.b64decode(g), dtype="<f4") for g in got]
    assert [d.index for d in response.data] == list(range(len(TEXTS)))
    assert_rows_close(got, plain.encode(TEXTS))
    want_tokens = sum(min(len(plain.tokenizer(t)["input_ids"]), plain.max_seq_length) for t in TEXTS)
    assert response.usage.prompt_tokens == response.usage.total_tokens == want_tokens
    assert response.model == MODEL


def test_openai_single_string(client, plain):
    response = client.embeddings.create(model=MODEL, input="just one")
    assert len(response.data) == 1
    assert_rows_close([response.data[0].embedding], plain.encode(["just one"]))


def test_models_list(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_langchain_openai_embeddings(server, plain):
    langchain_openai = pytest.importorskip("langchain_openai")
    emb = langchain_openai.OpenAIEmbeddings(
        model=MODEL,
        base_url=f"{server.url}/v1",
        api_key="unused",
        check_embedding_ctx_length=False,  # send raw strings (no tiktoken ids)
        max_retries=0,
    )
    assert_rows_close(emb.embed_documents(TEXTS[:4]), plain.encode(TEXTS[:4]))
    assert_rows_close([emb.embed_query("a query")], plain.encode(["a query"]))


def _padded_plain(plain, rows: list[list[int]]) -> np.ndarray:
    """Plain ST's own modules on one right-padded batch of exactly these ids."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        out = plain({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)})
    return out["sentence_embedding"].numpy()


def test_token_ids_equal_plain_st_on_those_ids(client, plain):
    rows = [plain.tokenizer(t)["input_ids"] for t in TEXTS[:4]]
    rows.append([7592, 2088])  # no special tokens: embedded as given, not re-tokenized
    response = client.embeddings.create(model=MODEL, input=rows, encoding_format="float")
    assert_rows_close([d.embedding for d in response.data], _padded_plain(plain, rows))
    assert response.usage.prompt_tokens == sum(len(r) for r in rows)
    one = client.embeddings.create(model=MODEL, input=rows[-1], encoding_format="float")  # one list of ints
    assert_rows_close([one.data[0].embedding], _padded_plain(plain, rows[-1:]))


def test_tokenize_matches_tokenizer(server, plain):
    body = httpx.post(f"{server.url}/tokenize", json={"input": ["hello world", "x"]}).json()
    assert [d["ids"] for d in body["data"]] == [plain.tokenizer(t)["input_ids"] for t in ("hello world", "x")]
    assert body["data"][0]["tokens"] == ["[CLS]", "hello", "world", "[SEP]"]
    assert body["count"] == 7 and body["max_model_len"] == 256
    bare = httpx.post(f"{server.url}/tokenize", json={"prompt": "hello", "add_special_tokens": False}).json()
    assert bare["data"][0]["ids"] == [7592]


def test_info_and_health(server):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    info = httpx.get(f"{server.url}/info").json()
    (model,) = info["models"]
    assert model["name"] == MODEL and model["engine"]["path"] == "packed" and model["engine"]["attention"]
    assert info["limits"]["max_inputs"] == 2048


def test_example_script(server):
    example = Path(__file__).resolve().parents[2] / "examples" / "serve_client.py"
    out = subprocess.run(
        [sys.executable, str(example), "--url", server.url], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "openai client" in out.stdout and "384" in out.stdout
