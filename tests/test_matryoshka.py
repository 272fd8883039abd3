"""Matryoshka: declared dimensions from both file locations or at load, refusal of undeclared sizes, a one-time
warning for models that declare nothing (a refusal with matryoshka_strict=True, silence with False),
is_matryoshka at load, bad load arguments, and truncation equal to plain ST's."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import sentence_transformers
import torch
from colbert_models import build_colbert_dir
from compare import assert_same_output
from tiny_models import build_st_dir

import st_backend
from st_backend.matryoshka import Matryoshka

TEXTS = ["a", "The cat sat on the mat.", "word " * 80]
NONE_DECLARED = r"truncate_dim=8: this model declares no Matryoshka dimensions.*matryoshka_dimensions=\[\.\.\.\].*is_matryoshka=True.*matryoshka_strict=False"


@pytest.fixture()
def declared_dir(tiny_root, tmp_path):
    """A model dir declaring [32, 16, 8] in config_sentence_transformers.json."""
    path = tmp_path / "declared"
    shutil.copytree(build_st_dir("bert", tiny_root, normalize=True), path)
    config_file = path / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text())
    config["matryoshka_dimensions"] = [8, 32, 16]
    config_file.write_text(json.dumps(config))
    return path


def test_declared_in_config_sentence_transformers(declared_dir):
    fast = st_backend.SentenceTransformer(str(declared_dir), device="cpu")
    plain = sentence_transformers.SentenceTransformer(str(declared_dir), device="cpu")  # ignores the key
    assert fast.matryoshka.dimensions == (32, 16, 8) and fast.matryoshka.strict
    for dim in (16, 8):
        for kwargs in ({}, {"normalize_embeddings": True}):
            assert_same_output(
                fast.encode(TEXTS, truncate_dim=dim, **kwargs), plain.encode(TEXTS, truncate_dim=dim, **kwargs)
            )
    with pytest.raises(ValueError, match=r"truncate_dim=12 .* supported: \[32, 16, 8\]"):
        fast.encode(TEXTS, truncate_dim=12)
    with pytest.raises(ValueError, match=r"supported: \[32, 16, 8\]"):
        st_backend.SentenceTransformer(str(declared_dir), device="cpu", truncate_dim=12)
    assert fast.encode(TEXTS, truncate_dim=32).shape == (3, 32)  # the full size is always allowed


def test_declared_in_config_json(tiny_root, tmp_path):
    path = tmp_path / "hf-declared"
    shutil.copytree(build_st_dir("bert", tiny_root), path)
    config = json.loads((path / "config.json").read_text())
    config["matryoshka_dimensions"] = [32, 24]
    (path / "config.json").write_text(json.dumps(config))
    fast = st_backend.SentenceTransformer(str(path), device="cpu")
    assert fast.matryoshka.dimensions == (32, 24)
    with pytest.raises(ValueError, match=r"supported: \[32, 24\]"):
        fast.encode(TEXTS, truncate_dim=16)


def test_given_at_load_and_strict_off(tiny_root):
    path = str(build_st_dir("bert", tiny_root))
    given = st_backend.SentenceTransformer(path, device="cpu", matryoshka_dimensions=[32, 4])
    with pytest.raises(ValueError, match=r"supported: \[32, 4\]"):
        given.encode(TEXTS, truncate_dim=8)
    loose = st_backend.SentenceTransformer(path, device="cpu", matryoshka_dimensions=[32, 4], matryoshka_strict=False)
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    assert_same_output(loose.encode(TEXTS, truncate_dim=8), plain.encode(TEXTS, truncate_dim=8))


def test_undeclared_model_warns_once(tiny_root, caplog):
    path = str(build_st_dir("xlm-roberta", tiny_root))
    fast = st_backend.SentenceTransformer(path, device="cpu")
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        got = fast.encode(TEXTS, truncate_dim=8)
        fast.encode(TEXTS, truncate_dim=16)
    assert len([r for r in caplog.records if "declares no Matryoshka" in r.getMessage()]) == 1
    assert_same_output(got, plain.encode(TEXTS, truncate_dim=8))


def test_is_matryoshka_allows_any_prefix(declared_dir):
    config_file = declared_dir / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text())
    del config["matryoshka_dimensions"]
    config["is_matryoshka"] = True
    config_file.write_text(json.dumps(config))
    fast = st_backend.SentenceTransformer(str(declared_dir), device="cpu")
    assert fast.matryoshka.any_prefix
    assert fast.encode(TEXTS, truncate_dim=12).shape == (3, 12)


def test_save_keeps_declared_dimensions_and_plain_st_still_loads(declared_dir, tmp_path):
    fast = st_backend.SentenceTransformer(str(declared_dir), device="cpu")
    fast.save(str(tmp_path / "saved"))
    saved = json.loads((tmp_path / "saved" / "config_sentence_transformers.json").read_text())
    assert saved["matryoshka_dimensions"] == [32, 16, 8]
    plain = sentence_transformers.SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    assert_same_output(fast.encode(TEXTS, truncate_dim=16), plain.encode(TEXTS, truncate_dim=16))


def test_bad_declared_dimensions(tiny_root):
    with pytest.raises(ValueError, match="positive integers"):
        st_backend.SentenceTransformer(str(build_st_dir("bert", tiny_root)), device="cpu", matryoshka_dimensions=[0])


def _warnings(caplog) -> int:
    return len([r for r in caplog.records if "declares no Matryoshka" in r.getMessage()])


def test_strict_on_a_model_declaring_nothing_refuses(tiny_root, caplog):
    path = str(build_st_dir("bert", tiny_root))
    strict = st_backend.SentenceTransformer(path, device="cpu", matryoshka_strict=True)
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    with pytest.raises(ValueError, match=NONE_DECLARED):
        strict.encode(TEXTS, truncate_dim=8)
    with pytest.raises(ValueError, match=NONE_DECLARED):
        st_backend.SentenceTransformer(path, device="cpu", matryoshka_strict=True, truncate_dim=8)
    with caplog.at_level(logging.WARNING, logger="st_backend"):  # the full size is no truncation: no refusal
        assert_same_output(strict.encode(TEXTS, truncate_dim=32), plain.encode(TEXTS, truncate_dim=32))
        assert_same_output(strict.encode(TEXTS), plain.encode(TEXTS))
    assert _warnings(caplog) == 0


def test_strict_on_a_multi_vector_model_declaring_nothing_refuses(tiny_root):
    path = str(build_colbert_dir("st", "bert", tiny_root))  # 16-dimensional token vectors
    strict = st_backend.MultiVectorEncoder(path, device="cpu", matryoshka_strict=True)
    plain = sentence_transformers.MultiVectorEncoder(path, device="cpu")
    with pytest.raises(ValueError, match=NONE_DECLARED):
        strict.encode_document(TEXTS, truncate_dim=8)
    with pytest.raises(ValueError, match=NONE_DECLARED):
        st_backend.MultiVectorEncoder(path, device="cpu", matryoshka_strict=True, truncate_dim=8)
    assert_same_output(strict.encode_document(TEXTS, truncate_dim=16), plain.encode_document(TEXTS))


def test_strict_off_given_truncates_without_warning(tiny_root, caplog):
    path = str(build_st_dir("bert", tiny_root))
    loose = st_backend.SentenceTransformer(path, device="cpu", matryoshka_strict=False)
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        got = loose.encode(TEXTS, truncate_dim=8, normalize_embeddings=True)
    assert _warnings(caplog) == 0  # the caller said so: no warning
    assert_same_output(got, plain.encode(TEXTS, truncate_dim=8, normalize_embeddings=True))


def test_is_matryoshka_at_load_allows_any_prefix(tiny_root, declared_dir, caplog):
    path = str(build_st_dir("bert", tiny_root))
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        for strict in (None, True):
            fast = st_backend.SentenceTransformer(path, device="cpu", is_matryoshka=True, matryoshka_strict=strict)
            assert fast.matryoshka.any_prefix
            for kwargs in ({}, {"normalize_embeddings": True}):
                assert_same_output(
                    fast.encode(TEXTS, truncate_dim=12, **kwargs), plain.encode(TEXTS, truncate_dim=12, **kwargs)
                )
        at_load = st_backend.SentenceTransformer(path, device="cpu", is_matryoshka=True, truncate_dim=12)
        assert_same_output(at_load.encode(TEXTS), plain.encode(TEXTS, truncate_dim=12))
        # The load argument overrides the sizes a file declares ([32, 16, 8] there).
        over = st_backend.SentenceTransformer(str(declared_dir), device="cpu", is_matryoshka=True)
        declared_plain = sentence_transformers.SentenceTransformer(str(declared_dir), device="cpu")
        assert_same_output(over.encode(TEXTS, truncate_dim=12), declared_plain.encode(TEXTS, truncate_dim=12))
    assert _warnings(caplog) == 0


def test_is_matryoshka_at_load_on_a_multi_vector_model(tiny_root):
    path = str(build_colbert_dir("st", "bert", tiny_root))
    fast = st_backend.MultiVectorEncoder(path, device="cpu", is_matryoshka=True, matryoshka_strict=True)
    plain = sentence_transformers.MultiVectorEncoder(path, device="cpu")
    want = [torch.nn.functional.normalize(r[:, :6], dim=-1) for r in plain.encode_document(TEXTS)]
    assert_same_output(fast.encode_document(TEXTS, truncate_dim=6), want)


def test_is_matryoshka_false_at_load_overrides_the_file(declared_dir, caplog):
    config_file = declared_dir / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text())
    del config["matryoshka_dimensions"]
    config["is_matryoshka"] = True
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=NONE_DECLARED):
        st_backend.SentenceTransformer(
            str(declared_dir), device="cpu", is_matryoshka=False, matryoshka_strict=True
        ).encode(TEXTS, truncate_dim=8)
    unsure = st_backend.SentenceTransformer(str(declared_dir), device="cpu", is_matryoshka=False)
    plain = sentence_transformers.SentenceTransformer(str(declared_dir), device="cpu")
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        assert_same_output(unsure.encode(TEXTS, truncate_dim=8), plain.encode(TEXTS, truncate_dim=8))
    assert _warnings(caplog) == 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"matryoshka_strict": "yes"}, r"matryoshka_strict must be True, False or None.*'yes'"),
        ({"matryoshka_strict": 1}, r"matryoshka_strict must be True, False or None.*1"),
        ({"is_matryoshka": "true"}, r"is_matryoshka must be True, False or None.*'true'"),
        ({"matryoshka_dimensions": 16}, r"matryoshka_dimensions must be a non-empty list of positive integers, got 16"),
        ({"matryoshka_dimensions": "16"}, r"non-empty list of positive integers, got '16'"),
        ({"matryoshka_dimensions": []}, r"non-empty list of positive integers, got \[\]"),
        ({"matryoshka_dimensions": [True, 8]}, r"non-empty list of positive integers, got \[True, 8\]"),
        ({"matryoshka_dimensions": [8.0]}, r"non-empty list of positive integers, got \[8\.0\]"),
        (
            {"matryoshka_dimensions": [16, 8], "is_matryoshka": True},
            r"matryoshka_dimensions=.*or is_matryoshka=True.*not both",
        ),
    ],
)
def test_bad_matryoshka_arguments(tiny_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        st_backend.SentenceTransformer(str(build_st_dir("bert", tiny_root)), device="cpu", **kwargs)


def test_numpy_declared_dimensions(tiny_root):
    path = str(build_st_dir("bert", tiny_root))
    fast = st_backend.SentenceTransformer(path, device="cpu", matryoshka_dimensions=np.array([8, 32, 16]))
    assert fast.matryoshka.dimensions == (32, 16, 8) and all(type(d) is int for d in fast.matryoshka.dimensions)
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    assert_same_output(fast.encode(TEXTS, truncate_dim=np.int64(16)), plain.encode(TEXTS, truncate_dim=16))
    with pytest.raises(ValueError, match=r"supported: \[32, 16, 8\]"):
        fast.encode(TEXTS, truncate_dim=12)


def test_resolve_rules():
    """Matryoshka.resolve's rules, one keyword per load argument (the constructors pass them through)."""
    files = {"is_matryoshka": True}
    assert Matryoshka.resolve(None, None, files, None).any_prefix
    assert not Matryoshka.resolve(None, None, files, None, is_matryoshka=False).any_prefix
    assert Matryoshka.resolve(None, True, {"matryoshka_dimensions": [8, 4]}, None, is_matryoshka=True).any_prefix
    nothing = Matryoshka.resolve(None, True, {}, None)
    with pytest.raises(ValueError, match=NONE_DECLARED):
        nothing.check(8, 32, object())
    nothing.check(32, 32, object())  # the full size is no truncation
    Matryoshka.resolve(None, True, {}, None, is_matryoshka=True).check(8, 32, object())
