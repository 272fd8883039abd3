"""Qwen2 (gte-Qwen2, mxbai-rerank-v2): Qwen3's byte-level BPE (<|endoftext|> appended, pad and eos); q/k/v biases.
The tiny size turns sliding windows on from layer 1 (layer_types: full, sliding) with an 8-token window, shorter
than the test texts."""

from ..factory import SMALL_DECODER, Family, register_family
from ..tiny_tokenizers import _qwen3_tokenizer

#: Sliding window of the tiny Qwen2, Mistral and Gemma3 models (tokens, the query included).
SLIDING_WINDOW = 8

register_family(
    Family(
        "qwen2",
        "Qwen2",
        tiny=dict(
            SMALL_DECODER,
            intermediate_size=128,
            use_sliding_window=True,
            sliding_window=SLIDING_WINDOW,
            max_window_layers=1,
        ),
        special_ids={"bos_token_id": "eos", "eos_token_id": "eos", "pad_token_id": "pad"},
        tokenizer=_qwen3_tokenizer,
        decoder=True,
    )
)
