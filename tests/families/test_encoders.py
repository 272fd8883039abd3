"""DistilBERT, RoBERTa, CamemBERT and ELECTRA: packed embedders and CrossEncoders equal plain ST's."""

import pytest
from family_check import check_cross_encoder, check_embedder

ARCHS = ("distilbert", "roberta", "camembert", "electra")


@pytest.mark.parametrize("arch", ARCHS)
def test_embedder(arch, tiny_root, caplog):
    check_embedder(arch, tiny_root, caplog)


@pytest.mark.parametrize("num_labels", [1, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_cross_encoder(arch, num_labels, tiny_root, caplog):
    check_cross_encoder(arch, tiny_root, caplog, num_labels)


@pytest.mark.parametrize("arch", ["xlm-roberta", "roberta", "camembert", "mpnet"])
def test_literal_pad_token_in_a_text(arch, tiny_root):
    # RoBERTa-style positions skip pad ids: a text holding the pad token's string must get ST's positions.
    import sentence_transformers
    from compare import assert_rows_close
    from tiny_models import build_st_dir

    import st_backend

    path = str(build_st_dir(arch, tiny_root))
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    fast = st_backend.SentenceTransformer(path, device="cpu")
    pad = plain.tokenizer.pad_token
    texts = [f"the quick {pad} brown fox jumps", pad, f"a {pad} {pad} b c d", "no pad here at all"]
    features = plain.tokenizer(texts[:1])
    assert plain.tokenizer.pad_token_id in features["input_ids"][0], "the pad string did not tokenize to the pad id"
    assert_rows_close(fast.encode(texts), plain.encode(texts))
    assert_rows_close(fast.encode(texts[::-1]), plain.encode(texts[::-1]))
