"""ELECTRA: BERT's tiny WordPiece tokenizer (real checkpoints ship BERT's); embedding_size below hidden_size, as in
electra-small, so the embeddings_project layer runs."""

from ..factory import SMALL_ENCODER, Family, register_family
from ..tiny_tokenizers import _bert_tokenizer

register_family(
    Family(
        "electra",
        "Electra",
        tiny=dict(SMALL_ENCODER, embedding_size=16, type_vocab_size=2),
        special_ids={"pad_token_id": "pad"},
        tokenizer=_bert_tokenizer,
    )
)
