"""MPNet (all-mpnet-base-v2): BERT-like WordPiece under RoBERTa-style specials, relative position bias."""

from __future__ import annotations

from ..factory import SMALL_ENCODER, Family, register_family
from ..tiny_tokenizers import MAX_LEN, _bert_tokenizer


def _mpnet_tokenizer():
    # As microsoft/mpnet-base: <s> <pad> </s> <unk> first (pad must be 1, the model's hardcoded padding_idx), the
    # BERT WordPiece vocab after them, <mask> last; RobertaProcessing adds <s> A </s></s> B </s>.
    from transformers import MPNetTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    wordpiece = sorted(_bert_tokenizer().get_vocab().items(), key=lambda item: item[1])
    vocab: dict[str, int] = {}
    for token in specials + [t for t, _ in wordpiece] + ["<mask>"]:
        vocab.setdefault(token, len(vocab))
    return MPNetTokenizer(vocab=vocab, model_max_length=MAX_LEN)


register_family(
    Family(
        "mpnet",
        "MPNet",
        tiny=dict(SMALL_ENCODER),
        special_ids={"pad_token_id": "pad", "bos_token_id": "bos", "eos_token_id": "eos"},
        tokenizer=_mpnet_tokenizer,
        position_offset=2,  # positions start at padding_idx + 1, as RoBERTa's
        # 32 buckets (ST's checkpoints' count; the encoder hardcodes 32): exact within 8 tokens, log-spaced past
        # that, so a 64-token input spans many of them.
        config=dict(relative_attention_num_buckets=32),
    )
)
