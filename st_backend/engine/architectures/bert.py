"""BERT: absolute positions from 0, token types."""

from ..positions import first_tokens
from . import ArchSpec, register


def _classify(model, hidden, batch):
    pooled = model.bert.pooler(hidden[first_tokens(batch)][:, None])
    return model.classifier(model.dropout(pooled))


register(ArchSpec("bert", token_type_ids=True, absolute_positions=True, family="BERT", classify=_classify))
