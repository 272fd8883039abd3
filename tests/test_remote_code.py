"""Remote-code models that reuse a stock model_type (Jina's embedders and ColBERT models say "bert" or
"xlm-roberta") run ST's own path: their own forward may ignore cu_seq_lens, so packed texts would attend to each
other."""

from __future__ import annotations

import pytest
import sentence_transformers
from compare import assert_rows_close
from tiny_models import build_hf_dir, build_st_dir

import st_backend
from st_backend.engine.architectures import ARCHITECTURES

TEXTS = ["a cat", "the quick brown fox jumps over the lazy dog", "", "東京 🙂"]


def _as_remote_code(model) -> None:
    """Give ``model`` a class of its own, defined outside transformers, as trust_remote_code loading does."""
    remote = type(type(model).__name__, (type(model),), {"__module__": "transformers_modules.someone.modeling"})
    model.__class__ = remote


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_every_spec_refuses_a_remote_code_class(tiny_root, caplog, model_type):
    path = str(build_st_dir(model_type, tiny_root))
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    fast = st_backend.SentenceTransformer(path, device="cpu")
    _as_remote_code(fast[0].auto_model)
    reason = fast.engine_for(None)
    assert isinstance(reason, str) and "remote code" in reason and "transformers_modules" in reason
    with caplog.at_level("WARNING", logger="st_backend"):
        assert_rows_close(fast.encode(TEXTS), plain.encode(TEXTS))
    assert any("remote code" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("model_type", ["bert", "qwen3"])
def test_remote_code_cross_encoder_runs_st_path(tiny_root, model_type):
    path = str(build_hf_dir(model_type, tiny_root, "seq-cls"))
    plain = sentence_transformers.CrossEncoder(path, device="cpu")
    fast = st_backend.CrossEncoder(path, device="cpu")
    assert not isinstance(fast.engine(), str)  # stock class: packed
    fast = st_backend.CrossEncoder(path, device="cpu")
    _as_remote_code(fast[0].auto_model)
    fast._st_engines.clear()  # the engine was built at load, before the class changed
    assert "remote code" in fast.engine()
    pairs = [("a cat", "a small animal"), ("q", "d " * 80)]
    assert_rows_close(fast.predict(pairs)[:, None], plain.predict(pairs)[:, None], what="scores")
