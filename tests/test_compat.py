"""Every private name of ST / transformers that st_backend relies on: when upstream renames one, this says which."""

import inspect

import sentence_transformers
from sentence_transformers.base.modules.router import Router
from sentence_transformers.base.modules.transformer import Transformer
from transformers import PretrainedConfig


def test_st_inference_override_point():
    params = inspect.signature(sentence_transformers.SentenceTransformer._inference).parameters
    for name in (
        "prompt",
        "batch_size",
        "show_progress_bar",
        "output_value",
        "save_to_cpu",
        "normalize_embeddings",
        "truncate_dim",
        "device",
    ):
        assert name in params, name
    assert hasattr(sentence_transformers.SentenceTransformer, "_resolve_inference_device")


def test_st_transformer_private_names(tiny_root):
    from tiny_models import build_hf_dir

    module = Transformer(str(build_hf_dir("bert", tiny_root)))
    names = (
        "model",
        "tokenizer",
        "max_seq_length",
        "query_length",
        "document_length",
        "processing_kwargs",
        "backend",
        "transformer_task",
        "modality_config",
        "query_expansion",
    )
    for name in names:
        assert hasattr(module, name), name
    assert isinstance(module._get_prompt_length("query: "), int)


def test_router_route_resolution():
    assert callable(Router._resolve_route)


def test_attn_implementation_setter_recurses():
    config = PretrainedConfig()
    config._attn_implementation = "st_reference"
    assert config._attn_implementation == "st_reference"
