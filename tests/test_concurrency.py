"""One loaded model shared by many threads (web apps, LangChain executors): every call gets plain ST's rows for its
own inputs, whatever runs beside it, packed calls and ST's own path mixed; the model's attention implementation
is left as it was."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import sentence_transformers
from compare import assert_rows_close
from test_cross_encoder import PAIRS, QWEN_TEMPLATE, causal_pair
from tiny_models import build_st_dir

import st_backend

THREADS = 8
CALLS = 4
TEXTS = [
    "A man is playing a guitar.",
    "",
    "The quick brown fox jumps over the lazy dog. " * 6,
    "東京 and Ünïcödé 🙂",
    "short",
    "Machine learning models convert sentences into dense vectors, " * 3,
    "How do I reset my bank card PIN?",
    "word " * 200,  # past max_seq_length: truncated
] * 4


def _attn(model) -> str:
    return model[0].auto_model.config._attn_implementation


def _run_threads(work) -> list:
    """work(rng) -> list of failures (strings); every thread's calls in parallel, all failures collected."""
    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(work, random.Random(seed)) for seed in range(THREADS)]
        return [failure for f in futures for failure in f.result()]


def _embedder_work(fast, reference: np.ndarray):
    def work(rng: random.Random) -> list[str]:
        failures = []
        for _ in range(CALLS):
            idx = rng.sample(range(len(TEXTS)), rng.randint(1, len(TEXTS)))
            texts = [TEXTS[i] for i in idx]
            st_path = rng.random() < 0.3  # output_value=None runs ST's own path on the same model
            try:
                if st_path:
                    got = np.stack([d["sentence_embedding"].numpy() for d in fast.encode(texts, output_value=None)])
                else:
                    got = fast.encode(texts, batch_size=rng.choice([1, 3, 32, 4096]))
                assert_rows_close(got, reference[idx])
            except Exception as exc:  # collected, so one thread's failure does not hide another's
                failures.append(f"{'ST path' if st_path else 'packed'} call of {len(idx)} texts: {exc!r}")
        return failures

    return work


@pytest.mark.parametrize("which", ["minilm", "bert", "qwen3-lasttoken"])
def test_threads_share_one_embedder(tiny_root, default_model_path, which):
    path = default_model_path if which == "minilm" else str(build_st_dir(which.split("-")[0], tiny_root))
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    fast = st_backend.SentenceTransformer(path, device="cpu")
    before = _attn(fast)
    reference = plain.encode(TEXTS)
    assert _run_threads(_embedder_work(fast, reference)) == []
    assert _attn(fast) == before
    assert_rows_close(fast.encode(TEXTS, output_value=None)[0]["sentence_embedding"][None], reference[:1])


def test_threads_share_one_template_reranker(tiny_root):
    plain, fast = causal_pair(tiny_root, "qwen3", QWEN_TEMPLATE)
    pairs = [p for p in PAIRS if len(p[0]) < 100] * 4
    reference = plain.predict(pairs)
    before = fast[0].auto_model.config._attn_implementation

    def work(rng: random.Random) -> list[str]:
        failures = []
        for _ in range(CALLS):
            idx = rng.sample(range(len(pairs)), rng.randint(1, len(pairs)))
            try:
                got = fast.predict([pairs[i] for i in idx], batch_size=rng.choice([1, 4, 32]))
                np.testing.assert_allclose(got, reference[idx], atol=1e-5)
            except Exception as exc:
                failures.append(f"predict of {len(idx)} pairs: {exc!r}")
        return failures

    assert _run_threads(work) == []
    assert fast[0].auto_model.config._attn_implementation == before
