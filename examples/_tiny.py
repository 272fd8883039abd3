"""Tiny random decoders for the reranker examples, built offline on the embedded model's tokenizer."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification, Qwen3Config, Qwen3ForCausalLM

from st_backend.default_model import default_model_path


def tiny_decoder(kind: str) -> str:
    """kind: "qwen3-causal-lm" (a yes/no reranker) or "llama-seq-cls" (a nemotron-style classifier)."""
    torch.manual_seed(0)
    source = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    sizes = dict(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    if kind == "qwen3-causal-lm":
        model = Qwen3ForCausalLM(Qwen3Config(**sizes))
    elif kind == "llama-seq-cls":
        model = LlamaForSequenceClassification(LlamaConfig(num_labels=1, **sizes))
    else:
        raise ValueError(f"unknown tiny decoder {kind!r}")
    path = Path(tempfile.mkdtemp(prefix=f"st_backend_{kind}_"))
    model.save_pretrained(path)
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(path)
    return str(path)


def remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
