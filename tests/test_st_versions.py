"""What differs between the supported sentence-transformers releases (6.2, 6.3) and transformers (5.17-5.25): each
test runs on whichever is installed (CI runs the suite on both) and compares with plain ST of that release."""

import json
import logging

import pytest
import sentence_transformers
import torch
from colbert_models import build_colbert_dir
from compare import assert_same_output
from tiny_models import build_st_dir

import st_backend
from st_backend import _compat

TEXTS = ["the cat sat on the mat", "a dog", "", "numbers 1 2 3 4 5 6 7 8 9 10 " * 3]
ATTENDED = {"strategy": "fixed", "attend": True, "token": None, "length": 32}  # queries run packed too
ST63 = _compat.ST_VERSION.release[:2] >= (6, 3)


def _unnormalized(model):
    """The pipeline without its Normalize steps: token vectors whose norms are not 1."""
    for i in reversed(range(len(model))):
        if type(model[i]) is _compat.Normalize:
            del model[i]
    return model


def _want_truncated(rows, dim):
    return [_compat.normalize_token_vectors(r[:, :dim]) for r in rows]


def test_mve_truncate_dim_runs_packed_and_renormalises(tiny_root, notes):
    """truncate_dim per call truncates after the pipeline and L2-normalises, as ST 6.3 defines it (on 6.3 equal to
    plain ST's own truncate_dim; on 6.2, which has none, to that definition); every call runs packed."""
    path = str(build_colbert_dir("st", "bert", tiny_root, query_expansion=ATTENDED))
    fast = _unnormalized(st_backend.MultiVectorEncoder(path, device="cpu"))
    plain = _unnormalized(sentence_transformers.MultiVectorEncoder(path, device="cpu"))
    full = plain.encode_document(TEXTS)
    assert max(float(r.norm(dim=-1).max()) for r in full) > 1.05  # the case the old re-normalisation missed
    want = plain.encode_document(TEXTS, truncate_dim=8) if ST63 else _want_truncated(full, 8)
    got = fast.encode_document(TEXTS, truncate_dim=8)
    assert_same_output(got, want)
    for row in got:
        assert torch.allclose(row.norm(dim=-1), torch.ones(len(row)), atol=1e-5)
    queries = fast.encode_query(TEXTS[:2], truncate_dim=8)
    want_q = (
        plain.encode_query(TEXTS[:2], truncate_dim=8) if ST63 else _want_truncated(plain.encode_query(TEXTS[:2]), 8)
    )
    assert_same_output(queries, want_q)
    as_numpy = fast.encode_document(TEXTS, truncate_dim=8, convert_to_numpy=True)
    assert_same_output(as_numpy, [w.numpy() for w in want])
    assert notes() == []


def test_mve_truncate_dim_at_load_is_saved_and_read_back(tiny_root, tmp_path, notes):
    path = str(build_colbert_dir("st", "bert", tiny_root, query_expansion=ATTENDED))
    fast = _unnormalized(st_backend.MultiVectorEncoder(path, device="cpu", truncate_dim=8))
    plain = _unnormalized(sentence_transformers.MultiVectorEncoder(path, device="cpu"))
    want = _want_truncated(plain.encode_document(TEXTS), 8)
    assert_same_output(fast.encode_document(TEXTS), want)
    assert fast.encode_document(TEXTS, truncate_dim=4)[0].shape[1] == 4  # a per-call value wins
    fast.save(str(tmp_path / "saved"))
    assert json.loads((tmp_path / "saved" / "config_sentence_transformers.json").read_text())["truncate_dim"] == 8
    again = st_backend.MultiVectorEncoder(str(tmp_path / "saved"), device="cpu")
    assert again.truncate_dim == 8
    assert_same_output(again.encode_document(TEXTS), want)
    if ST63:
        assert sentence_transformers.MultiVectorEncoder(str(tmp_path / "saved"), device="cpu").truncate_dim == 8
    assert notes() == []


def test_mve_output_value_none_truncates_like_st(tiny_root):
    path = str(build_colbert_dir("st", "bert", tiny_root, query_expansion=ATTENDED))
    fast = _unnormalized(st_backend.MultiVectorEncoder(path, device="cpu"))
    plain = _unnormalized(sentence_transformers.MultiVectorEncoder(path, device="cpu"))
    got = fast.encode_document(TEXTS[:2], truncate_dim=8, output_value=None)
    raw = plain.encode_document(TEXTS[:2], output_value=None)
    for features, ref in zip(got, raw):
        want = _compat.normalize_token_vectors(ref["token_embeddings"][..., :8])
        assert_same_output(features["token_embeddings"], want)


def test_matryoshka_checks_use_the_untruncated_size(tiny_root, tmp_path):
    """ST 6.3's get_embedding_dimension() is the truncated size; the checks must see the model's full size."""
    path = build_colbert_dir("st", "bert", tiny_root, query_expansion=ATTENDED)  # 16-dimensional token vectors
    declared = tmp_path / "declared"
    import shutil

    shutil.copytree(path, declared)
    config_file = declared / "config_sentence_transformers.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "matryoshka_dimensions": [16, 8, 4]}))
    model = st_backend.MultiVectorEncoder(str(declared), device="cpu", truncate_dim=8)
    assert _compat.untruncated_dimension(model) == 16
    assert model.encode_document(TEXTS, truncate_dim=16)[0].shape[1] == 16  # the full size is declared
    with pytest.raises(ValueError, match=r"truncate_dim=6 .* supported: \[16, 8, 4\]"):
        model.encode_document(TEXTS, truncate_dim=6)
    st_dir = build_st_dir("bert", tiny_root)
    dense = st_backend.SentenceTransformer(str(st_dir), device="cpu", truncate_dim=8)
    assert (
        _compat.untruncated_dimension(dense)
        == sentence_transformers.SentenceTransformer(str(st_dir), device="cpu").get_embedding_dimension()
    )
    assert dense.truncate_dim == 8


@pytest.mark.parametrize("use_kernels", [False, True])
def test_use_kernels_is_accepted_by_every_class(tiny_root, use_kernels, notes):
    """ST 6.3's use_kernels / kernel_config: taken on both releases (6.2: through from_pretrained), never refused;
    the packed path runs the model's modules as loaded, so outputs equal plain ST's loaded the same way."""
    from transformers.utils import is_kernels_available

    st_dir = str(build_st_dir("bert", tiny_root))
    kwargs = {"use_kernels": use_kernels} if ST63 else {"model_kwargs": {"use_kernels": use_kernels}}
    if use_kernels and not is_kernels_available():  # transformers 5.17 without `kernels`: its own clear error
        with pytest.raises(ValueError, match="Kernels are not available"):
            sentence_transformers.SentenceTransformer(st_dir, device="cpu", **kwargs)
        with pytest.raises(ValueError, match="Kernels are not available"):
            st_backend.SentenceTransformer(st_dir, device="cpu", use_kernels=True)
        return
    fast = st_backend.SentenceTransformer(st_dir, device="cpu", use_kernels=use_kernels)
    plain = sentence_transformers.SentenceTransformer(st_dir, device="cpu", **kwargs)
    assert_same_output(fast.encode(TEXTS), plain.encode(TEXTS))
    colbert = str(build_colbert_dir("st", "bert", tiny_root, query_expansion=ATTENDED))
    mve = st_backend.MultiVectorEncoder(colbert, device="cpu", use_kernels=use_kernels)
    assert_same_output(
        mve.encode_document(TEXTS),
        sentence_transformers.MultiVectorEncoder(colbert, device="cpu", **kwargs).encode_document(TEXTS),
    )
    from tiny_models import build_hf_dir

    ce_dir = str(build_hf_dir("bert", tiny_root, "seq-cls"))
    pairs = [("a", "b"), ("the cat", "sat on the mat")]
    ce = st_backend.CrossEncoder(ce_dir, device="cpu", use_kernels=use_kernels)
    want = sentence_transformers.CrossEncoder(ce_dir, device="cpu", **kwargs).predict(pairs)
    assert_same_output(ce.predict(pairs), want)
    assert notes() == []


def test_left_padded_token_embeddings_follow_the_installed_st(tiny_root, notes):
    """ST 6.3 returns only real tokens' vectors, so a left-padding tokenizer runs packed there; 6.2 keeps its pad rows
    (batch-dependent), so st_backend runs ST's own path there with a note."""
    path = str(build_st_dir("qwen3", tiny_root))
    fast = st_backend.SentenceTransformer(path, device="cpu")
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    assert fast[0].tokenizer.padding_side == "left"
    got = fast.encode(TEXTS, output_value="token_embeddings")
    want = plain.encode(TEXTS, output_value="token_embeddings")
    assert [len(g) for g in got] == [len(w) for w in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
    assert bool(notes()) == _compat.TOKEN_EMBEDDINGS_KEEP_LEFT_PADS


def test_untested_release_warns_once_naming_it(monkeypatch, caplog):
    from packaging.version import Version

    monkeypatch.setattr(_compat, "_warned_versions", False)
    monkeypatch.setattr(_compat, "ST_VERSION", Version("6.9.0"))
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        _compat.check_versions()
        _compat.check_versions()
    said = [r.getMessage() for r in caplog.records if "not a tested release" in r.getMessage()]
    assert len(said) == 1 and "sentence-transformers 6.9.0" in said[0] and "6.2 to 6.3" in said[0]
    monkeypatch.setattr(_compat, "_warned_versions", False)
    monkeypatch.setattr(_compat, "ST_VERSION", Version(sentence_transformers.__version__))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        _compat.check_versions()
    assert not [r for r in caplog.records if "not a tested release" in r.getMessage()]


def test_installed_releases_are_tested_ones():
    """CI's two venvs hold the newest allowed releases and the oldest pinned: both are in the tested range."""
    assert _compat._tested(_compat.ST_VERSION, *_compat.TESTED["sentence-transformers"])
    assert _compat._tested(_compat.TRANSFORMERS_VERSION, *_compat.TESTED["transformers"])


@pytest.mark.parametrize("bad", [["fine", 3], ["fine", None], [("a", 3)], [["a", "b", "c"]]])
def test_bad_items_raise_what_code_written_for_st_catches(tiny_root, bad):
    """ST raises ValueError for an item it cannot take; st_backend's InputError is a ValueError (and a TypeError,
    as st_backend raised before), naming the item."""
    from tiny_models import build_hf_dir

    path = str(build_st_dir("bert", tiny_root))
    with pytest.raises(ValueError):
        sentence_transformers.SentenceTransformer(path, device="cpu").encode(bad)
    with pytest.raises(st_backend.InputError, match=r"inputs\[\d\]") as raised:
        st_backend.SentenceTransformer(path, device="cpu").encode(bad)
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, TypeError)
    colbert = str(build_colbert_dir("st", "bert", tiny_root, query_expansion=ATTENDED))
    with pytest.raises(ValueError, match=r"inputs\[\d\]"):
        st_backend.MultiVectorEncoder(colbert, device="cpu").encode_document(bad)
    pairs = [("q", d) for d in bad]
    ce = str(build_hf_dir("bert", tiny_root, "seq-cls"))
    with pytest.raises(ValueError):
        sentence_transformers.CrossEncoder(ce, device="cpu").predict(pairs)
    with pytest.raises(ValueError):  # a list part may be content parts: ST's own processor refuses it
        st_backend.CrossEncoder(ce, device="cpu").predict(pairs)
