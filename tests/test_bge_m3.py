"""BGE-M3-style multi-output encoding against a padded transformers forward with FlagEmbedding's formulas
(BGEM3FlagModel: CLS dense, relu(sparse head) max per token id without special tokens, ColBERT head on every token
but the first), on a tiny random XLM-RoBERTa with random heads; and the rest of BGEM3FlagModel's API: compute_score
(its dense / sparse / ColBERT formulas and weighted means), encode_queries / encode_corpus, convert_id_to_token,
lexical scores on lists, use_fp16 / devices at load, EngineConfig.dtype, and a missing head file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import build_hf_dir
from transformers import AutoModel, AutoTokenizer

from st_backend.bge_m3 import BGEM3Encoder
from st_backend.engine.config import EngineConfig

TEXTS = ["", "a", "The cat sat on the mat, the cat.", "word " * 100, "Paris is the capital of France."]
PAIRS = [
    ("what is the capital of France?", "Paris is the capital of France."),
    ("cat", "The cat sat on the mat, the cat."),
    ("a", ""),
    ("word " * 30, "word " * 100),
]


@pytest.fixture(scope="module")
def m3_dir(tiny_root):
    path = tiny_root / "bge-m3-tiny"
    if not path.exists():
        shutil.copytree(build_hf_dir("xlm-roberta", tiny_root), path)
        torch.manual_seed(3)
        hidden = AutoModel.from_pretrained(path).config.hidden_size
        torch.save(torch.nn.Linear(hidden, hidden).state_dict(), path / "colbert_linear.pt")
        torch.save(torch.nn.Linear(hidden, 1).state_dict(), path / "sparse_linear.pt")
    return path


def _reference(path, texts, max_length):
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    colbert, sparse = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    for head, name in ((colbert, "colbert_linear.pt"), (sparse, "sparse_linear.pt")):
        state = torch.load(path / name, weights_only=True)
        head.weight = torch.nn.Parameter(state["weight"])
        head.bias = torch.nn.Parameter(state["bias"])
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
        dense = F.normalize(hidden[:, 0], dim=-1).numpy()
        weights = torch.relu(sparse(hidden)).squeeze(-1).numpy()
        vecs = F.normalize(colbert(hidden[:, 1:]) * batch["attention_mask"][:, 1:, None], dim=-1).numpy()
    unused = {tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}
    lexical, multi = [], []
    for ids, w, mask, v in zip(batch["input_ids"].tolist(), weights, batch["attention_mask"], vecs):
        row = {}
        for token, weight in zip(ids, w):
            if token not in unused and weight > 0 and weight > row.get(str(token), 0):
                row[str(token)] = weight
        lexical.append(row)
        multi.append(v[: int(mask.sum()) - 1])
    return dense, lexical, multi


@pytest.mark.parametrize("max_length", [64, 8])
def test_matches_flagembedding_formulas(m3_dir, max_length):
    model = BGEM3Encoder(m3_dir, device="cpu")
    got = model.encode(TEXTS, batch_size=2, max_length=max_length, return_sparse=True, return_colbert_vecs=True)
    dense, lexical, multi = _reference(m3_dir, TEXTS, max_length)
    assert got["dense_vecs"].shape == dense.shape
    assert np.abs(got["dense_vecs"] - dense).max() <= 1e-5
    for g, w in zip(got["lexical_weights"], lexical):
        assert list(g) == list(w)  # same ids, in the same order
        assert np.allclose([float(x) for x in g.values()], [float(x) for x in w.values()], atol=1e-5)
    for g, w in zip(got["colbert_vecs"], multi):
        assert g.shape == w.shape and np.abs(g - w).max(initial=0) <= 1e-5
    q, d = got["colbert_vecs"][2], got["colbert_vecs"][4]
    want = float((torch.from_numpy(q) @ torch.from_numpy(d).T).max(-1).values.mean())
    assert abs(model.colbert_score(q, d) - want) <= 1e-5
    one = model.compute_lexical_matching_score(got["lexical_weights"][2], got["lexical_weights"][2])
    assert one == pytest.approx(sum(float(v) ** 2 for v in got["lexical_weights"][2].values()), rel=1e-6)


def test_single_text_and_bad_input(m3_dir):
    model = BGEM3Encoder(m3_dir, device="cpu")
    one = model.encode("The cat sat.", return_sparse=True)
    assert one["dense_vecs"].ndim == 1 and isinstance(one["lexical_weights"], dict) and one["colbert_vecs"] is None
    with pytest.raises(TypeError, match=r"sentences\[1\] is int"):
        model.encode(["fine", 3])


def _flag_compute_score(path, pairs, max_query_length, max_passage_length, weights=(1.0, 1.0, 1.0)):
    """FlagEmbedding's compute_score formulas on padded batches: dense q.p; sparse the dot product of vocabulary-sized
    vectors (scatter_reduce amax of relu(sparse head), special tokens zeroed); colbert the sum over the query's
    (masked) vectors of their best passage-vector similarity over the query's token count after CLS; and the
    weighted means. Each passage is scored on its own tokens (no padding rows for the max to pick)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    colbert, sparse = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    for head, name in ((colbert, "colbert_linear.pt"), (sparse, "sparse_linear.pt")):
        state = torch.load(path / name, weights_only=True)
        head.weight, head.bias = torch.nn.Parameter(state["weight"]), torch.nn.Parameter(state["bias"])
    unused = [tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id]

    def side(texts, max_length):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        dense = F.normalize(hidden[:, 0], dim=-1)
        vocab = torch.zeros(len(texts), model.config.vocab_size)
        vocab = vocab.scatter_reduce(-1, batch["input_ids"], torch.relu(sparse(hidden)).squeeze(-1), reduce="amax")
        vocab[:, unused] *= 0.0
        vecs = F.normalize(colbert(hidden[:, 1:]) * batch["attention_mask"][:, 1:, None], dim=-1)
        return dense, vocab, vecs, batch["attention_mask"]

    with torch.no_grad():
        q_dense, q_vocab, q_vecs, q_mask = side([p[0] for p in pairs], max_query_length)
        p_dense, p_vocab, p_vecs, p_mask = side([p[1] for p in pairs], max_passage_length)
        dense = (q_dense * p_dense).sum(-1)
        sparse_scores = (q_vocab * p_vocab).sum(-1)
        colbert_scores = torch.stack(
            [
                torch.einsum("in,jn->ij", q_vecs[k], p_vecs[k, : int(p_mask[k].sum()) - 1]).max(-1).values.sum()
                / q_mask[k, 1:].sum()
                for k in range(len(pairs))
            ]
        )
    w_dense, w_sparse, w_colbert = weights
    return {
        "colbert": colbert_scores.tolist(),
        "sparse": sparse_scores.tolist(),
        "dense": dense.tolist(),
        "sparse+dense": ((sparse_scores * w_sparse + dense * w_dense) / (w_sparse + w_dense)).tolist(),
        "colbert+sparse+dense": (
            (colbert_scores * w_colbert + sparse_scores * w_sparse + dense * w_dense) / sum(weights)
        ).tolist(),
    }


@pytest.mark.parametrize("weights", [None, [0.4, 0.2, 0.4]])
def test_compute_score_matches_flagembedding_formulas(m3_dir, weights):
    model = BGEM3Encoder(m3_dir, device="cpu")
    got = model.compute_score(
        PAIRS, batch_size=2, max_query_length=16, max_passage_length=64, weights_for_different_modes=weights
    )
    want = _flag_compute_score(m3_dir, PAIRS, 16, 64, weights or (1.0, 1.0, 1.0))
    assert list(got) == ["colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense"]
    for mode, values in want.items():
        assert all(type(v) is float for v in got[mode]), mode
        assert np.allclose(got[mode], values, atol=1e-5, rtol=1e-5), (mode, got[mode], values)
    one = model.compute_score(PAIRS[1], max_query_length=16, max_passage_length=64, weights_for_different_modes=weights)
    assert {mode: pytest.approx(values[1], abs=1e-5) for mode, values in want.items()} == one
    assert model.compute_score([]) == []


def test_compute_score_bad_input(m3_dir):
    model = BGEM3Encoder(m3_dir, device="cpu")
    with pytest.raises(ValueError, match=r"weights_for_different_modes must be 3 weights.*\[1\.0, 1\.0\]"):
        model.compute_score(PAIRS, weights_for_different_modes=[1.0, 1.0])
    with pytest.raises(TypeError, match=r"sentence_pairs\[1\] is tuple .*\(query, passage\) pairs of strings"):
        model.compute_score([("q", "p"), ("q", 3)])


def test_encode_queries_and_corpus(m3_dir):
    model = BGEM3Encoder(
        m3_dir,
        device="cpu",
        query_instruction_for_retrieval="Represent this for retrieval:",
        query_instruction_format="{}\\n{}",  # FlagEmbedding reads a literal backslash-n as a newline
        query_max_length=8,
        passage_max_length=32,
        return_sparse=True,
    )
    queries = model.encode_queries(TEXTS, batch_size=1, return_colbert_vecs=True)
    dense, lexical, multi = _reference(m3_dir, [f"Represent this for retrieval:\n{t}" for t in TEXTS], 8)
    assert np.abs(queries["dense_vecs"] - dense).max() <= 1e-5
    assert [list(g) for g in queries["lexical_weights"]] == [list(w) for w in lexical]
    for g, w in zip(queries["colbert_vecs"], multi):
        assert g.shape == w.shape and np.abs(g - w).max(initial=0) <= 1e-5
    for got in (model.encode_corpus(TEXTS), model.encode(TEXTS)):  # passage_max_length, no instruction
        dense, lexical, _ = _reference(m3_dir, TEXTS, 32)
        assert np.abs(got["dense_vecs"] - dense).max() <= 1e-5 and got["colbert_vecs"] is None
        assert [list(g) for g in got["lexical_weights"]] == [list(w) for w in lexical]
    one = model.encode_queries("cat")
    assert np.abs(one["dense_vecs"] - _reference(m3_dir, ["Represent this for retrieval:\ncat"], 8)[0][0]).max() <= 1e-5


def test_convert_id_to_token_and_lexical_scores_on_lists(m3_dir):
    model = BGEM3Encoder(m3_dir, device="cpu")
    lexical = model.encode(TEXTS, return_sparse=True, max_length=64)["lexical_weights"]
    tokenizer = AutoTokenizer.from_pretrained(m3_dir)
    want = [{tokenizer.decode([int(i)]): w for i, w in row.items()} for row in lexical]
    assert model.convert_id_to_token(lexical) == want
    assert model.convert_id_to_token(lexical[2]) == want[2]
    assert model.convert_id_to_token([lexical[2]]) == want[2]  # FlagEmbedding: a list of one gives its dict
    scores = model.compute_lexical_matching_score(lexical[1:4], lexical)
    assert scores.shape == (3, len(TEXTS))
    for i, a in enumerate(lexical[1:4]):
        for j, b in enumerate(lexical):
            want_score = sum(float(w) * float(b[t]) for t, w in a.items() if t in b)
            assert scores[i, j] == pytest.approx(want_score, rel=1e-6, abs=1e-12)
    with pytest.raises(TypeError, match="two lexical-weight dicts or two lists of them, got dict and list"):
        model.compute_lexical_matching_score(lexical[1], lexical)


@pytest.mark.parametrize("name,purpose", [("sparse_linear.pt", "sparse head"), ("colbert_linear.pt", "ColBERT head")])
def test_missing_head_names_the_file(m3_dir, tmp_path, name, purpose):
    path = tmp_path / "no-head"
    shutil.copytree(m3_dir, path)
    (path / name).unlink()
    with pytest.raises(FileNotFoundError, match=rf"no {name} beside the model: it holds the {purpose}"):
        BGEM3Encoder(path, device="cpu")


def test_flagembedding_load_arguments(m3_dir):
    dense, _, _ = _reference(m3_dir, TEXTS, 64)
    for kwargs in ({"use_fp16": True}, {"use_fp16": False, "use_bf16": True}, {"devices": "cpu"}, {"devices": ["cpu"]}):
        model = BGEM3Encoder(m3_dir, **kwargs)  # CPU runs in float32 whatever use_fp16 says, as FlagEmbedding
        assert model.device.type == "cpu" and model.transformer.model.dtype == torch.float32, kwargs
        got = model.encode(TEXTS, max_length=64)["dense_vecs"]
        assert got.dtype == np.float32 and np.abs(got - dense).max() <= 1e-5, kwargs
    with pytest.raises(ValueError, match="runs on one device"):
        BGEM3Encoder(m3_dir, devices=["cpu", "cpu"])
    with pytest.raises(ValueError, match="not both"):
        BGEM3Encoder(m3_dir, device="cpu", devices="cpu")


def test_engine_dtype_is_applied(m3_dir):
    model = BGEM3Encoder(m3_dir, device="cpu", engine=EngineConfig(dtype="bfloat16"))
    assert model.transformer.model.dtype == torch.bfloat16 and model.sparse_linear.weight.dtype == torch.bfloat16
    got = model.encode(TEXTS, max_length=64, return_sparse=True, return_colbert_vecs=True)
    dense, _, _ = _reference(m3_dir, TEXTS, 64)
    assert got["dense_vecs"].dtype == np.float32  # numpy has no bfloat16
    cosine = (got["dense_vecs"] * dense).sum(-1)  # both sides unit vectors
    assert cosine.min() >= 0.99
