"""Gemma3 text (EmbeddingGemma; Gemma3TextModel): sentencepiece-like BPE with byte fallback, <pad> <eos> <bos>
<unk> <mask> first as in Gemma's vocabulary. The tiny size alternates sliding-window and full layers (an 8-token
window, shorter than the test texts), scales queries by query_pre_attn_scalar != head_dim and keeps the local and
global rope thetas apart, so a wrong window, scale or rope changes outputs.

Two families: "gemma3_text" (the causal Gemma3 config) and "gemma3_text-bidirectional" (EmbeddingGemma:
use_bidirectional_attention, whose config turns sliding_window 8 into 8 // 2 + 1 = 5, i.e. |i - j| < 5)."""

import functools

from ..factory import SMALL_DECODER, Family, register_family
from ..tiny_tokenizers import MAX_LEN, VOCAB_SIZE, _bpe_vocab, _train_bpe
from .qwen2 import SLIDING_WINDOW


def _gemma_tokenizer(add_eos: bool):
    from tokenizers import pre_tokenizers
    from transformers import GemmaTokenizer

    head = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{i:02X}>" for i in range(256)]
    # GemmaTokenizer turns spaces into "▁" without splitting; trained split so merges never cross words, which
    # gives the same segmentation unsplit ("▁" only ever starts a piece).
    split = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True)
    alphabet, merges = _train_bpe(VOCAB_SIZE - len(head), pre_tokenizer=split)
    return GemmaTokenizer(
        vocab=_bpe_vocab(head, alphabet, merges),
        merges=merges,
        add_bos_token=True,
        add_eos_token=add_eos,
        padding_side="left",
        model_max_length=MAX_LEN,
    )


_TINY = dict(
    SMALL_DECODER,
    num_hidden_layers=3,
    head_dim=16,
    intermediate_size=128,
    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    sliding_window=SLIDING_WINDOW,
    query_pre_attn_scalar=32,
    rope_parameters={
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
    },
)
_SPECIAL_IDS = {"pad_token_id": "pad", "eos_token_id": "eos", "bos_token_id": "bos"}

for _arch, _config, _add_eos in (
    ("gemma3_text", {}, False),
    ("gemma3_text-bidirectional", {"use_bidirectional_attention": True}, True),
):
    register_family(
        Family(
            _arch,
            "Gemma3Text",
            tiny=_TINY,
            special_ids=_SPECIAL_IDS,
            tokenizer=functools.partial(_gemma_tokenizer, _add_eos),
            decoder=True,
            classes={"causal-lm": "Gemma3ForCausalLM"},
            config=_config,
        )
    )
