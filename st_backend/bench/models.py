"""Random-weight models of real sizes for benchmarks, on the embedded model's tokenizer (30,522 tokens): thin
wrappers of ``factory.py`` (the one random-model factory of the tests, the examples and the benchmarks)."""

from __future__ import annotations

import shutil
import tempfile

from . import factory
from .factory import SIZES, is_decoder

__all__ = ["RERANK_TEMPLATE", "SIZES", "build_random_model", "build_splade_dir", "template_for"]

RERANK_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query. Note that the "
    'answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n<Query>: {{ messages[0]["content"] }}\n'
    '<Document>: {{ messages[1]["content"] }}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n'
)


def template_for(size: str) -> str | None:
    """The score template a random reranker of this size is benchmarked with (causal ones need one)."""
    return RERANK_TEMPLATE if is_decoder(SIZES.get(size, ("",))[0]) else None


def build_random_model(size: str, task: str, max_len: int = 512) -> str:
    """Save a random-weight model of a named size for a bench task in a fresh temporary directory; returns its
    path. embed: a normalized SentenceTransformer; rerank: a CrossEncoder (a causal LM for decoders, scored by a
    template); colbert / maxsim: a MultiVectorEncoder projecting to 128; sparse: a SPLADE SparseEncoder; else the
    bare model."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; known: {sorted(SIZES)}")
    arch = SIZES[size][0]
    root = tempfile.mkdtemp(prefix=f"st_backend_bench_{size}_")
    model = dict(size=size, tokenizer="minilm", max_len=max_len)
    if task in ("rerank", "rank"):
        return str(factory.build_hf_dir(arch, root, "causal-lm" if is_decoder(arch) else "seq-cls", **model))
    if task == "embed":
        path = factory.build_st_dir(arch, root, normalize=True, **model)
    elif task in ("colbert", "maxsim"):
        path = factory.build_multi_vector_dir(arch, root, dim=128, **model)
    elif task == "sparse":
        return build_splade_dir(arch, root, **model)
    else:
        return str(factory.build_hf_dir(arch, root, **model))
    shutil.rmtree(factory.build_hf_dir(arch, root, **model))  # the pipeline holds its own copy of the weights
    return str(path)


def build_splade_dir(arch: str, root: str, size: str, tokenizer: str = "minilm", max_len: int = 512) -> str:
    """A SPLADE SparseEncoder of random weights in ``root``: ``arch``'s masked-LM class at ``size`` (the factory's
    config and init on ``tokenizer``), then ``[MLMTransformer, SpladePooling("max")]`` as ST's SPLADE models are."""
    import os

    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling
    from transformers import AutoModelForMaskedLM

    if is_decoder(arch):
        raise ValueError(f"--task sparse needs an encoder with a masked-LM head, not {arch!r}")
    hf = os.path.join(root, "mlm")
    tok = factory.load_tokenizer(arch, root, tokenizer)
    tok.model_max_length = max_len
    config = factory.model_config(arch, tok, tokenizer=tokenizer, size=size, max_len=max_len)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        AutoModelForMaskedLM.from_config(config).eval().save_pretrained(hf)
    tok.save_pretrained(hf)
    path = os.path.join(root, "splade")
    SparseEncoder(modules=[MLMTransformer(hf), SpladePooling("max")], device="cpu").save(path)
    shutil.rmtree(hf)  # the pipeline holds its own copy of the weights
    return path
