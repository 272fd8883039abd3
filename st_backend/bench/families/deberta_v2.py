"""DeBERTa-v2/v3 (nli-deberta-v3, mxbai-rerank-v1): sentencepiece Unigram, disentangled relative attention."""

from __future__ import annotations

from ..factory import SMALL_ENCODER, Family, register_family
from ..tiny_tokenizers import MAX_LEN, unigram_pieces


def _deberta_v2_tokenizer():
    # As microsoft/deberta-v3-base: [PAD] [CLS] [SEP] [UNK] first, [MASK] last; [CLS] A [SEP] B [SEP] with
    # token types 0 / 1.
    from transformers import DebertaV2Tokenizer

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    vocab = [(t, 0.0) for t in specials] + unigram_pieces() + [("[MASK]", 0.0)]
    return DebertaV2Tokenizer(vocab=vocab, model_max_length=MAX_LEN)


register_family(
    Family(
        "deberta-v2",
        "DebertaV2",
        # Two token types (v3 checkpoints have none) so that a pair's types reaching the model is checked.
        tiny=dict(SMALL_ENCODER, type_vocab_size=2),
        special_ids={"pad_token_id": "pad"},
        tokenizer=_deberta_v2_tokenizer,
        # v3's attention: relative only (no absolute positions), c2p + p2c, log buckets past 8 tokens.
        config=dict(
            relative_attention=True,
            position_buckets=16,
            max_relative_positions=-1,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
        ),
    )
)
