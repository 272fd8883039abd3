"""The RoBERTa layout (XLM-RoBERTa, RoBERTa, CamemBERT): learned positions start at padding_idx + 1, as their own
create_position_ids_from_input_ids does; the classification head reads the first token."""

from ..positions import classify_first_token
from . import ArchSpec, register

for _model_type, _family in (("xlm-roberta", "XLM-RoBERTa"), ("roberta", "RoBERTa"), ("camembert", "CamemBERT")):
    register(
        ArchSpec(
            _model_type,
            pad_positions=True,
            family=_family,
            classify=classify_first_token,
        )
    )
