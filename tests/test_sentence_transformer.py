"""Drop-in behaviour of st_backend.SentenceTransformer against plain ST, on models loaded from disk."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import sentence_transformers
import torch
from compare import assert_rows_close, assert_same_output
from sentence_transformers.sentence_transformer.modules import LayerNorm, Pooling, Router, Transformer
from tiny_models import ARCHS, build_hf_dir, build_st_dir

import st_backend
from st_backend import EngineConfig
from st_backend.engine.engine import Engine

TEXTS = ["", "a", "The cat sat on the mat.", "word " * 100, "Ünïcödé 🙂", "two words", "x " * 30]
PROMPTS = {"query": "query: ", "document": "passage: "}


def load_pair(path, **kwargs):
    plain = sentence_transformers.SentenceTransformer(str(path), device="cpu", **kwargs)
    fast = st_backend.SentenceTransformer(str(path), device="cpu", **kwargs)
    return plain, fast


@pytest.mark.parametrize("arch", ARCHS)
def test_loaded_from_disk_query_document_similarity(tiny_root, arch):
    path = build_st_dir(arch, tiny_root, prompts=PROMPTS, default_prompt_name="document", include_prompt=False)
    plain, fast = load_pair(path)
    assert isinstance(fast.engine_for(None), Engine)
    for method in ("encode", "encode_query", "encode_document"):
        want = getattr(plain, method)(TEXTS)
        got = getattr(fast, method)(TEXTS)
        assert_same_output(got, want, what=method)
    a, b = fast.encode(TEXTS[:3], convert_to_tensor=True), fast.encode(TEXTS[3:], convert_to_tensor=True)
    torch.testing.assert_close(fast.similarity(a, b), plain.similarity(a, b))


def test_save_load_round_trip_both_ways(tiny_root, tmp_path):
    path = build_st_dir("bert", tiny_root, dense=16, normalize=True)
    plain, fast = load_pair(path)
    fast.save(str(tmp_path / "from_fast"))
    types = [m["type"] for m in json.loads((tmp_path / "from_fast" / "modules.json").read_text())]
    assert all(t.startswith("sentence_transformers.") for t in types), types
    plain.save(str(tmp_path / "from_plain"))
    reloaded_plain = sentence_transformers.SentenceTransformer(str(tmp_path / "from_fast"), device="cpu")
    reloaded_fast = st_backend.SentenceTransformer(str(tmp_path / "from_plain"), device="cpu")
    want = plain.encode(TEXTS)
    assert_same_output(reloaded_plain.encode(TEXTS), want)
    assert_same_output(reloaded_fast.encode(TEXTS), want)


def test_router_routes_query_and_document(tiny_root):
    hf = str(build_hf_dir("bert", tiny_root))
    query = [Transformer(hf), Pooling(32, "cls")]
    document = [Transformer(hf), Pooling(32, "mean")]
    modules = [Router.for_query_document(query, document)]
    plain = sentence_transformers.SentenceTransformer(modules=modules, device="cpu")
    fast = st_backend.SentenceTransformer(modules=modules, device="cpu")
    assert_same_output(fast.encode_query(TEXTS), plain.encode_query(TEXTS), "query")
    assert_same_output(fast.encode_document(TEXTS), plain.encode_document(TEXTS), "document")
    assert fast.engine_for("query").plan.description["pooling"] == ("cls",)
    assert fast.engine_for("document").plan.description["pooling"] == ("mean",)


def test_unknown_module_runs_st_path_with_one_warning(tiny_root, caplog):
    hf = str(build_hf_dir("xlm-roberta", tiny_root))
    torch.manual_seed(0)
    modules = [Transformer(hf), Pooling(32, "mean"), LayerNorm(32)]
    plain = sentence_transformers.SentenceTransformer(modules=modules, device="cpu")
    fast = st_backend.SentenceTransformer(modules=modules, device="cpu")
    assert "LayerNorm" in fast.engine_for(None)
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        got = fast.encode(TEXTS)
        fast.encode(TEXTS)
    warnings = [r for r in caplog.records if "LayerNorm" in r.getMessage()]
    assert len(warnings) == 1 and "own path" in warnings[0].getMessage()
    assert_same_output(got, plain.encode(TEXTS))


@pytest.mark.parametrize("kwargs", [{}, {"convert_to_tensor": True}, {"convert_to_numpy": False}])
def test_empty_list_matches_st(tiny_root, kwargs):
    plain, fast = load_pair(build_st_dir("bert", tiny_root))
    want, got = plain.encode([], **kwargs), fast.encode([], **kwargs)
    assert type(got) is type(want)
    if isinstance(want, list):
        assert got == want == []
    else:
        assert tuple(got.shape) == tuple(want.shape) and got.dtype == want.dtype


def test_empty_list_token_embeddings(tiny_root):
    plain, fast = load_pair(build_st_dir("bert", tiny_root))
    assert fast.encode([], output_value="token_embeddings") == plain.encode([], output_value="token_embeddings")


def test_empty_string_embeds(tiny_root):
    plain, fast = load_pair(build_st_dir("bert", tiny_root))
    got = fast.encode([""])
    assert got.shape == (1, 32) and np.isfinite(got).all()
    assert_rows_close(got, plain.encode([""]))


@pytest.mark.parametrize(
    "bad,index,name", [(["a", 3], 1, "int"), ([None], 0, "NoneType"), (["a", "b", b"c"], 2, "bytes")]
)
def test_non_string_item_raises_type_error_naming_index(tiny_root, bad, index, name):
    _, fast = load_pair(build_st_dir("bert", tiny_root))
    with pytest.raises(TypeError, match=rf"inputs\[{index}\] is {name}"):
        fast.encode(bad)


def test_text_pairs_take_st_path_and_match(tiny_root):
    plain, fast = load_pair(build_st_dir("bert", tiny_root))
    pairs = [("a question", "an answer"), ("x", "y " * 50)]
    assert_same_output(fast.encode(pairs), plain.encode(pairs))


def test_order_is_the_callers(tiny_root):
    _, fast = load_pair(build_st_dir("modernbert", tiny_root))
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(TEXTS))
    base = fast.encode(TEXTS)
    shuffled = fast.encode([TEXTS[i] for i in perm])
    assert_rows_close(shuffled, base[perm])


@pytest.mark.parametrize("budget,batch_size", [(1, 32), (20, 2), (100_000, 1000)])
def test_token_budget_and_batch_size_do_not_change_results(tiny_root, budget, batch_size):
    path = build_st_dir("qwen3", tiny_root)
    plain = sentence_transformers.SentenceTransformer(str(path), device="cpu")
    fast = st_backend.SentenceTransformer(str(path), device="cpu", engine=EngineConfig(max_batch_tokens=budget))
    assert_rows_close(fast.encode(TEXTS, batch_size=batch_size), plain.encode(TEXTS))


def test_engine_settings_are_not_encode_kwargs(tiny_root):
    _, fast = load_pair(build_st_dir("bert", tiny_root))
    with pytest.raises(ValueError, match="max_batch_tokens"):
        fast.encode(TEXTS, max_batch_tokens=10)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"max_batch_tokens": 0}, "max_batch_tokens"),
        ({"max_batch_sequences": 0}, "max_batch_sequences"),
        ({"attention": "flash"}, "attention"),
        ({"dtype": "float17"}, "dtype"),
        ({"tokenizer_processes": -1}, "tokenizer_processes"),
        ({"chunk_size": 0}, "chunk_size"),
        # CUDA-graph modes overwrite a batch's outputs at the next batch, while the engine keeps them all.
        ({"compile": "reduce-overhead"}, "compile mode"),
        ({"compile": "max-autotune"}, "compile mode"),
        ({"rewrites": ("no_such_rewrite",)}, "rewrites"),
        ({"attention": "flash"}, "attention"),
    ],
)
def test_engine_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EngineConfig(**kwargs)


def test_half_precision_engine_dtype_matches_st_in_half(tiny_root):
    path = build_st_dir("llama", tiny_root)
    plain = sentence_transformers.SentenceTransformer(str(path), device="cpu").to(torch.bfloat16)
    fast = st_backend.SentenceTransformer(str(path), device="cpu", engine=EngineConfig(dtype="bfloat16"))
    got, want = fast.encode(TEXTS, convert_to_tensor=True), plain.encode(TEXTS, convert_to_tensor=True)
    assert got.dtype == want.dtype == torch.bfloat16
    assert_rows_close(got.float(), want.float(), min_cosine=0.99, max_abs=float("inf"))


def test_max_seq_length_set_after_load_is_honoured(tiny_root):
    plain, fast = load_pair(build_st_dir("bert", tiny_root))
    plain.max_seq_length = fast.max_seq_length = 8
    assert_same_output(
        fast.encode(TEXTS, output_value="token_embeddings"), plain.encode(TEXTS, output_value="token_embeddings")
    )
    assert max(len(t) for t in fast.encode(TEXTS, output_value="token_embeddings")) == 8


def test_truncate_dim_at_load(tiny_root):
    plain, fast = load_pair(build_st_dir("xlm-roberta", tiny_root), truncate_dim=8)
    assert_same_output(fast.encode(TEXTS), plain.encode(TEXTS))
    assert fast.encode(TEXTS).shape == (len(TEXTS), 8)


def test_progress_bar_and_device_argument(tiny_root):
    plain, fast = load_pair(build_st_dir("bert", tiny_root))
    assert_same_output(fast.encode(TEXTS, show_progress_bar=True, device="cpu"), plain.encode(TEXTS))


def test_multi_process_pool_matches(tiny_root):
    plain, fast = load_pair(build_st_dir("bert", tiny_root))
    texts = TEXTS * 3
    got = fast.encode(texts, device=["cpu", "cpu"], chunk_size=5)
    assert_same_output(got, plain.encode(texts))


INSTRUCT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}Instruct: {{ m['content'] }}\n"
    "{% else %}Query: {{ m['content'] }}{% endif %}{% endfor %}"
)


@pytest.mark.parametrize("arch,pooling", [("qwen3", "lasttoken"), ("bert", "mean"), ("modernbert", "cls")])
def test_instruction_template_for_embeddings(tiny_root, arch, pooling):
    hf = str(build_hf_dir(arch, tiny_root))
    backbone = Transformer(hf, processor_kwargs={"chat_template": INSTRUCT_TEMPLATE})
    modules = [backbone, Pooling(backbone.get_embedding_dimension(), pooling)]
    plain = sentence_transformers.SentenceTransformer(modules=modules, device="cpu")
    fast = st_backend.SentenceTransformer(modules=modules, device="cpu")
    assert fast.engine_for(None).template.template == INSTRUCT_TEMPLATE
    texts = ["what is a cat", "", "short one"]  # all fit: ST's truncate-and-restore never runs
    for kwargs in ({}, {"prompt": "Given a question, retrieve passages that answer it"}):
        assert_same_output(fast.encode(texts, **kwargs), plain.encode(texts, **kwargs))


def test_chat_template_argument_for_embeddings(tiny_root, tmp_path):
    path = build_st_dir("qwen3", tiny_root)
    template_file = tmp_path / "query.jinja"
    template_file.write_text(INSTRUCT_TEMPLATE, encoding="utf-8")
    fast = st_backend.SentenceTransformer(str(path), device="cpu", chat_template=str(template_file))
    plain = sentence_transformers.SentenceTransformer(
        str(path), device="cpu", processor_kwargs={"chat_template": INSTRUCT_TEMPLATE}
    )
    assert_same_output(fast.encode(TEXTS[:3], prompt="Find it"), plain.encode(TEXTS[:3], prompt="Find it"))


def test_auto_dtype_is_half_precision_on_cuda_only(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    auto = EngineConfig(dtype="auto")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))
    assert auto.load_dtype(cuda, False, torch.float32) == torch.float16  # encoders
    assert auto.load_dtype(cuda, True, torch.float32) == torch.bfloat16  # decoders can overflow float16
    assert auto.load_dtype(cuda, True, torch.float16) is None  # loaded in a chosen dtype: kept
    assert auto.load_dtype(cpu, False, torch.float32) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 5))  # no native bfloat16
    assert auto.load_dtype(cuda, True, torch.float32) == torch.float16
    assert EngineConfig().dtype is None and EngineConfig().load_dtype(cuda, False, torch.float32) is None
    assert EngineConfig(dtype="bfloat16").load_dtype(cpu, False, torch.float32) == torch.bfloat16


def test_auto_dtype_casts_only_models_the_engine_runs(tiny_root, monkeypatch):
    from transformers import AutoModel, BertConfig, PretrainedConfig

    asked = []

    def load_dtype(self, device, causal, loaded):
        asked.append(causal)
        return torch.float16  # as on a CUDA device

    monkeypatch.setattr(EngineConfig, "load_dtype", load_dtype)
    bert = AutoModel.from_config(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    )
    EngineConfig(dtype="auto").cast(bert)
    assert asked == [False] and next(bert.parameters()).dtype == torch.float16
    other = torch.nn.Linear(4, 4)
    other.config = PretrainedConfig()  # model_type "" : not a registered architecture
    EngineConfig(dtype="auto").cast(other)
    assert asked == [False] and other.weight.dtype == torch.float32  # plain ST runs it, in ST's dtype
    EngineConfig(dtype="auto").cast(torch.nn.Module())  # no parameters: nothing to do
    fast = st_backend.SentenceTransformer(str(build_st_dir("qwen3", tiny_root)), device="cpu")
    assert next(fast.parameters()).dtype == torch.float32 and asked == [False]  # the default casts nothing


def test_packed_false_runs_st_own_path_with_its_results(tiny_root, caplog):
    path = str(build_st_dir("bert", tiny_root))
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    fast = st_backend.SentenceTransformer(path, device="cpu", engine=EngineConfig(packed=False))
    assert fast.engine_for() == "EngineConfig(packed=False)"
    texts = ["a", "the quick brown fox", ""]
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        got = fast.encode(texts)
    assert any("packed=False" in r.getMessage() for r in caplog.records)
    assert_rows_close(got, plain.encode(texts))
    with pytest.raises(ValueError, match="EngineConfig.packed must be True or False"):
        EngineConfig(packed="no")
