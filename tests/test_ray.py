"""st_backend.adapters.ray on a local Ray instance (CPU): Ray Data outputs equal local encode / predict row by
row. Skips when ray is not installed (``pip install -e ".[ray]"``)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
from colbert_models import build_colbert_dir
from tiny_models import build_hf_dir

import st_backend

ray = pytest.importorskip("ray", reason='ray is not installed: pip install -e ".[ray]" (or ".[test]")')
pyarrow_parquet = pytest.importorskip("pyarrow.parquet")

from st_backend.adapters.ray import Embed, Rerank, TokenVectors  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ray_embed_arguana.py"
# Two logical CPUs; each actor asks for half of one, so a read or write task always finds one free (Ray Data
# waits forever for a CPU its actors hold).
ACTOR_CPUS = 0.5


def texts(n: int = 120) -> list[str]:
    words = "the cat sat on a mat while late interaction models rank passages by meaning".split()
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(3 + (i * 13) % 70)) for i in range(n)]


def assert_rows_equal(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g, dtype=np.float64).ravel(), np.asarray(w, dtype=np.float64).ravel()
        assert g.shape == w.shape
        assert np.abs(g - w).max() <= 1e-5
        assert g @ w / max(np.linalg.norm(g) * np.linalg.norm(w), 1e-30) >= 0.99999


@pytest.fixture(scope="module")
def ray_session():
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"\nray.init: {time.perf_counter() - start:.1f}s")
    yield
    ray.shutdown()


def by_id(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: r["id"])  # actors return batches in any order


def test_embed_equals_local(ray_session, default_model_path):
    items = texts()
    want = st_backend.SentenceTransformer(default_model_path, device="cpu").encode_document(items)
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(items)], override_num_blocks=4)
    start = time.perf_counter()
    out = ds.map_batches(
        Embed,
        fn_constructor_kwargs={"model": default_model_path, "role": "document", "device": "cpu"},
        batch_size=32,
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=ACTOR_CPUS,
        batch_format="pyarrow",
    ).take_all()
    print(f"Embed, 2 actors, their start-up included: {time.perf_counter() - start:.1f}s")
    rows = by_id(out)
    assert [r["text"] for r in rows] == items
    assert_rows_equal([r["embedding"] for r in rows], want)


@pytest.mark.parametrize("batch_format", ["numpy", "pandas", "pyarrow"])
def test_batch_formats(tiny_root, batch_format):
    """The callables on each batch format map_batches hands them, called here (no actors): the column added."""
    import pandas as pd
    import pyarrow as pa

    path = str(build_colbert_dir("st", "bert", tiny_root, query_expansion=None))
    items = texts(10)
    batch = {"id": np.arange(10), "text": np.array(items, dtype=object)}
    batch = {"numpy": batch, "pandas": pd.DataFrame(batch), "pyarrow": pa.table(batch)}[batch_format]
    vectors = TokenVectors(path, device="cpu")
    out = vectors(batch)

    def column(name):
        return out.column(name).to_pylist() if batch_format == "pyarrow" else list(out[name])

    assert_rows_equal([np.asarray(r) for r in column("token_vectors")], vectors.model.encode_document(items))
    assert column("id") == list(range(10))
    if batch_format == "pyarrow":
        assert str(out.schema.field("token_vectors").type) == "list<item: fixed_size_list<item: float>[16]>"
    with pytest.raises(KeyError, match="no column 'passage'"):
        TokenVectors(vectors.model, column="passage")(batch)


def test_rerank_equals_predict(ray_session, tiny_root):
    path = str(build_hf_dir("bert", tiny_root, task="seq-cls"))
    items = texts()
    pairs = [(items[(3 * i) % len(items)], d) for i, d in enumerate(items)]
    want = st_backend.CrossEncoder(path, device="cpu").predict(pairs)
    ds = ray.data.from_items([{"id": i, "q": q, "d": d} for i, (q, d) in enumerate(pairs)], override_num_blocks=3)
    out = ds.map_batches(
        Rerank,
        fn_constructor_kwargs={"model": path, "query_column": "q", "document_column": "d", "device": "cpu"},
        batch_size=25,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=ACTOR_CPUS,
    ).take_all()
    assert_rows_equal([[r["score"]] for r in by_id(out)], [[s] for s in want])


def test_token_vectors_equal_encode(ray_session, tiny_root):
    path = str(build_colbert_dir("st", "bert", tiny_root, query_expansion=None))
    items = texts(60)
    want = st_backend.MultiVectorEncoder(path, device="cpu").encode_document(items)
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(items)], override_num_blocks=2)
    out = ds.map_batches(
        TokenVectors,
        fn_constructor_kwargs={"model": path, "device": "cpu"},
        batch_size=16,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=ACTOR_CPUS,
        batch_format="pyarrow",
    ).take_all()
    rows = by_id(out)
    assert [len(r["token_vectors"]) for r in rows] == [len(w) for w in want]  # ragged: one item per token
    assert_rows_equal([np.asarray(r["token_vectors"]) for r in rows], want)


def test_example_writes_parquet(ray_session, default_model_path, tmp_path):
    """examples/ray_embed_arguana.py on a small BEIR-format corpus: Parquet rows equal local encode_document."""
    docs = [{"_id": f"d{i}", "title": f"title {i}", "text": t, "metadata": {}} for i, t in enumerate(texts(40))]
    corpus = tmp_path / "corpus.jsonl.gz"
    with gzip.open(corpus, "wt") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs)
    spec = importlib.util.spec_from_file_location("ray_embed_arguana", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "out"
    assert example.embed_corpus(str(corpus), str(out), default_model_path, 1, 16, None, actor_cpus=ACTOR_CPUS) == 40
    table = pyarrow_parquet.read_table(out).to_pylist()
    rows = sorted(table, key=lambda r: int(r["_id"][1:]))
    passages = [f"{d['title']} {d['text']}".strip() for d in docs]
    assert [r["text"] for r in rows] == passages
    want = st_backend.SentenceTransformer(default_model_path, device="cpu").encode_document(passages)
    assert_rows_equal([r["embedding"] for r in rows], want)


def test_actor_killed_mid_call_loses_no_row(ray_session, default_model_path, tmp_path):
    import os

    # Defined here, not at module level: Ray's workers pickle it by value (they cannot import this test module).
    class DiesOnce(Embed):
        """Embed whose actor process exits, once across the run, in the middle of its second batch (a marker file
        says it has died), as an actor killed mid-call would."""

        def __init__(self, marker: str, **kwargs) -> None:
            super().__init__(**kwargs)
            self.marker, self.calls = Path(marker), 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls == 2 and not self.marker.exists():
                self.marker.write_text(str(__import__("os").getpid()))
                __import__("os")._exit(1)
            return super().__call__(batch)

    items = texts(160)
    want = st_backend.SentenceTransformer(default_model_path, device="cpu").encode_document(items)
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(items)], override_num_blocks=4)
    marker = tmp_path / "died"
    out = ds.map_batches(
        DiesOnce,
        fn_constructor_kwargs={
            "marker": str(marker),
            "model": default_model_path,
            "role": "document",
            "device": "cpu",
        },
        batch_size=16,
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=ACTOR_CPUS,
        batch_format="pyarrow",
        max_restarts=-1,  # Ray restarts the dead actor and runs its batch again
        max_task_retries=-1,
    ).take_all()
    assert marker.exists(), "no actor died: the test did not test anything"
    dead = int(marker.read_text())
    rows = by_id(out)
    assert [r["id"] for r in rows] == list(range(len(items)))  # every row once: none lost, none doubled
    assert_rows_equal([r["embedding"] for r in rows], want)
    with pytest.raises(ProcessLookupError):
        os.kill(dead, 0)
