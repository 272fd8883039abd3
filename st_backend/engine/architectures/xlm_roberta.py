"""XLM-RoBERTa: learned positions start at padding_idx + 1, as its own create_position_ids_from_input_ids does."""

from ..positions import first_tokens
from . import ArchSpec, register


def _classify(model, hidden, batch):
    return model.classifier(hidden[first_tokens(batch)][:, None])


register(
    ArchSpec(
        "xlm-roberta", position_offset=lambda config: config.pad_token_id + 1, family="XLM-RoBERTa", classify=_classify
    )
)
