"""Matryoshka: declared dimensions from both file locations or at load, refusal of undeclared sizes, a one-time
warning for models that declare nothing, and truncation equal to plain ST's."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import sentence_transformers
from compare import assert_same_output
from tiny_models import build_st_dir

import st_backend

TEXTS = ["a", "The cat sat on the mat.", "word " * 80]


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
