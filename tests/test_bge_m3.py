"""BGE-M3-style multi-output encoding against a padded transformers forward with FlagEmbedding's formulas
(BGEM3FlagModel: CLS dense, relu(sparse head) max per token id without special tokens, ColBERT head on every token
but the first), on a tiny random XLM-RoBERTa with random heads."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import build_hf_dir
from transformers import AutoModel, AutoTokenizer

from st_backend.bge_m3 import BGEM3Encoder

TEXTS = ["", "a", "The cat sat on the mat, the cat.", "word " * 100, "Paris is the capital of France."]


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
