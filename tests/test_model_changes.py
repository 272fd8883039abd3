"""The engine follows the model it serves: each change a user makes after the first call (modules, their settings,
the backbone, the tokenizer, hooks, patched forwards, adapters, routes, ColBERT settings) gives plain ST's result
for the changed model, as does a model that cannot be copied; caches stay bounded. Each test makes one change to a
plain ST model and to an st_backend model loaded from the same files, after both have run once."""

import copy
import gc

import numpy as np
import pytest
import sentence_transformers
import torch
import torch.nn.utils.prune
from colbert_models import build_colbert_dir
from compare import assert_same_output
from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Router, Transformer
from tiny_models import build_hf_dir, build_st_dir

import st_backend
from st_backend.engine.engine import Engine

TEXTS = ["the cat sat on the mat", "a dog", "", "numbers 1 2 3 4 5 6 7 8 9 10 " * 3, "Ünïcödé 🙂 text"]


def _pair(path, cls="SentenceTransformer", **kwargs):
    plain = getattr(sentence_transformers, cls)(str(path), device="cpu", **kwargs)
    fast = getattr(st_backend, cls)(str(path), device="cpu", **kwargs)
    return plain, fast


def _same(plain, fast, texts=TEXTS, **kwargs):
    assert_same_output(fast.encode(texts, **kwargs), plain.encode(texts, **kwargs))


@pytest.fixture
def bert(tiny_root):
    plain, fast = _pair(build_st_dir("bert", tiny_root))
    _same(plain, fast)  # the engine is built
    return plain, fast


def test_appended_dense_module(bert):
    plain, fast = bert
    torch.manual_seed(1)
    dense = Dense(plain.get_embedding_dimension(), 7)
    plain.append(dense)
    fast.append(copy.deepcopy(dense))
    _same(plain, fast)
    assert fast.encode(TEXTS).shape == (len(TEXTS), 7)
    assert isinstance(fast.engine_for(), Engine)


def test_deleted_normalize_module(tiny_root):
    plain, fast = _pair(build_st_dir("bert", tiny_root, normalize=True))
    _same(plain, fast)
    del plain[2]
    del fast[2]
    _same(plain, fast)
    assert np.abs(np.linalg.norm(fast.encode(TEXTS[:2]), axis=1) - 1).max() > 1e-3


def test_pooling_mode_and_include_prompt_edits(bert):
    plain, fast = bert
    for model in (plain, fast):
        model[1].pooling_mode = "cls"
    _same(plain, fast)
    for model in (plain, fast):
        model[1].pooling_mode = "mean"
        model[1].include_prompt = False
    _same(plain, fast, prompt="query: ")


def test_replaced_backbone(bert, tiny_root):
    plain, fast = bert
    torch.manual_seed(2)
    new = copy.deepcopy(plain[0].model)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    plain[0].model = new
    fast[0].model = copy.deepcopy(new)
    _same(plain, fast)


def test_added_tokens_and_resized_embeddings(bert):
    plain, fast = bert
    texts = ["a brandnewword here", "brandnewword"]
    for model in (plain, fast):
        model[0].tokenizer.add_tokens(["brandnewword"])
        torch.manual_seed(3)
        model[0].model.resize_token_embeddings(len(model[0].tokenizer))
    _same(plain, fast, texts)


def test_truncation_side_left(bert):
    plain, fast = bert
    long = ["numbers " + " ".join(str(i) for i in range(200))]
    for model in (plain, fast):
        model[0].tokenizer.truncation_side = "left"
    _same(plain, fast, long + TEXTS)


def test_forward_hook_added_then_removed(bert, notes):
    plain, fast = bert

    def scale(module, args, output):
        return output * 2.0

    handles = [m[0].model.encoder.layer[0].output.dense.register_forward_hook(scale) for m in (plain, fast)]
    _same(plain, fast)
    assert any("forward hooks" in n for n in notes())
    for handle in handles:
        handle.remove()
    _same(plain, fast)
    assert isinstance(fast.engine_for(), Engine)


def test_instance_forward_patch(bert, notes):
    plain, fast = bert
    for model in (plain, fast):
        layer = model[0].model.encoder.layer[1].intermediate
        original = layer.forward
        layer.forward = lambda hidden, original=original: original(hidden) * 0.5
    _same(plain, fast)
    assert any("forward is patched" in n for n in notes())


def test_peft_adapter_added_after_the_first_call_then_disabled(tiny_root):
    """LoRA layers injected after the first call, then switched off: their on/off flag is an attribute a packed
    view would not see change, so adapter layers run ST's path; both states equal plain ST's."""
    peft = pytest.importorskip("peft")

    plain, fast = _pair(build_st_dir("bert", tiny_root))
    _same(plain, fast)
    config = peft.LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False)
    for model in (plain, fast):
        torch.manual_seed(4)
        peft.inject_adapter_in_model(config, model[0].model)
    _same(plain, fast)
    for model in (plain, fast):
        for module in model[0].model.modules():
            if isinstance(module, peft.tuners.tuners_utils.BaseTunerLayer):
                module.enable_adapters(False)
    _same(plain, fast)


def test_processing_kwargs_set_later(bert):
    plain, fast = bert
    for model in (plain, fast):
        model[0].processing_kwargs = {"text": {"max_length": 5}}
    _same(plain, fast)


def test_split_special_tokens(tiny_root):
    """Literal special-token text in user input stays text when the tokenizer splits special tokens."""
    path = build_st_dir("bert", tiny_root)
    texts = ["hello [SEP] world [CLS]", "[MASK]", "plain text"]
    plain, fast = _pair(path, tokenizer_kwargs={"split_special_tokens": True})
    _same(plain, fast, texts)
    plain, fast = _pair(path)
    _same(plain, fast, texts)
    for model in (plain, fast):
        model[0].tokenizer.split_special_tokens = True
    _same(plain, fast, texts)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "electra"])
def test_left_padding_on_absolute_positions_runs_st_path(tiny_root, arch, notes):
    """ST shifts BERT-style absolute positions by each row's pad count with a left-padding tokenizer (its result
    depends on the batch): st_backend gives ST's result by running its path, with the note."""
    plain, fast = _pair(build_st_dir(arch, tiny_root))
    for model in (plain, fast):
        model[0].tokenizer.padding_side = "left"
    _same(plain, fast)
    assert any("absolute positions" in n for n in notes())


def test_router_default_route_and_mappings(tiny_root):
    hf = str(build_hf_dir("bert", tiny_root))

    def modules():
        torch.manual_seed(5)
        return [
            Router.for_query_document([Transformer(hf), Pooling(32, "cls")], [Transformer(hf), Pooling(32, "mean")])
        ]

    plain = sentence_transformers.SentenceTransformer(modules=modules(), device="cpu")
    fast = st_backend.SentenceTransformer(modules=modules(), device="cpu")
    _same(plain, fast, task="query")
    _same(plain, fast)
    for model in (plain, fast):
        model[0].route_mappings = {**model[0].route_mappings, ("query", None): "document"}
    _same(plain, fast, task="query")
    for model in (plain, fast):
        model[0].default_route = "query" if model[0].default_route != "query" else "document"
    _same(plain, fast)


def test_multi_vector_settings_changed_later(tiny_root):
    path = build_colbert_dir("st", "bert", tiny_root, query_expansion=None)
    plain, fast = _pair(path, cls="MultiVectorEncoder")
    assert_same_output(fast.encode_query(TEXTS), plain.encode_query(TEXTS))
    for model in (plain, fast):
        model[0].query_length = 14
    assert_same_output(fast.encode_query(TEXTS), plain.encode_query(TEXTS))
    for model in (plain, fast):
        model[0].query_expansion = {"strategy": "fixed", "attend": True, "token": None, "length": 12}
    assert_same_output(fast.encode_query(TEXTS), plain.encode_query(TEXTS))
    for model in (plain, fast):
        model[0].query_expansion = {"strategy": "fixed", "attend": False, "token": None, "length": 12}
    assert_same_output(fast.encode_query(TEXTS), plain.encode_query(TEXTS))


def test_pruned_and_weight_norm_models_run_st_path(tiny_root, notes):
    for change in ("prune", "weight_norm"):
        plain, fast = _pair(build_st_dir("bert", tiny_root))
        for model in (plain, fast):
            layer = model[0].model.encoder.layer[0].output.dense
            if change == "prune":
                torch.manual_seed(6)
                torch.nn.utils.prune.l1_unstructured(layer, "weight", amount=0.3)
            else:
                with pytest.warns(FutureWarning):
                    torch.nn.utils.weight_norm(layer)
        _same(plain, fast)
    assert len(notes()) >= 1


def test_graph_addresses_follow_replaced_weights():
    """CUDA graphs read weights at captured addresses: a storage swap (param.data = new) drops them (CPU check of
    the bookkeeping; tests/test_gpu.py replays one)."""
    from st_backend.engine.graphs import CudaGraphs

    model = torch.nn.Linear(4, 4)
    graphs = CudaGraphs(model, torch.device("cpu"))
    graphs.graphs[("bucket",)] = object()
    graphs._check_weights()
    assert graphs.graphs  # nothing moved
    with torch.no_grad():
        model.weight.add_(1.0)  # in place: same storage, a replay reads the new values
    graphs._check_weights()
    assert graphs.graphs
    model.weight.data = torch.zeros(4, 4)
    graphs._check_weights()
    assert not graphs.graphs and graphs.recaptures == 1


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_caches_stay_bounded_across_lengths_and_tasks(tiny_root):
    """200 distinct max_seq_length values and 200 task= values: tokenizer copies and engines are LRU-bounded, and
    memory stays flat."""
    from st_backend.engine.tokenizer import MAX_COPIES
    from st_backend.models.base import MAX_ENGINES

    fast = st_backend.SentenceTransformer(str(build_st_dir("bert", tiny_root)), device="cpu")
    plain = sentence_transformers.SentenceTransformer(str(build_st_dir("bert", tiny_root)), device="cpu")

    def sweep(start: int) -> None:
        for i in range(start, start + 100):
            fast.max_seq_length = 8 + i % 56
            fast.encode(TEXTS[:2])
            fast.encode(TEXTS[:2], task=f"task-{i}")

    sweep(0)
    gc.collect()
    before = _rss_mb()
    sweep(100)
    gc.collect()
    grown = _rss_mb() - before
    assert len(fast._st_engines) <= MAX_ENGINES
    assert all(len(e.tokenizer._copies) <= MAX_COPIES for e in fast.engines().values() if isinstance(e, Engine))
    assert grown < 40, f"RSS grew {grown:.1f} MB over the second 100 lengths and tasks"
    plain.max_seq_length = fast.max_seq_length = 16
    _same(plain, fast)
