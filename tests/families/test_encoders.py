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
