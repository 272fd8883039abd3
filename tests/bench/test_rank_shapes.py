"""``st-backend bench`` on a tiny causal reranker: ``--task rank`` and ``--task rerank`` with ``--num-queries N
--docs-per-query M`` (N queries' pairs interleaved round-robin in one predict); the report counts the st_backend
default call's tokens through the layers against the tokens in its rows, the shared part once per query. The
expected counts come from plain ST's tokenizer output, not from st_backend."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import sentence_transformers
import torch
from sentence_transformers.base.modules.transformer import Transformer
from sentence_transformers.cross_encoder.modules.logit_score import LogitScore
from test_cross_encoder import QWEN_TEMPLATE
from tiny_models import build_hf_dir

from st_backend import cli
from st_backend.bench.corpora import synthetic_corpus
from st_backend.bench.tasks import QUERY_SHAPE_DEFAULTS, query_shape, rerank_inputs


@pytest.fixture(scope="module")
def reranker(tmp_path_factory) -> str:
    """A tiny Qwen3 yes/no reranker saved as a CrossEncoder directory, its score template in its tokenizer (so
    ``bench --model PATH`` loads it on both sides), room for a ~300-character query and a document."""
    root = tmp_path_factory.mktemp("causal_reranker")
    hf = str(build_hf_dir("qwen3", root, "causal-lm", max_len=512))
    transformer = Transformer(hf, transformer_task="text-generation", processor_kwargs={"chat_template": QWEN_TEMPLATE})
    vocab = transformer.tokenizer.get_vocab()
    model = sentence_transformers.CrossEncoder(
        modules=[transformer, LogitScore(vocab[sorted(vocab)[-1]], vocab[sorted(vocab)[-2]])], device="cpu"
    )
    path = str(root / "reranker")
    model.save(path)
    return path


def _queries(n: int) -> list[str]:
    """The bench's queries: ~300 characters each (38 words of the embedded vocabulary), seed 1."""
    return synthetic_corpus(n, median_words=38, sigma=0.2, seed=1)


def _plain_rows(path: str, pairs: list[tuple[str, str]]) -> list[list[int]]:
    """Each pair's token ids as plain ST renders and tokenizes it (no pair here is cut at max_seq_length)."""
    plain = sentence_transformers.CrossEncoder(path, device="cpu")
    features = plain.preprocess(pairs)
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(features["input_ids"], features["attention_mask"])]
    assert max(map(len, rows)) < plain.max_seq_length
    return rows


def _common(rows: list[list[int]]) -> int:
    """Length of the longest prefix all rows start with."""
    return len(os.path.commonprefix(rows))


WORDS = "apple bridge candle dolphin engine forest garden harbor island jacket kettle lemon meadow".split()
#: Short documents whose first words differ (the rows of one query share exactly the head, query and separator).
DOCS = [
    f"{WORDS[i]} {WORDS[(i * 5 + 3) % len(WORDS)]} is {WORDS[(i * 7 + 1) % len(WORDS)]} number {i}" for i in range(12)
]


def _bench(path: str, tmp_path, *extra: str) -> dict:
    texts, out = tmp_path / "docs.txt", tmp_path / "report.json"
    texts.write_text("\n".join(DOCS) + "\n")
    argv = ["bench", "--model", path, "--device", "cpu", "--repeats", "1", "--st-batch-sizes", "4", "--quiet"]
    assert cli.main([*argv, "--texts", str(texts), "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_rank_runs_each_query_once_and_reports_the_counts(reranker, tmp_path, capsys):
    queries, per = 2, 6
    report = _bench(reranker, tmp_path, "--task", "rank", "--num-queries", "2", "--docs-per-query", "6")
    texts = DOCS[: queries * per]  # --num-texts from the shape: N x M documents
    pairs = [(q, d) for g, q in enumerate(_queries(queries)) for d in texts[g * per : (g + 1) * per]]
    rows = _plain_rows(reranker, pairs)
    groups = [rows[g * per : (g + 1) * per] for g in range(queries)]
    total = sum(map(len, rows))
    forward = total - sum((per - 1) * _common(group) for group in groups)
    assert report["inputs"] == len(pairs) and report["tokens"] == total
    assert report["shape"] == {"queries": queries, "docs_per_query": per, "order": "grouped"}
    assert report["layer_tokens"] == {"row_tokens": total, "forward_tokens": forward, "forward_share": forward / total}
    # The query is part of what runs once: more than the template's head, which every row of both queries shares.
    assert forward < total - queries * (per - 1) * _common(rows)
    assert (
        f"st_backend default call: {forward} tokens through the layers of {total} in the rows"
        in capsys.readouterr().out
    )
    assert report["fidelity"]["ok"]


def test_rerank_interleaves_queries_in_one_predict(reranker, tmp_path, capsys):
    queries, per = 3, 4
    report = _bench(reranker, tmp_path, "--task", "rerank", "--num-queries", "3", "--docs-per-query", "4")
    texts = DOCS[: queries * per]
    qs = _queries(queries)
    pairs = [(qs[g], texts[g * per + d]) for d in range(per) for g in range(queries)]  # q0 d0, q1 d0, q2 d0, q0 d1...
    rows = _plain_rows(reranker, pairs)
    total = sum(map(len, rows))
    forward = total - sum((per - 1) * _common(rows[g::queries]) for g in range(queries))
    assert report["config"]["num_texts"] == queries * per and report["cpu_defaults"] == {}
    assert report["inputs"] == len(pairs) and report["tokens"] == total
    assert report["shape"] == {"queries": queries, "docs_per_query": per, "order": "interleaved"}
    assert report["layer_tokens"]["row_tokens"] == total
    assert report["layer_tokens"]["forward_tokens"] == forward
    out = capsys.readouterr().out
    assert "3 queries x 4 documents, interleaved: one predict(pairs)" in out
    assert report["fidelity"]["ok"]


def test_rerank_inputs_round_robin_and_random_pairs_without_a_shape():
    texts = [f"text {i}" for i in range(7)]
    qs = _queries(3)
    assert 250 <= sum(map(len, _queries(100))) / 100 <= 350  # ~300 characters
    got = rerank_inputs(texts, argparse.Namespace(num_queries=3, docs_per_query=2))
    assert got == [(qs[0], "text 0"), (qs[1], "text 2"), (qs[2], "text 4"), (qs[0], "text 1"), (qs[1], "text 3")] + [
        (qs[2], "text 5")
    ]
    # More queries than the corpus holds: as many whole queries as it does.
    assert len(rerank_inputs(texts, argparse.Namespace(num_queries=5, docs_per_query=3))) == 6
    plain = rerank_inputs(texts, argparse.Namespace(num_queries=None, docs_per_query=None))
    assert [d for _, d in plain] == texts and len({q for q, _ in plain}) == len(texts)  # a query per text


def test_shape_defaults_and_rerank_needs_both(capsys):
    args = cli.build_parser().parse_args(["bench", "--task", "rank"])
    assert (args.num_queries, args.docs_per_query) == (None, None)
    assert query_shape(args) == (100, 1000) == tuple(QUERY_SHAPE_DEFAULTS.values())  # rank / maxsim as before
    assert query_shape(argparse.Namespace(num_queries=3, docs_per_query=None)) == (3, 1000)
    assert cli.main(["bench", "--task", "rerank", "--num-queries", "3"]) == 2
    assert "--task rerank takes --num-queries and --docs-per-query together" in capsys.readouterr().err
    assert cli.main(["bench", "--task", "rank", "--docs-per-query", "0"]) == 2
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["bench"].format_help()
    assert "interleaved round-robin" in " ".join(help_text.split())


def test_ran_on_the_packed_engine(reranker):
    import st_backend

    fast = st_backend.CrossEncoder(reranker, device="cpu")
    assert fast.engine().shares_prefixes(2, torch.device("cpu"))  # else the counts above would be equal
