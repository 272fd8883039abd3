"""RoBERTa: byte-level BPE with <s> <pad> </s> <unk> first and <mask> last, like roberta-base; positions start at
padding_idx + 1 = 2."""

from ..factory import SMALL_ENCODER, Family, register_family
from ..tiny_tokenizers import MAX_LEN, VOCAB_SIZE, _bpe_vocab, _train_bpe


def _roberta_tokenizer():
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    alphabet, merges = _train_bpe(
        VOCAB_SIZE - len(specials) - 1,
        pre_tokenizer=pre_tokenizers.ByteLevel(add_prefix_space=False),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    return RobertaTokenizer(
        vocab=_bpe_vocab(specials, alphabet, merges, ["<mask>"]), merges=merges, model_max_length=MAX_LEN
    )


register_family(
    Family(
        "roberta",
        "Roberta",
        tiny=dict(SMALL_ENCODER, type_vocab_size=1),
        special_ids={"pad_token_id": "pad", "bos_token_id": "bos", "eos_token_id": "eos"},
        tokenizer=_roberta_tokenizer,
        position_offset=2,
    )
)
