"""CamemBERT: XLM-R's tiny Unigram pieces in a CamembertTokenizer with camembert-base's special layout
(<s>NOTUSED <pad> </s>NOTUSED <unk> <unk>NOTUSED <s> </s> first, <mask> last); positions start at
padding_idx + 1 = 2."""

from ..factory import SMALL_ENCODER, Family, register_family
from ..tiny_tokenizers import MAX_LEN, unigram_pieces


def _camembert_tokenizer():
    from transformers import CamembertTokenizer

    pieces = unigram_pieces()
    head = [("<s>NOTUSED", 0.0), ("<pad>", 0.0), ("</s>NOTUSED", 0.0), ("<unk>", 0.0), ("<unk>NOTUSED", -100.0)]
    vocab = head + [("<s>", 0.0), ("</s>", 0.0)] + pieces + [("<mask>", 0.0)]
    return CamembertTokenizer(vocab=vocab, model_max_length=MAX_LEN)


register_family(
    Family(
        "camembert",
        "Camembert",
        tiny=dict(SMALL_ENCODER, type_vocab_size=1),
        special_ids={"pad_token_id": "pad", "bos_token_id": "bos", "eos_token_id": "eos"},
        tokenizer=_camembert_tokenizer,
        position_offset=2,
    )
)
