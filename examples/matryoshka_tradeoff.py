"""Matryoshka size/quality trade-off on STS Benchmark test (offline, embedded default model).

Declares Matryoshka sizes at load (``matryoshka_dimensions=``), prints the STS Spearman of each size next to plain
sentence-transformers' on the same model, checks that each size is what ``encode(truncate_dim=...)`` returns, and
shows an undeclared size being refused (strict is on by default once sizes are declared).

all-MiniLM-L6-v2 was NOT trained as a Matryoshka model: the sizes below are declared here only to show the API,
and its smaller sizes are plain prefixes of an embedding never trained to be cut (a model trained with
MatryoshkaLoss is built to lose less). The point is the table and the refusal, not this model's numbers.

    python examples/matryoshka_tradeoff.py [path/to/sts-test.csv]

Without an argument it reads ../shared/data/stsbenchmark/sts-test.csv (beside the repo); if that file is not
there, it runs on a small built-in sample instead and says so.
"""

import sys
from pathlib import Path

import numpy as np
import sentence_transformers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # mteb_eval is a repo-level tool

from _samples import STS_SAMPLE  # noqa: E402

from mteb_eval.loaders import load_sts  # noqa: E402
from st_backend import SentenceTransformer  # noqa: E402
from st_backend.default_model import default_model_path  # noqa: E402

DIMS = [384, 256, 128, 64, 32]  # 384 is all-MiniLM-L6-v2's full size
STS_TEST = Path(__file__).resolve().parents[2] / "shared/data/stsbenchmark/sts-test.csv"


def rank(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank (as scipy.stats.rankdata)."""
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(x, y) -> float:
    return float(np.corrcoef(rank(np.asarray(x)), rank(np.asarray(y)))[0, 1])


def sts_spearman(emb: np.ndarray) -> float:
    """Spearman of the pairs' cosine similarity (rows are normalised, so a dot product) against the gold scores."""
    return spearman(np.sum(emb[idx1] * emb[idx2], axis=1), gold)


def cut(emb: np.ndarray, dim: int) -> np.ndarray:
    """What truncate_dim=dim with normalize_embeddings=True returns: the first dim values, re-normalised."""
    emb = emb[:, :dim]
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


if len(sys.argv) > 1 or STS_TEST.exists():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else STS_TEST
    data = load_sts(path)
    s1, s2, gold, source = data.sentence1, data.sentence2, data.score, f"{path.name}, {len(data.score)} pairs"
else:
    gold, s1, s2 = (list(col) for col in zip(*STS_SAMPLE))
    source = f"built-in sample of {len(STS_SAMPLE)} pairs ({STS_TEST} is not here): numbers are illustrative only"
unique = sorted(set(s1) | set(s2))
position = {s: i for i, s in enumerate(unique)}
idx1, idx2 = [position[s] for s in s1], [position[s] for s in s2]

model_path = default_model_path()
model = SentenceTransformer(model_path, device="cpu", matryoshka_dimensions=DIMS)  # strict by default once declared
plain = sentence_transformers.SentenceTransformer(model_path, device="cpu")  # plain ST: no declared sizes, no checks
models = {"st_backend": model, "plain ST": plain}

# Each model encodes every distinct sentence once, at full size. A size's embedding is then that one cut to its
# first dim values and re-normalised, which is what encode(truncate_dim=dim, normalize_embeddings=True) returns:
# checked below for both models, per size, on CHECK sentences (one full encode per size would take 5x as long).
CHECK = min(64, len(unique))
full = {name: m.encode(unique, normalize_embeddings=True, batch_size=64) for name, m in models.items()}

print(f"STS Benchmark Spearman (cosine) per Matryoshka size: {source}")
print("all-MiniLM-L6-v2 was not trained as a Matryoshka model: the sizes are declared here to show the API, and")
print("each smaller size is just a prefix of an embedding that was never trained to be cut.")
print(f"{'dim':>5} | {'Spearman (st_backend)':>21} | {'Spearman (plain ST)':>19} | {'bytes/vector (fp32)':>19}")
for dim in model.matryoshka.dimensions:
    for name, m in models.items():
        per_call = m.encode(unique[:CHECK], truncate_dim=dim, normalize_embeddings=True)
        assert np.allclose(per_call, cut(full[name][:CHECK], dim), atol=1e-5), f"{name}: truncate_dim={dim} differs"
    ours, theirs = (sts_spearman(cut(full[name], dim)) for name in models)
    print(f"{dim:>5} | {ours:>21.4f} | {theirs:>19.4f} | {dim * 4:>19}")
diff = np.abs(full["st_backend"] - full["plain ST"]).max()
print("(each size: the full embedding cut and re-normalised, equal to encode(truncate_dim=...) for both models on")
print(f" {CHECK} sentences per size; largest |st_backend - plain ST| over all full-size embeddings: {diff:.1e})")

try:
    model.encode(s1[:1], truncate_dim=100)
except ValueError as exc:
    print(f"\ntruncate_dim=100 (not declared) is refused:\n  ValueError: {exc}")
else:
    raise SystemExit("truncate_dim=100 was not refused")
