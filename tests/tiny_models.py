"""Tiny random-weight models for tests: the test size of ``st_backend.bench.factory``, under the names tests import.

The factory builds small, deterministic, random-weight Hugging Face checkpoints (tokenizer + config + weights)
and Sentence Transformers pipelines on disk, entirely offline, cached inside ``root`` by argument key::

    build_hf_dir(arch, root, task="base", *, num_labels=1) -> Path
    build_st_dir(arch, root, *, pooling_mode=None, include_prompt=True, dense=None, normalize=False,
                 prompts=None, default_prompt_name=None, max_seq_length=None, similarity_fn_name=None) -> Path

Model maximum lengths (``MAX_LEN``) are deliberately small (64 tokens) so that tests can exercise truncation at
the model maximum; ``SentenceTransformer(...)[0].max_seq_length == MAX_LEN`` for every built pipeline.
"""

from st_backend.bench.factory import (
    ARCHS,
    DECODER_ARCHS,
    ENCODER_ARCHS,
    INIT_RANGE,
    MAX_LEN,
    MODERNBERT_LOCAL_ATTENTION,
    TASKS,
    VOCAB_SIZE,
    build_hf_dir,
    build_st_dir,
    corpus,
    default_pooling_mode,
    load_tokenizer,
)

__all__ = [
    "ARCHS",
    "DECODER_ARCHS",
    "ENCODER_ARCHS",
    "INIT_RANGE",
    "MAX_LEN",
    "MODERNBERT_LOCAL_ATTENTION",
    "TASKS",
    "VOCAB_SIZE",
    "build_hf_dir",
    "build_st_dir",
    "corpus",
    "default_pooling_mode",
    "load_tokenizer",
]
