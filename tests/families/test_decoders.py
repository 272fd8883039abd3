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
