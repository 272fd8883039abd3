"""DeBERTa-v2/v3 (nli-deberta-v3, mxbai-rerank-v1): disentangled attention builds its relative positions inside its
own attention module, so it runs the grouped runner (engine/grouped.py). Token types: pairs' types as ST's."""

from ..positions import first_tokens
from . import ArchSpec, register


def _classify(model, hidden, batch):
    pooled = model.pooler(hidden[first_tokens(batch)][:, None])  # ContextPooler reads the [CLS] token
    return model.classifier(model.dropout(pooled))


register(ArchSpec("deberta-v2", token_type_ids=True, family="DeBERTa-v2", classify=_classify, runner="grouped"))
