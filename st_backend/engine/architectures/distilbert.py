"""DistilBERT: absolute positions from 0, no token types; its classifier is pre_classifier + ReLU on the first token."""

import torch

from ..positions import first_tokens
from . import ArchSpec, register


def _classify(model, hidden, batch):
    pooled = torch.relu(model.pre_classifier(hidden[first_tokens(batch)]))
    return model.classifier(model.dropout(pooled))


register(ArchSpec("distilbert", absolute_positions=True, family="DistilBERT", classify=_classify))
