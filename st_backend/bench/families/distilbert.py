"""DistilBERT: BERT's tiny WordPiece vocabulary in a DistilBertTokenizer (no token types, like real checkpoints)."""

from ..factory import SMALL_ENCODER, Family, register_family
from ..tiny_tokenizers import MAX_LEN, _bert_tokenizer


def _distilbert_tokenizer():
    from transformers import DistilBertTokenizer

    return DistilBertTokenizer(vocab=_bert_tokenizer().get_vocab(), model_max_length=MAX_LEN)


register_family(
    Family(
        "distilbert",
        "DistilBert",
        # hidden_size / num_* map to dim / n_*; hidden_dim is DistilBERT's intermediate size.
        tiny=dict(hidden_size=SMALL_ENCODER["hidden_size"], num_hidden_layers=2, num_attention_heads=2, hidden_dim=64),
        special_ids={"pad_token_id": "pad"},
        tokenizer=_distilbert_tokenizer,
    )
)
