"""The real all-MiniLM-L6-v2 (embedded default model) on the real STS Benchmark test set."""

from __future__ import annotations

import pytest
import sentence_transformers
from compare import assert_rows_close
from conftest import SHARED_DATA

import st_backend
from st_backend.bench.corpora import read_sts
from st_backend.cli import sts_spearman

STS_TEST = SHARED_DATA / "stsbenchmark" / "sts-test.csv"


@pytest.fixture(scope="module")
def models(default_model_path):
    plain = sentence_transformers.SentenceTransformer(default_model_path, device="cpu")
    fast = st_backend.SentenceTransformer(default_model_path, device="cpu")
    return plain, fast


@pytest.mark.skipif(not STS_TEST.exists(), reason=f"{STS_TEST} is not here")
def test_sts_benchmark_spearman_equals_plain_st(models):
    plain, fast = models
    s1, s2, gold = read_sts(str(STS_TEST))
    assert len(gold) == 1379
    sp_plain = sts_spearman(plain, s1, s2, gold)
    sp_fast = sts_spearman(fast, s1, s2, gold)
    # The figure for plain ST 6.2: a check that the data was read as the author read it.
    assert round(sp_plain, 4) == 0.8203
    assert round(sp_fast, 4) == round(sp_plain, 4)
    assert_rows_close(fast.encode(s1), plain.encode(s1))


def test_read_sts_names_file_and_line_of_a_bad_row(tmp_path):
    bad = tmp_path / "sts.csv"
    bad.write_text("main-captions\tMSRvid\t2012test\t0001\t5.000\ta\tb\nonly\tthree\tcols\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"sts.csv:2: expected >= 7"):
        read_sts(str(bad))


def test_default_model_cli_compare_runs(capsys):
    from st_backend.cli import main

    assert main(["compare", "--model", "default"]) == 0
    out = capsys.readouterr().out
    assert "attention backend: reference" in out and "OK" in out


def test_default_model_is_unpacked_once_and_never_rewritten(default_model_path):
    from pathlib import Path

    from st_backend.default_model import default_model_path as resolve

    weights = Path(default_model_path) / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert resolve() == default_model_path
    assert weights.stat().st_mtime_ns == before
