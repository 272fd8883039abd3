"""ColBERT-style late-interaction retrieval with st_backend.MultiVectorEncoder (offline).

No trained ColBERT checkpoint ships offline here, so the late-interaction model is built from the embedded
all-MiniLM-L6-v2: its token vectors, punctuation skipped in documents, L2-normalised, scored by MaxSim. That is
an untrained late-interaction model (real ColBERT checkpoints in ST, PyLate or Stanford format load the same way
with ``MultiVectorEncoder(path)``); it shows the API and that rankings equal plain sentence-transformers'.

Documents are encoded into one packed token matrix (``encode_packed``) and ranked with ``rank``, whose MaxSim
holds one bounded block of similarities at a time. With ../shared/data/arguana present it retrieves for a sample
of ArguAna queries over a sample of its corpus and reports nDCG@10 for both libraries; otherwise it uses a few
built-in passages.
"""

import math
import string
import sys
import time
from pathlib import Path

import sentence_transformers
from sentence_transformers.base.modules import Normalize, Transformer
from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # mteb_eval is a repo-level tool

from mteb_eval.loaders import load_retrieval, subsample_retrieval  # noqa: E402
from st_backend import MultiVectorEncoder  # noqa: E402
from st_backend.default_model import default_model_path  # noqa: E402

ARGUANA = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/data/arguana"
BUILT_IN = {
    "queries": {"q1": "Which planet is the biggest?", "q2": "How do I change my card PIN?"},
    "corpus": {
        "d1": "Jupiter is the largest planet in the Solar System.",
        "d2": "To reset your card PIN, open the banking app and choose Security.",
        "d3": "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
        "d4": "Photosynthesis converts light energy into chemical energy in plants.",
    },
    "qrels": {"q1": {"d1": 1}, "q2": {"d2": 1}},
}


def late_interaction_modules(path: str) -> list:
    backbone = Transformer(path)
    return [backbone, MultiVectorMask(skiplist_words=list(string.punctuation)), Normalize("token_embeddings")]


def ndcg_at_10(ranked: list[str], relevant: dict[str, int]) -> float:
    gain = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:10]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(relevant.values(), reverse=True)[:10]))
    return gain / ideal if ideal else 0.0


if ARGUANA.is_dir():
    data = subsample_retrieval(load_retrieval(ARGUANA), max_queries=20, max_docs=300)
    queries, qrels = data.queries, data.qrels
    corpus = {d: (doc["title"] + " " + doc["text"]).strip() for d, doc in data.corpus.items()}
    source = f"ArguAna sample ({len(queries)} queries, {len(corpus)} documents)"
else:
    queries, corpus, qrels = BUILT_IN["queries"], BUILT_IN["corpus"], BUILT_IN["qrels"]
    source = "built-in sample (ArguAna not found)"
doc_ids, doc_texts = list(corpus), list(corpus.values())

path = default_model_path()
fast = MultiVectorEncoder(modules=late_interaction_modules(path), device="cpu")
plain = sentence_transformers.MultiVectorEncoder(modules=late_interaction_modules(path), device="cpu")

start = time.perf_counter()
packed = fast.encode_packed(doc_texts)  # one (tokens, 384) matrix + offsets, no padding
fast_scores = {}
for qid, query in queries.items():
    # ArguAna queries are arguments from the corpus itself: skip the query's own document, as BEIR does.
    fast_scores[qid] = [(doc_ids[r["corpus_id"]], r["score"]) for r in fast.rank(query, packed)]
fast_seconds = time.perf_counter() - start

start = time.perf_counter()
plain_docs = plain.encode_document(doc_texts)
plain_scores = plain.similarity(plain.encode_query(list(queries.values())), plain_docs)
plain_seconds = time.perf_counter() - start

fast_ndcg, plain_ndcg, same_top10 = [], [], 0
for row, (qid, ranked) in enumerate(fast_scores.items()):
    order = sorted(range(len(doc_ids)), key=lambda i: -float(plain_scores[row, i]))
    plain_ranked = [doc_ids[i] for i in order if doc_ids[i] != qid]
    fast_ranked = [d for d, _ in ranked if d != qid]
    same_top10 += fast_ranked[:10] == plain_ranked[:10]
    fast_ndcg.append(ndcg_at_10(fast_ranked, qrels[qid]))
    plain_ndcg.append(ndcg_at_10(plain_ranked, qrels[qid]))

print(f"{source}; MaxSim over all-MiniLM-L6-v2 token vectors (untrained late interaction)")
print(f"  document token matrix: {tuple(packed.values.shape)}, offsets {tuple(packed.offsets.shape)}")
print(f"  nDCG@10  st_backend {sum(fast_ndcg) / len(fast_ndcg):.4f}  plain ST {sum(plain_ndcg) / len(plain_ndcg):.4f}")
print(f"  identical top 10 for {same_top10}/{len(queries)} queries")
print(f"  encode + rank: st_backend {fast_seconds:.2f}s, plain ST {plain_seconds:.2f}s (2 CPU cores here)")
first = next(iter(queries))
print(f"\nTop 3 for {queries[first][:80]!r}:")
for doc, score in [r for r in fast_scores[first] if r[0] != first][:3]:
    print(f"  {score:7.3f}  {corpus[doc][:100]}")
if same_top10 != len(queries):
    sys.exit("rankings differ from plain sentence-transformers")
