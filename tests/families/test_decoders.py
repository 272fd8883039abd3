"""Qwen2, Mistral and Gemma3 text (causal, and bidirectional as EmbeddingGemma): packed embedders and CrossEncoders
equal plain ST's, their sliding windows (8 tokens in the tiny models) shorter than the test texts."""

import pytest
from family_check import check_cross_encoder, check_embedder

ARCHS = ("qwen2", "mistral", "gemma3_text", "gemma3_text-bidirectional")


@pytest.mark.parametrize("arch", ARCHS)
def test_embedder(arch, tiny_root, caplog):
    check_embedder(arch, tiny_root, caplog, poolings=("lasttoken", "mean"))


@pytest.mark.parametrize("num_labels", [1, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_cross_encoder(arch, num_labels, tiny_root, caplog):
    check_cross_encoder(arch, tiny_root, caplog, num_labels)


def test_embeddinggemma_pipeline(tiny_root, caplog):
    # EmbeddingGemma's own modules: mean pooling, Dense projections, Normalize.
    check_embedder("gemma3_text-bidirectional", tiny_root, caplog, poolings=("mean",), dense=16, normalize=True)


# -- configs the packed engine refuses: ST's own path, with the reason, and ST's outputs -----------------------


def _config(model_type, **overrides):
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **overrides)


@pytest.mark.parametrize(
    ("model_type", "overrides", "why"),
    [
        ("gemma3_text", {"attn_logit_softcapping": 50.0}, "softcapping"),
        ("gemma3_text", {"final_logit_softcapping": 30.0}, "softcapping"),
        ("gemma3_text", {"is_causal": False}, "is_causal=False with sliding-window layers"),
        (
            "qwen2",
            {"is_causal": False, "use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1},
            "is_causal=False with sliding-window layers",
        ),
    ],
)
def test_refused_decoder_configs_name_their_reason(model_type, overrides, why):
    from st_backend.engine.architectures import resolve

    found = resolve(_config(model_type, **overrides))
    assert isinstance(found, str) and why in found, found


@pytest.mark.parametrize(
    ("model_type", "overrides"),
    [("qwen3", {"is_causal": False}), ("gemma3_text", {"use_bidirectional_attention": True})],
)
def test_bidirectional_decoder_configs_run_packed_and_bidirectional(model_type, overrides):
    from st_backend.engine.architectures import resolve

    found = resolve(_config(model_type, **overrides))
    assert not isinstance(found, str) and found.causal is False, found


def test_softcapping_gemma3_runs_st_path_with_the_note_and_equals_st(tiny_root, caplog):
    import logging

    import sentence_transformers
    from compare import assert_rows_close
    from family_check import TEXTS
    from tiny_models import build_st_dir

    import st_backend
    from st_backend.bench.factory import dims_for

    path = str(build_st_dir("gemma3_text", tiny_root, size={**dims_for("gemma3_text"), "attn_logit_softcapping": 5.0}))
    fast = st_backend.SentenceTransformer(path, device="cpu")
    with caplog.at_level(logging.INFO, logger="st_backend"):
        got = fast.encode(TEXTS)
    assert any("softcapping" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    want = sentence_transformers.SentenceTransformer(path, device="cpu").encode(TEXTS)
    assert_rows_close(got, want, what="softcapping Gemma3 on ST's path")
