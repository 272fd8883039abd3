"""The checks every model family registered after the core five passes (tests/families/): packed, no fallback
note, equal to plain ST on the same tiny random weights, and independent of how its inputs were batched.

The core five run the full equivalence matrix (test_equivalence.py); a family adds its architecture and needs
only these, so each new family costs seconds of CI, not minutes."""

from __future__ import annotations

import logging

import numpy as np
import sentence_transformers
from compare import assert_rows_close
from tiny_models import build_hf_dir, build_st_dir

import st_backend
from st_backend.engine.engine import Engine
from st_backend.models import _fallback

WORDS = "the quick brown fox jumps over a lazy dog while seven tired cats watch from under wet grass".split()
TEXTS = [
    "",
    "a",
    "A man is playing a guitar.",
    " ".join(WORDS[:7]),
    " ".join(WORDS),
    " ".join(WORDS * 2),
    " ".join(WORDS * 6),  # past the tiny models' 64 tokens: truncated
    "Ünïcödé 東京 🙂 text",
    "a",
    "numbers 1 2 3 4 5 6 7 8 9 10",
]
PAIRS = [
    ("what is a cat", "a cat is a small animal"),
    ("q", "d " * 100),  # truncated
    ("", ""),
    ("long query " * 40, "doc"),
    ("Ünïcödé 🙂", "東京 text"),
]


def _no_fallback(caplog) -> None:
    notes = [r.getMessage() for r in caplog.records if "own path" in r.getMessage()]
    assert not notes, notes
    caplog.clear()

    # Each fallback reason is said once per process: forget those said before, so the next check sees its own.
    _fallback._said.clear()


def check_embedder(arch: str, root, caplog, poolings=("mean", "cls", ("cls", "mean", "max")), **build) -> None:
    """Each pooling: encode equals plain ST's, for batch sizes 1, 3 and ST's default, with no fallback note."""
    _no_fallback(caplog)
    for pooling in poolings:
        path = str(build_st_dir(arch, root, pooling_mode=pooling, **build))
        plain = sentence_transformers.SentenceTransformer(path, device="cpu")
        fast = st_backend.SentenceTransformer(path, device="cpu")
        assert isinstance(fast.engine_for(), Engine), fast.engine_for()
        want = plain.encode(TEXTS)
        with caplog.at_level(logging.WARNING, logger="st_backend"):
            for batch_size in (32, 1, 3):
                assert_rows_close(fast.encode(TEXTS, batch_size=batch_size), want, what=f"{pooling} bs={batch_size}")
            # Batches are cut by the token budget, not batch_size: a small budget and another order change them.
            small = st_backend.SentenceTransformer(
                path, device="cpu", engine=st_backend.EngineConfig(max_batch_tokens=64)
            )
            order = [7, 2, 9, 0, 5, 3, 8, 1, 6, 4]
            assert_rows_close(small.encode([TEXTS[i] for i in order]), want[order], what=f"{pooling} small batches")
            one = [fast.encode(text) for text in TEXTS]  # one text per call: a batch of one sequence
            assert_rows_close(np.stack(one), want, what=f"{pooling} one text per call")
        _no_fallback(caplog)
        # Token embeddings of a left-padding tokenizer run ST's own path by design (batch-dependent pad rows).
        tokens = fast.encode(TEXTS[:4], output_value="token_embeddings")
        for got, ref in zip(tokens, plain.encode(TEXTS[:4], output_value="token_embeddings")):
            assert_rows_close(got, ref, what=f"{pooling} token embeddings")
        caplog.clear()


def check_cross_encoder(arch: str, root, caplog, num_labels: int = 1, **build) -> None:
    """predict (and rank for one label) equal plain ST's on the *ForSequenceClassification head."""
    _no_fallback(caplog)
    path = str(build_hf_dir(arch, root, "seq-cls", num_labels=num_labels, **build))
    plain = sentence_transformers.CrossEncoder(path, device="cpu")
    fast = st_backend.CrossEncoder(path, device="cpu")
    assert isinstance(fast.engine(), Engine), fast.engine()
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        for batch_size in (32, 1):
            got = fast.predict(PAIRS, batch_size=batch_size)
            assert_rows_close(got.reshape(len(PAIRS), -1), plain.predict(PAIRS).reshape(len(PAIRS), -1))
        if num_labels == 1:
            docs = [d for _, d in PAIRS]
            assert fast.rank("what is a cat", docs) == plain.rank("what is a cat", docs) or _close_ranks(
                fast.rank("what is a cat", docs), plain.rank("what is a cat", docs)
            )
    _no_fallback(caplog)


def _close_ranks(got, want) -> bool:
    assert [r["corpus_id"] for r in got] == [r["corpus_id"] for r in want]
    assert all(abs(g["score"] - w["score"]) <= 1e-5 for g, w in zip(got, want))
    return True
