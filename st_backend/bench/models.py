"""Random-weight models of real sizes for benchmarks (vocabulary of the embedded model's tokenizer, 30,522)."""

from __future__ import annotations

import tempfile

import torch

SIZES = {
    "bert-base": ("bert", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)),
    "bert-large": (
        "bert",
        dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    ),
    "xlm-roberta-large": (
        "xlm-roberta",
        dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    ),
    "modernbert-base": (
        "modernbert",
        dict(hidden_size=768, num_hidden_layers=22, num_attention_heads=12, intermediate_size=1152),
    ),
    "qwen3-0.6b": (
        "qwen3",
        dict(
            hidden_size=1024,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            intermediate_size=3072,
        ),
    ),
}
RERANK_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query. Note that the "
    'answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n<Query>: {{ messages[0]["content"] }}\n'
    '<Document>: {{ messages[1]["content"] }}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n'
)


def template_for(size: str) -> str | None:
    """The score template a random reranker of this size is benchmarked with (causal ones need one)."""
    return RERANK_TEMPLATE if SIZES.get(size, ("",))[0] == "qwen3" else None


def build_random_model(size: str, task: str, max_len: int = 512) -> str:
    """Save a random-weight model of a named size, with the embedded model's tokenizer; returns its path."""
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    from ..default_model import default_model_path

    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; known: {sorted(SIZES)}")
    model_type, dims = SIZES[size]
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    extra = {"max_position_embeddings": max_len + (2 if model_type == "xlm-roberta" else 0)}
    if model_type == "xlm-roberta":
        extra["pad_token_id"] = 1
    config = AutoConfig.for_model(model_type, vocab_size=tokenizer.vocab_size, **dims, **extra)
    torch.manual_seed(0)
    if task == "rerank" and model_type == "qwen3":
        config.architectures = ["Qwen3ForCausalLM"]
        model = AutoModelForCausalLM.from_config(config)
    elif task == "rerank":
        config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModel.from_config(config)
    path = tempfile.mkdtemp(prefix=f"st_backend_bench_{size}_")
    model.save_pretrained(path)
    tokenizer.model_max_length = max_len
    tokenizer.save_pretrained(path)
    if task == "embed":
        import sentence_transformers
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

        backbone = Transformer(path)
        mode = "lasttoken" if model_type == "qwen3" else "mean"
        modules = [backbone, Pooling(backbone.get_embedding_dimension(), mode), Normalize()]
        sentence_transformers.SentenceTransformer(modules=modules, device="cpu").save(path)
    if task in ("colbert", "maxsim"):
        import sentence_transformers
        from sentence_transformers.base.modules import Dense, Normalize, Transformer
        from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

        backbone = Transformer(path)
        width = backbone.get_embedding_dimension()
        projection = Dense(
            width, 128, bias=False, activation_function=torch.nn.Identity(), module_input_name="token_embeddings"
        )
        modules = [backbone, projection, MultiVectorMask(), Normalize(module_input_name="token_embeddings")]
        sentence_transformers.MultiVectorEncoder(modules=modules, device="cpu").save(path)
    return path
