"""Mistral (e5-mistral, SFR-Embedding): Llama's sentencepiece-like BPE; every layer attends through a sliding
window, 8 tokens in the tiny size (shorter than the test texts)."""

from ..factory import SMALL_DECODER, Family, register_family
from ..tiny_tokenizers import _llama_tokenizer
from .qwen2 import SLIDING_WINDOW

register_family(
    Family(
        "mistral",
        "Mistral",
        tiny=dict(SMALL_DECODER, intermediate_size=128, sliding_window=SLIDING_WINDOW),
        special_ids={"bos_token_id": "bos", "eos_token_id": "eos", "pad_token_id": "pad"},
        tokenizer=_llama_tokenizer,
        decoder=True,
    )
)
