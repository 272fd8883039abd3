"""st_backend.MultiVectorEncoder against plain ST 6.2's on the same tiny random weights: per-token vectors,
MaxSim scores, rank order, packed outputs, token pooling, Matryoshka, bad input and the scoring memory bound."""

from __future__ import annotations

import json
import string
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sentence_transformers
import torch
from colbert_models import FORMATS, build_colbert_dir
from compare import assert_same_output
from sentence_transformers.multi_vector_encoder.modules import HierarchicalTokenPooling
from tiny_models import build_st_dir

import st_backend
from st_backend.late_interaction import PackedEmbeddings, _chunks, maxsim

TEXTS = [
    "The cat sat on the mat.",
    "a",
    "",
    "Paris is the capital of France, and Berlin is the capital of Germany! " * 4,
    "what is late interaction?",
    "word " * 80,
    "tokens, punctuation; and: more.",
]
QUERIES = ["capital of France?", "cat", "what is late interaction", "a b c d e f g h i j k l m n o p q r s t"]

ARCHS = ("bert", "xlm-roberta", "modernbert")
EXPANSIONS = {
    "none": None,
    "fixed-attend": {"strategy": "fixed", "attend": True, "length": 12},
    "min-attend": {"strategy": "min", "attend": True, "length": 10},
    "fixed-no-attend": {"strategy": "fixed", "attend": False, "length": 12},
}


def _pair(path):
    return (
        st_backend.MultiVectorEncoder(str(path), device="cpu"),
        sentence_transformers.MultiVectorEncoder(str(path), device="cpu"),
    )


def _ran_packed(model: st_backend.MultiVectorEncoder, task: str | None) -> bool:
    return not isinstance(model.engine_for(task), str)


@pytest.mark.parametrize("attend", [False, True], ids=["classic-expansion", "attended-expansion"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", ARCHS)
def test_formats_match_st(tiny_root, fmt, arch, attend):
    """Each on-disk format and backbone; queries expand to 32 tokens (attend=False: ST's path, else packed)."""
    expansion = {"strategy": "fixed", "attend": attend, "length": 32}
    path = build_colbert_dir(fmt, arch, tiny_root, query_expansion=expansion)
    fast, plain = _pair(path)
    assert [type(m).__name__ for m in fast] == [type(m).__name__ for m in plain]
    # Classic expansion runs queries on ST's path, so that variant checks documents and untasked encode closely.
    methods = ("encode_query",) if attend else ("encode_document", "encode")
    for method in methods:
        for kwargs in ({}, {"batch_size": 2, "normalize_embeddings": True}, {"convert_to_numpy": True}):
            got = getattr(fast, method)(TEXTS, **kwargs)
            want = getattr(plain, method)(TEXTS, **kwargs)
            assert_same_output(got, want, f"{fmt}/{arch} {method}{kwargs}")
    assert _ran_packed(fast, "document") and _ran_packed(fast, "query") == attend
    assert_same_output(fast.encode_document("one text"), plain.encode_document("one text"))
    q, d = plain.encode_query(QUERIES), plain.encode_document(TEXTS)
    assert_same_output(fast.similarity(q, d), plain.similarity(q, d), "maxsim")
    assert_same_output(fast.similarity(fast.encode_query(QUERIES), fast.encode_packed(TEXTS)), plain.similarity(q, d))
    want = plain.similarity(q, d)[0]
    assert [r["corpus_id"] for r in fast.rank(QUERIES[0], TEXTS)] == sorted(range(len(TEXTS)), key=lambda i: -want[i])


@pytest.mark.parametrize("name", list(EXPANSIONS))
@pytest.mark.parametrize("arch", ARCHS)
def test_query_expansion(tiny_root, arch, name):
    path = build_colbert_dir("st", arch, tiny_root, query_expansion=EXPANSIONS[name])
    fast, plain = _pair(path)
    assert_same_output(fast.encode_query(TEXTS + QUERIES), plain.encode_query(TEXTS + QUERIES), name)
    # attend=False (expansion tokens nobody attends to) is the one case that runs ST's padded path.
    assert _ran_packed(fast, "query") == (name != "fixed-no-attend")
    assert _ran_packed(fast, "document")


def test_rank_equals_st_maxsim_order(tiny_root):
    fast, plain = _pair(build_colbert_dir("st", "bert", tiny_root))
    docs = TEXTS + [t.upper() for t in TEXTS] + ["The cat sat on the mat."]  # a duplicate: a tie
    for query in QUERIES:
        want = plain.similarity(plain.encode_query([query]), plain.encode_document(docs))[0]
        order = sorted(range(len(docs)), key=lambda i: -float(want[i]))  # stable: ties keep input order
        ranked = fast.rank(query, docs, return_documents=True)
        assert [r["corpus_id"] for r in ranked] == order
        assert np.allclose([r["score"] for r in ranked], want[order].numpy(), atol=1e-5, rtol=0)
        assert [r["text"] for r in ranked] == [docs[i] for i in order]
        assert fast.rank(query, docs, top_k=3) == [{k: r[k] for k in ("corpus_id", "score")} for r in ranked[:3]]
        # Pre-encoded documents, packed or as a list, give the same ranking.
        packed = fast.encode_packed(docs)
        assert [r["corpus_id"] for r in fast.rank(query, packed)] == order
        assert [r["corpus_id"] for r in fast.rank(query, packed.to_list())] == order
    assert fast.rank("anything", []) == []


def test_meanmaxsim(tiny_root):
    path = build_colbert_dir("st", "bert", tiny_root)
    fast = st_backend.MultiVectorEncoder(str(path), device="cpu", similarity_fn_name="meanmaxsim")
    plain = sentence_transformers.MultiVectorEncoder(str(path), device="cpu", similarity_fn_name="meanmaxsim")
    q, d = plain.encode_query(QUERIES), plain.encode_document(TEXTS)
    assert_same_output(fast.similarity(q, d), plain.similarity(q, d))
    want = plain.similarity(plain.encode_query([QUERIES[0]]), d)[0]
    got = {r["corpus_id"]: r["score"] for r in fast.rank(QUERIES[0], TEXTS)}
    assert np.allclose([got[i] for i in range(len(TEXTS))], want.numpy(), atol=1e-6)


def test_packed_maxsim_edge_cases():
    torch.manual_seed(0)
    q = [torch.randn(5, 8), torch.randn(0, 8), torch.randn(3, 8)]
    d = [torch.randn(7, 8), torch.randn(0, 8), torch.randn(1, 8), torch.randn(40, 8)]
    want = sentence_transformers.util.maxsim(q, d)
    for max_elements in (1, 8, 100, 10**6):  # chunks from one document to all of them
        assert_same_output(maxsim(q, d, max_elements=max_elements), want, f"max_elements={max_elements}")
    assert maxsim([], d).shape == (0, 4) and maxsim(q, []).shape == (3, 0)
    offsets = PackedEmbeddings.from_list(d).offsets
    for max_elements in (5, 50, 500):
        for first, last in _chunks(offsets, 5, max_elements):
            tokens = int(offsets[last] - offsets[first])
            assert tokens * 5 <= max_elements or last == first + 1  # one long document is its own chunk


def test_packed_embeddings_roundtrip(tiny_root):
    fast, plain = _pair(build_colbert_dir("st", "bert", tiny_root))
    packed = fast.encode_packed(TEXTS)
    rows = plain.encode_document(TEXTS)
    assert packed.values.ndim == 2 and packed.offsets.tolist()[-1] == sum(len(r) for r in rows)
    assert_same_output(packed.to_list(), rows)
    assert_same_output([packed[i] for i in range(len(packed))], rows)
    assert_same_output(fast.encode_packed(QUERIES, task="query").to_list(), plain.encode_query(QUERIES))


@pytest.mark.parametrize("arch", ARCHS)
def test_sentence_transformer_packed_token_embeddings(tiny_root, arch):
    path = build_st_dir(arch, tiny_root)
    fast = st_backend.SentenceTransformer(str(path), device="cpu")
    plain = sentence_transformers.SentenceTransformer(str(path), device="cpu")
    packed = fast.encode_packed(TEXTS, prompt="query: ")
    assert_same_output(packed.to_list(), plain.encode(TEXTS, output_value="token_embeddings", prompt="query: "))


def test_token_pooling(tiny_root):
    fast, plain = _pair(build_colbert_dir("st", "bert", tiny_root))
    pooling = HierarchicalTokenPooling(pool_factor=2)
    assert_same_output(
        fast.encode_document(TEXTS, token_pooling=pooling), plain.encode_document(TEXTS, token_pooling=pooling)
    )
    # A pooling step inside the pipeline runs on the packed path too.
    for model in (fast, plain):
        model.insert(len(model) - 1, HierarchicalTokenPooling(pool_factor=2))
    fast._st_engines.clear()  # (a rebuild would also follow the change by itself)
    assert_same_output(fast.encode_document(TEXTS), plain.encode_document(TEXTS))
    assert _ran_packed(fast, "document")


def test_matryoshka(tiny_root, tmp_path):
    path = build_colbert_dir("st", "bert", tiny_root)
    config = json.loads((path / "config_sentence_transformers.json").read_text())
    declared = tmp_path / "declared"
    import shutil

    shutil.copytree(path, declared)
    config["matryoshka_dimensions"] = [16, 8, 4]
    (declared / "config_sentence_transformers.json").write_text(json.dumps(config))
    fast = st_backend.MultiVectorEncoder(str(declared), device="cpu")
    plain = sentence_transformers.MultiVectorEncoder(str(declared), device="cpu")
    want = [torch.nn.functional.normalize(r[:, :8], dim=-1) for r in plain.encode_document(TEXTS)]
    assert_same_output(fast.encode_document(TEXTS, truncate_dim=8), want)
    at_load = st_backend.MultiVectorEncoder(str(declared), device="cpu", truncate_dim=8)
    assert_same_output(at_load.encode_document(TEXTS), want)
    with pytest.raises(ValueError, match=r"truncate_dim=6 .* supported: \[16, 8, 4\]"):
        fast.encode_document(TEXTS, truncate_dim=6)
    with pytest.raises(ValueError, match=r"supported: \[16, 8, 4\]"):
        st_backend.MultiVectorEncoder(str(declared), device="cpu", truncate_dim=6)


def test_bad_input(tiny_root):
    fast, _ = _pair(build_colbert_dir("st", "bert", tiny_root))
    with pytest.raises(TypeError, match=r"inputs\[1\] is int"):
        fast.encode_document(["fine", 3])
    with pytest.raises(ValueError, match="return_documents"):
        fast.rank("q", fast.encode_packed(["a", "b"]), return_documents=True)
    with pytest.raises(TypeError, match="query must be"):
        fast.rank(3, ["a"])
    assert fast.encode_document([]) == []


def test_skiplist_removes_punctuation_from_documents_only(tiny_root):
    fast, plain = _pair(build_colbert_dir("st", "bert", tiny_root, skiplist=list(string.punctuation)))
    text = ["a , b . c ! d ?"]
    doc, query = fast.encode_document(text)[0], fast.encode_query(text)[0]
    assert len(doc) < len(query)
    assert_same_output(fast.encode_document(text), plain.encode_document(text))


def test_rank_10k_documents_within_memory_bound(tiny_root, tmp_path):
    """10,000 documents ranked with a 2**20-element block: peak memory grows by the documents' own matrix
    plus about one block, far below a padded score tensor."""
    path = build_colbert_dir("st", "bert", tiny_root)
    script = textwrap.dedent(
        f"""
        import resource, json, torch
        import st_backend
        from st_backend.late_interaction import PackedEmbeddings
        torch.manual_seed(0)
        model = st_backend.MultiVectorEncoder({str(path)!r}, device="cpu")
        lengths = torch.randint(20, 400, (10_000,))
        rows = [torch.nn.functional.normalize(torch.randn(int(n), 16), dim=-1) for n in lengths]
        docs = PackedEmbeddings.from_list(rows)
        del rows
        query = model.encode_query("what is the capital of france")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ranked = model.rank(query, docs, top_k=10, max_elements=2**20)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        padded = len(query) * len(lengths) * int(lengths.max()) * 4  # ST's (1, q, docs, max_len) fp32 scores
        print(json.dumps({{"grew_kib": after - before, "padded_kib": padded // 1024,
                          "docs_kib": docs.values.numel() * 4 // 1024, "top": ranked[0]["corpus_id"]}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    # The bound: 2**20 float32 elements (4 MiB) plus the (10,000 x query tokens) maxima and scores, with slack.
    assert stats["grew_kib"] < 16 * 1024, stats
    assert stats["padded_kib"] > 20 * stats["grew_kib"], stats
