"""EngineConfig refuses nonsense at construction, naming the field, the value and what it accepts; numpy integers
and booleans are taken and stored as Python ones."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from st_backend.engine.config import EngineConfig

COUNT_FIELDS = ("max_batch_tokens", "max_batch_sequences", "chunk_size", "tokenizer_threads", "tokenizer_processes")
FLAG_FIELDS = ("xformers_torch_ops", "shared_prefix", "cuda_graphs", "profile", "packed")

BAD = [
    # (field, value, what the message must say is accepted)
    *[(field, value, "an integer >=") for field in COUNT_FIELDS for value in (2.5, "4096", True, 8.0)],
    ("tokenizer_processes", 1.5, "an integer >= 0"),
    ("tokenizer_processes", np.bool_(False), "an integer >= 0"),
    ("dtype", "int64", "float32"),
    ("dtype", "bool", "float32"),
    ("dtype", 5, "float32"),
    ("dtype", torch.int8, "float32"),
    ("dtype", torch.complex64, "float32"),
    ("dtype", torch.float8_e4m3fn, "float32"),
    ("dtype", "finfo", "float32"),  # a torch attribute, not a dtype
    ("dtype", "nope", "float32"),
    ("compile", 1, "True, False or a torch.compile mode"),
    ("compile", None, "True, False or a torch.compile mode"),
    ("rewrites", "linear_gelu", "rewrites must be a sequence of names"),
    ("rewrites", 5, "rewrites must be a sequence of names"),
    ("attention", None, "a string, one of"),
    ("attention", np.array(["auto"]), "a string, one of"),
    *[(field, value, "True or False") for field in FLAG_FIELDS for value in ("no", 1, None)],
]


@pytest.mark.parametrize("field,value,accepted", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_refuses_bad_values_at_construction(field, value, accepted):
    with pytest.raises(ValueError) as info:
        EngineConfig(**{field: value})
    message = str(info.value)
    assert f"EngineConfig.{field}" in message
    assert f"{value!r:.20}" in message, f"{message!r} does not show the bad value"
    assert re.search(re.escape(accepted), message), f"{message!r} does not say what is accepted"


def test_accepts_good_values_as_python_types():
    config = EngineConfig(
        max_batch_tokens=np.int64(4096),
        max_batch_sequences=np.int32(64),
        chunk_size=np.uint16(256),
        tokenizer_threads=2,
        tokenizer_processes=np.int8(0),
        shared_prefix=np.bool_(False),
        profile=np.bool_(True),
        compile=np.bool_(True),
        rewrites=["linear_gelu"],
        attention="reference",
    )
    for field, want in (
        ("max_batch_tokens", 4096),
        ("max_batch_sequences", 64),
        ("chunk_size", 256),
        ("tokenizer_threads", 2),
        ("tokenizer_processes", 0),
    ):
        assert type(getattr(config, field)) is int and getattr(config, field) == want, field
    assert config.shared_prefix is False and config.profile is True and config.compile is True
    assert config.rewrites == ("linear_gelu",)
    assert config.token_budget(torch.device("cpu")) == 4096
    assert EngineConfig(rewrites=()).rewrites == ()
    assert EngineConfig(compile="max-autotune-no-cudagraphs").compile == "max-autotune-no-cudagraphs"


def test_accepts_floating_dtypes_and_their_names():
    for given, want in (
        ("float", torch.float32),  # torch's own alias of float32
        ("half", torch.float16),
        ("bfloat16", torch.bfloat16),
        ("torch.bfloat16", torch.bfloat16),  # str(torch.bfloat16), as configs write it
        (torch.float16, torch.float16),
        ("float64", torch.float64),
        ("auto", "auto"),
        (None, None),
    ):
        assert EngineConfig(dtype=given).dtype == want, given


@pytest.mark.parametrize("backend", ["varlen", "efficient", "xformers"])
def test_a_backend_that_cannot_run_on_the_device_is_named_at_load(tiny_root, backend):
    import torch
    from tiny_models import build_st_dir

    import st_backend

    if torch.cuda.is_available():
        pytest.skip("on a CUDA machine these backends may run")
    with pytest.raises(ValueError, match=rf"attention='{backend}' cannot run on cpu.*st-backend info") as err:
        st_backend.SentenceTransformer(
            str(build_st_dir("bert", tiny_root)), device="cpu", engine=EngineConfig(attention=backend)
        )
    assert "CUDA" in str(err.value) or "not installed" in str(err.value) or "xformers" in str(err.value)
