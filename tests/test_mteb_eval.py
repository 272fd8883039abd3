"""mteb_eval: real MTEB 2.x runs of plain sentence-transformers vs st_backend, and strict local-file parsing."""

from __future__ import annotations

import gzip
import json
import os

import pytest
from conftest import SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

pytest.importorskip("mteb")

from mteb_eval import loaders  # noqa: E402

# Sizes kept small so the file runs in a few minutes on 2 CPU cores.
BANKING_TRAIN, BANKING_TEST = 2000, None  # test set in full (3080)
ARGUANA_QUERIES, ARGUANA_DOCS = 100, 1000
# The sparse run: plain ST runs the MLM head over every padded position, so fewer texts, cut at 128 tokens.
SPARSE_QUERIES, SPARSE_DOCS, SPARSE_MAX_LEN = 20, 200, 128

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} not present")


def _run(model_path, task):
    from mteb_eval.runner import compare

    report = compare(model_path, [task], batch_size=32)
    (row,) = report["rows"]
    return row


# ------------------------------------------------------------------------------------ real MTEB runs


@needs_data
def test_stsbenchmark_test_matches_plain_st(default_model_path):
    from mteb_eval.tasks import sts_task

    task = sts_task(SHARED_DATA / "stsbenchmark" / "sts-test.csv")
    assert len(task._data.score) == 1379
    row = _run(default_model_path, task)
    assert row["metric"] == "cosine_spearman"
    assert round(row["backend"], 3) == round(row["plain"], 3)
    assert round(row["plain"], 4) == 0.8203


@needs_data
def test_banking77_matches_plain_st(default_model_path):
    from mteb_eval.tasks import classification_task

    task = classification_task(SHARED_DATA / "banking77", max_train=BANKING_TRAIN, max_test=BANKING_TEST)
    row = _run(default_model_path, task)
    assert row["metric"] == "accuracy"
    assert round(row["backend"], 3) == round(row["plain"], 3)
    assert 0.5 < row["plain"] < 1.0


@needs_data
def test_arguana_subsample_matches_plain_st(default_model_path):
    from mteb_eval.tasks import retrieval_task

    task = retrieval_task(SHARED_DATA / "arguana", max_queries=ARGUANA_QUERIES, max_docs=ARGUANA_DOCS)
    assert task.ignore_identical_ids is True
    assert len(task._data.queries) == ARGUANA_QUERIES
    assert len(task._data.corpus) == ARGUANA_DOCS
    row = _run(default_model_path, task)
    assert row["metric"] == "ndcg_at_10"
    assert round(row["backend"], 3) == round(row["plain"], 3)
    assert 0.2 < row["plain"] < 1.0


@needs_data
def test_arguana_sparse_encoder_matches_plain_st(tmp_path, notes):
    """The CLI on a SPLADE folder: SparseEncoder on both sides (the type saved with the model), through mteb's
    sparse wrapper. The random weights are reshaped to retrieve far above chance, so equal nDCG@10 means the two
    sides' rankings agree (1% noise on st_backend's document values moves it by 7e-4)."""
    import st_backend
    from mteb_eval.runner import lexical_splade, load_model, main, model_type_of
    from st_backend.bench.models import build_splade_dir

    path = lexical_splade(build_splade_dir("bert", str(tmp_path), "tiny", max_len=SPARSE_MAX_LEN))
    assert model_type_of(path) == "SparseEncoder"
    assert isinstance(load_model("st_backend", path, model_type="SparseEncoder"), st_backend.SparseEncoder)
    out = tmp_path / "out"
    argv = ["--model", path, "--retrieval", str(SHARED_DATA / "arguana"), "--out", str(out)]
    main(argv + ["--retrieval-max-queries", str(SPARSE_QUERIES), "--retrieval-max-docs", str(SPARSE_DOCS)])
    report = json.loads((out / "results.json").read_text())
    assert report["model_type"] == "SparseEncoder"
    (row,) = report["rows"]
    assert row["metric"] == "ndcg_at_10"
    assert row["plain"] > 0.2  # chance is about 0.02 over 200 documents
    assert abs(row["backend"] - row["plain"]) <= 1e-4
    assert notes() == []  # st_backend's engine ran, not ST's own path


def test_cli_random_sparse_needs_masked_lm(tmp_path, monkeypatch):
    import tempfile

    from mteb_eval.runner import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the bench builder's folder, made before it refuses
    p = tmp_path / "sts.csv"
    p.write_text(GOOD_STS)
    with pytest.raises(SystemExit, match="masked-LM"):
        main(["--model", "qwen3-0.6b", "--model-type", "SparseEncoder", "--sts", str(p)])


def test_model_type_defaults_to_sentence_transformer(default_model_path, tmp_path):
    from mteb_eval.runner import load_model, model_type_of

    assert model_type_of(default_model_path) == "SentenceTransformer"  # saved before ST 5: no model_type
    assert model_type_of(str(tmp_path)) == "SentenceTransformer"
    with pytest.raises(ValueError, match="model type"):
        load_model("st_backend", default_model_path, model_type="CrossEncoder")


@needs_data
def test_arguana_query_ids_overlap_corpus_and_subsample_is_deterministic():
    data = loaders.load_retrieval(SHARED_DATA / "arguana")
    assert len(set(data.queries) & set(data.corpus)) == 1298
    a = loaders.subsample_retrieval(data, 20, 100)
    b = loaders.subsample_retrieval(data, 20, 100)
    assert list(a.queries) == list(b.queries) and list(a.corpus) == list(b.corpus)
    for qid, docs in a.qrels.items():
        assert all(d in a.corpus for d in docs if d in data.corpus)
        assert qid in a.corpus or qid not in data.corpus


# ------------------------------------------------------------------------------------ bad input


def _assert_error(exc_info, path, line=None):
    msg = str(exc_info.value)
    assert str(path) in msg
    if line is not None:
        assert f"line {line}" in msg


GOOD_STS = "g\tf\t2012\t0001\t2.5\tA man.\tA woman.\n"


def test_sts_missing_file(tmp_path):
    with pytest.raises(ValueError) as ei:
        loaders.load_sts(tmp_path / "nope.csv")
    _assert_error(ei, tmp_path / "nope.csv")


def test_sts_too_few_columns(tmp_path):
    p = tmp_path / "sts.csv"
    p.write_text(GOOD_STS + "g\tf\t2012\t0002\t3.0\tonly one sentence\n")
    with pytest.raises(ValueError, match="7") as ei:
        loaders.load_sts(p)
    _assert_error(ei, p, 2)


def test_sts_non_numeric_score(tmp_path):
    p = tmp_path / "sts.csv"
    p.write_text(GOOD_STS + GOOD_STS + "g\tf\t2012\t0003\tabc\tA.\tB.\n")
    with pytest.raises(ValueError, match="number") as ei:
        loaders.load_sts(p)
    _assert_error(ei, p, 3)


def test_sts_extra_columns_and_quotes_are_fine(tmp_path):
    p = tmp_path / "sts.csv"
    p.write_text('g\tf\t2012\t0001\t4.0\tHe said "hi.\tShe said, "bye"\tsrc1\tsrc2\n')
    d = loaders.load_sts(p)
    assert d.sentence1 == ['He said "hi.'] and d.sentence2 == ['She said, "bye"'] and d.score == [4.0]


def _beir(tmp_path, corpus=None, queries=None, qrels=None, gz=False):
    corpus = corpus or ['{"_id": "d1", "title": "", "text": "doc one"}', '{"_id": "d2", "text": "doc two"}']
    queries = queries or ['{"_id": "q1", "text": "query one"}']
    qrels = qrels or ["query-id\tcorpus-id\tscore", "q1\td1\t1"]
    for name, lines in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        text = "\n".join(lines) + "\n"
        if gz:
            with gzip.open(tmp_path / f"{name}.gz", "wt") as fh:
                fh.write(text)
        else:
            (tmp_path / name).write_text(text)
    (tmp_path / "qrels").mkdir(exist_ok=True)
    (tmp_path / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return tmp_path


def test_beir_good_gz(tmp_path):
    d = loaders.load_retrieval(_beir(tmp_path, gz=True))
    assert d.queries == {"q1": "query one"} and set(d.corpus) == {"d1", "d2"} and d.qrels == {"q1": {"d1": 1}}


def test_beir_jsonl_not_json(tmp_path):
    _beir(tmp_path, corpus=['{"_id": "d1", "text": "x"}', "{not json"])
    with pytest.raises(ValueError, match="JSON") as ei:
        loaders.load_retrieval(tmp_path)
    _assert_error(ei, tmp_path / "corpus.jsonl", 2)


def test_beir_jsonl_missing_id(tmp_path):
    _beir(tmp_path, queries=['{"_id": "q1", "text": "a"}', '{"text": "b"}'])
    with pytest.raises(ValueError, match="_id") as ei:
        loaders.load_retrieval(tmp_path)
    _assert_error(ei, tmp_path / "queries.jsonl", 2)


def test_beir_jsonl_missing_text(tmp_path):
    _beir(tmp_path, corpus=[json.dumps({"_id": "d1", "title": "t"})])
    with pytest.raises(ValueError, match="text") as ei:
        loaders.load_retrieval(tmp_path)
    _assert_error(ei, tmp_path / "corpus.jsonl", 1)


def test_beir_qrels_wrong_columns(tmp_path):
    _beir(tmp_path, qrels=["query-id\tcorpus-id\tscore", "q1\td1\t1", "q1\td2"])
    with pytest.raises(ValueError, match="3") as ei:
        loaders.load_retrieval(tmp_path)
    _assert_error(ei, tmp_path / "qrels" / "test.tsv", 3)


def test_beir_missing_corpus(tmp_path):
    _beir(tmp_path)
    (tmp_path / "corpus.jsonl").unlink()
    with pytest.raises(ValueError, match="corpus.jsonl"):
        loaders.load_retrieval(tmp_path)


def test_csv_missing_category(tmp_path):
    p = tmp_path / "train.csv"
    p.write_text('text,category\n"hello, there",greet\nno category here\n')
    with pytest.raises(ValueError) as ei:
        loaders.load_classification_csv(p)
    _assert_error(ei, p, 3)


def test_csv_empty_text(tmp_path):
    p = tmp_path / "test.csv"
    p.write_text("text,category\nfine,a\n,b\n")
    with pytest.raises(ValueError, match="text") as ei:
        loaders.load_classification_csv(p)
    _assert_error(ei, p, 3)


def test_csv_bad_header(tmp_path):
    p = tmp_path / "train.csv"
    p.write_text("sentence,label\nx,y\n")
    with pytest.raises(ValueError, match="header") as ei:
        loaders.load_classification_csv(p)
    _assert_error(ei, p, 1)


def test_classification_task_missing_test_csv(tmp_path):
    from mteb_eval.tasks import classification_task

    (tmp_path / "train.csv").write_text("text,category\nx,a\n")
    with pytest.raises(ValueError, match="test.csv"):
        classification_task(tmp_path)


def test_cli_reports_bad_file(tmp_path, capsys):
    from mteb_eval.runner import main

    p = tmp_path / "sts.csv"
    p.write_text("too\tfew\n")
    with pytest.raises(SystemExit) as ei:
        main(["--sts", str(p), "--model", "unused"])
    assert "line 1" in str(ei.value.code) and str(p) in str(ei.value.code)
