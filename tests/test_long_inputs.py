"""Texts far past max_seq_length are cut before tokenizing (engine/precut.py) and the results stay exactly ST's:
sentence embeddings, token embeddings, cross-encoder pairs, and template-aware truncation, across tokenizer
families (WordPiece, byte-level BPE, SentencePiece-style Unigram / Metaspace), with adversarial texts."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import sentence_transformers
from compare import assert_rows_close, assert_same_output
from conftest import SHARED_DATA
from test_cross_encoder import QWEN_TEMPLATE, causal_pair
from tiny_models import ARCHS, build_hf_dir, build_st_dir

import st_backend
from st_backend.engine.precut import PreCut

ARGUANA = SHARED_DATA / "arguana" / "corpus.jsonl.gz"


def documents() -> list[str]:
    if not ARGUANA.is_file():
        pytest.skip(f"{ARGUANA} is missing (the shared ArguAna data)")
    with gzip.open(ARGUANA, "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for _, line in zip(range(200), f)]
    return ["\n\n".join(docs[i : i + 25]) for i in range(0, 200, 25)]  # ~30k characters each


ADVERSARIAL = [
    "x" * 120_000,  # no whitespace at all: a single word, never cut
    "東京は日本の首都です。" * 3000,
    "emoji 👩‍👩‍👧‍👦 and 🙂🙃 " * 3000,
    "cafe\u0301 re\u0301sume\u0301 nai\u0308ve " * 3000,  # combining marks: NFC / NFKC compose them
    "tabs\tand\nnewlines\r\n mixed   runs    of   spaces " * 2000,
    "the ﬁnal straße ÀÉÎÕÜ ligatures " * 3000,
    "[SEP] [CLS] <s> </s> <|im_end|> special tokens written in the text " * 1500,
]


@pytest.fixture
def cut_spy(monkeypatch):
    """How many texts PreCut actually cut (so that a test cannot pass with the cut turned off)."""
    cuts = []
    original = PreCut.prefixes

    def prefixes(self, texts, keep):
        out = original(self, texts, keep)
        cuts.extend(1 for a, b in zip(texts, out) if a is not b)
        return out

    monkeypatch.setattr(PreCut, "prefixes", prefixes)
    return cuts


@pytest.mark.parametrize("arch", ARCHS)
def test_long_texts_embed_exactly_as_st(tiny_root, cut_spy, arch):
    path = str(build_st_dir(arch, tiny_root))
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    fast = st_backend.SentenceTransformer(path, device="cpu")
    texts = documents() + ADVERSARIAL + ["short one", ""]
    assert_rows_close(fast.encode(texts), plain.encode(texts))
    if arch not in ("qwen3", "llama"):  # left-padded decoders' token embeddings run ST's path by design
        got = fast.encode(texts, output_value="token_embeddings")
        assert_same_output(got, plain.encode(texts, output_value="token_embeddings"), "token embeddings")
    precut = fast.engine_for(None).tokenizer.precut
    if precut.reason is None:
        assert cut_spy, "no text was cut: the test would not exercise the cut"
    else:
        assert not cut_spy  # e.g. the tiny Llama tokenizer's Metaspace(split=False): tokenized whole


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta", "modernbert", "qwen3"])
def test_long_pairs_score_exactly_as_st(tiny_root, arch):
    path = str(build_hf_dir(arch, tiny_root, "seq-cls"))
    plain = sentence_transformers.CrossEncoder(path, device="cpu")
    fast = st_backend.CrossEncoder(path, device="cpu")
    docs = documents()
    pairs = [("what is the best argument?", d) for d in docs[:4]] + [(docs[4], "short doc")]
    if arch == "bert":  # both sides long: left whole (tokenizers is slow on these, so one architecture)
        pairs.append((docs[5], docs[6]))
    pairs += [(q, "short") for q in ADVERSARIAL[:3]]
    np.testing.assert_allclose(fast.predict(pairs), plain.predict(pairs), atol=1e-5)


def test_template_truncation_is_the_same_with_and_without_the_cut(tiny_root):
    _, fast = causal_pair(tiny_root, "qwen3", QWEN_TEMPLATE)
    engine = fast.engine()
    docs = documents()
    pairs = [("what is it about?", d) for d in docs[:3]] + [(docs[3], "a short document"), (docs[4], docs[5])]
    pairs += [("q", text) for text in ADVERSARIAL]
    cut = fast.token_ids(pairs)
    precut, engine.tokenizer.precut = engine.tokenizer.precut, None
    try:
        whole = fast.token_ids(pairs)
    finally:
        engine.tokenizer.precut = precut
    assert cut == whole
    assert all(len(ids) <= fast.max_seq_length for ids in cut)
