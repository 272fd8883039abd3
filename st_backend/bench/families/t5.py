"""T5 encoder (GTR, sentence-T5: ST loads T5EncoderModel for T5 configs): sentencepiece Unigram, bucketed
relative position bias."""

from __future__ import annotations

from ..factory import Family, register_family
from ..tiny_tokenizers import MAX_LEN, unigram_pieces

EXTRA_IDS = 4  # sentinels (the real vocab has 100), at the end in reverse order as T5Tokenizer lays them out


def _t5_tokenizer():
    # As google-t5: <pad> 0, </s> 1, <unk> 2, no bos; "$A </s>" and "$A </s> $B </s>".
    from transformers import T5Tokenizer

    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    sentinels = [(f"<extra_id_{i}>", 0.0) for i in reversed(range(EXTRA_IDS))]
    return T5Tokenizer(vocab=specials + unigram_pieces() + sentinels, extra_ids=EXTRA_IDS, model_max_length=MAX_LEN)


register_family(
    Family(
        "t5",
        "T5",
        tiny=dict(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2),
        special_ids={"pad_token_id": "pad", "eos_token_id": "eos", "decoder_start_token_id": "pad"},
        tokenizer=_t5_tokenizer,
        classes={"base": "T5EncoderModel"},
        # T5 v1.1 (GTR, sentence-T5) feed-forward; 16 buckets up to 32 tokens: exact within 4, log-spaced past.
        config=dict(
            feed_forward_proj="gated-gelu", relative_attention_num_buckets=16, relative_attention_max_distance=32
        ),
    )
)
