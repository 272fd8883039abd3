"""Tests of the random-weight model factory (``st_backend/bench/factory.py``): the tiny test models that
``tests/tiny_models.py`` re-exports, the models on the embedded MiniLM tokenizer (examples, benchmarks) and the
real sizes' configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from st_backend.bench import factory as tm

LONG_TEXT = "a much longer text that keeps going and going " * 20
TEXTS = ["a short text", LONG_TEXT]
PAIRS = [("what is a cat?", "a cat is a small animal"), ("hello", LONG_TEXT), ("x", "y")]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("factory")


@pytest.fixture(scope="session")
def st_models(tiny_root):
    from sentence_transformers import SentenceTransformer

    return {arch: SentenceTransformer(str(tm.build_st_dir(arch, tiny_root)), device="cpu") for arch in tm.ARCHS}


# ----------------------------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------------------------

EXPECTED_TOKENIZER_CLASS = {
    "bert": "BertTokenizer",
    "xlm-roberta": "XLMRobertaTokenizer",
    "modernbert": "TokenizersBackend",
    "qwen3": "Qwen2Tokenizer",
    "llama": "LlamaTokenizer",
}


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_tokenizer_reload_roundtrip(arch, tiny_root):
    from transformers import AutoTokenizer

    path = tm.build_hf_dir(arch, tiny_root)
    reloaded = AutoTokenizer.from_pretrained(path)
    fresh = tm.TOKENIZER_BUILDERS[arch]()
    assert type(reloaded).__name__ == EXPECTED_TOKENIZER_CLASS[arch]
    texts = [
        "Hello world, this is an UNSEEN wörd: zyxqv 🙂 façade! 東京 naïve Ωmega",
        "The quick brown fox jumps over the lazy dog.",
        "",
        "  leading and trailing spaces  ",
    ]
    assert reloaded(texts)["input_ids"] == fresh(texts)["input_ids"]
    assert reloaded(texts[:2], texts[2:])["input_ids"] == fresh(texts[:2], texts[2:])["input_ids"]
    assert reloaded.get_vocab() == fresh.get_vocab()
    assert 500 <= len(reloaded) <= 2000
    assert reloaded.model_max_length == tm.MAX_LEN
    assert reloaded.pad_token is not None
    # Arbitrary text maps into the vocabulary.
    ids = reloaded(texts[0])["input_ids"]
    assert all(0 <= i < len(reloaded) for i in ids)


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_tokenizer_special_tokens(arch, tiny_root):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tm.build_hf_dir(arch, tiny_root))
    tokens = tok.convert_ids_to_tokens(tok("hello world")["input_ids"])
    first, last = tokens[0], tokens[-1]
    expected = {
        "bert": ("[CLS]", "[SEP]", "[PAD]", 0, "right"),
        "xlm-roberta": ("<s>", "</s>", "<pad>", 1, "right"),
        "modernbert": ("[CLS]", "[SEP]", "[PAD]", None, "right"),
        "qwen3": (None, "<|endoftext|>", "<|endoftext|>", None, "left"),
        "llama": ("<s>", None, "<pad>", None, "left"),
    }[arch]
    exp_first, exp_last, exp_pad, exp_pad_id, exp_side = expected
    if exp_first is not None:
        assert first == exp_first
    else:
        assert first not in tok.all_special_tokens
    if exp_last is not None:
        assert last == exp_last
    else:
        assert last not in tok.all_special_tokens
    assert tok.pad_token == exp_pad
    if exp_pad_id is not None:
        assert tok.pad_token_id == exp_pad_id
    assert tok.padding_side == exp_side
    if arch == "modernbert":
        assert "token_type_ids" not in tok("hello")
    if arch == "bert":
        assert tok("a", "b")["token_type_ids"] == [0, 0, 0, 1, 1]


def test_tokenizers_deterministic(tiny_root, tmp_path):
    for arch in tm.ARCHS:
        a = (tm._tokenizer_dir(arch, tiny_root) / "tokenizer.json").read_bytes()
        b = (tm._tokenizer_dir(arch, tmp_path) / "tokenizer.json").read_bytes()
        assert a == b, arch


# ----------------------------------------------------------------------------------------------------------------
# HF dirs / configs
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_hf_config(arch, tiny_root):
    from transformers import AutoConfig

    path = tm.build_hf_dir(arch, tiny_root)
    raw = json.loads((path / "config.json").read_text())
    assert not any("attn_implementation" in key for key in raw), raw
    config = AutoConfig.from_pretrained(path)
    assert config.num_hidden_layers >= 2
    assert 32 <= config.hidden_size <= 64
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert head_dim % 8 == 0
    assert config.vocab_size == len(tm.load_tokenizer(arch, tiny_root))
    if arch == "xlm-roberta":
        assert config.pad_token_id == 1
        assert config.max_position_embeddings == tm.MAX_LEN + 2
    else:
        assert config.max_position_embeddings == tm.MAX_LEN
    if arch == "bert":
        assert config.type_vocab_size == 2
    if arch in tm.DECODER_ARCHS:
        assert config.num_key_value_heads < config.num_attention_heads
    if arch == "modernbert":
        assert config.num_hidden_layers >= 3
        assert config.local_attention == tm.MODERNBERT_LOCAL_ATTENTION
        assert config.layer_types == ["full_attention", "sliding_attention", "full_attention"]


def test_hf_dir_errors_and_cache(tiny_root):
    with pytest.raises(ValueError):
        tm.build_hf_dir("bert", tiny_root, task="causal-lm")
    with pytest.raises(ValueError):
        tm.build_hf_dir("gpt2", tiny_root)
    with pytest.raises(ValueError):
        tm.build_hf_dir("bert", tiny_root, task="nope")
    assert tm.build_hf_dir("bert", tiny_root) == tm.build_hf_dir("bert", tiny_root)
    assert tm.build_hf_dir("bert", tiny_root, "seq-cls", num_labels=3) != tm.build_hf_dir("bert", tiny_root, "seq-cls")


def test_weights_deterministic(tiny_root, tmp_path):
    for arch in ("bert", "qwen3"):
        a = (tm.build_hf_dir(arch, tiny_root) / "model.safetensors").read_bytes()
        b = (tm.build_hf_dir(arch, tmp_path) / "model.safetensors").read_bytes()
        assert a == b, arch


# ----------------------------------------------------------------------------------------------------------------
# SentenceTransformer pipelines
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_st_encode(arch, st_models):
    model = st_models[arch]
    dim = model.get_embedding_dimension()
    assert dim == model[0].get_embedding_dimension()
    emb = model.encode(TEXTS)
    assert emb.shape == (2, dim)
    assert np.isfinite(emb).all()
    assert not np.allclose(emb[0], emb[1])
    # Pooling defaults: mean for encoders, lasttoken for decoders.
    assert model[1].pooling_mode == tm.default_pooling_mode(arch)


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_st_truncation_at_model_max(arch, st_models):
    model = st_models[arch]
    assert model.max_seq_length == tm.MAX_LEN
    assert model[0].max_seq_length == tm.MAX_LEN
    features = model.tokenize(TEXTS)
    assert features["input_ids"].shape == (2, tm.MAX_LEN)
    tok = model.tokenizer
    long_ids = features["input_ids"][1].tolist()
    # The special tokens of the template survive truncation.
    if arch == "qwen3":
        assert long_ids[-1] == tok.convert_tokens_to_ids("<|endoftext|>")
        # Left padding: the short text is padded at the front.
        assert features["attention_mask"][0, 0] == 0 and features["attention_mask"][0, -1] == 1
    elif arch == "llama":
        assert long_ids[0] == tok.bos_token_id
        assert features["attention_mask"][0, 0] == 0 and features["attention_mask"][0, -1] == 1
    else:
        assert long_ids[0] == tok.cls_token_id and long_ids[-1] == tok.sep_token_id
        assert features["attention_mask"][0, 0] == 1 and features["attention_mask"][0, -1] == 0


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_st_padding_invariance(arch, st_models):
    # Batched (padded) and single encoding agree: checks the tiny models are mask-correct and that the
    # random weights are not degenerate (embeddings of different texts differ clearly).
    model = st_models[arch]
    texts = ["a short text", "another, somewhat longer sentence about cats and dogs", LONG_TEXT]
    batched = model.encode(texts, batch_size=8, convert_to_tensor=True)
    single = torch.stack([model.encode(t, convert_to_tensor=True) for t in texts])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    cos = torch.nn.functional.cosine_similarity(batched[0], batched[1], dim=0)
    assert cos < 0.99


def test_modernbert_sliding_window_is_exercised(tiny_root):
    # With a 40+ token input, the sliding-window layer must see a different context than a global layer would.
    from transformers import AutoModel, AutoTokenizer

    path = tm.build_hf_dir("modernbert", tiny_root)
    tok = AutoTokenizer.from_pretrained(path)
    inputs = tok(LONG_TEXT, return_tensors="pt", truncation=True)
    assert inputs["input_ids"].shape[1] > 4 * tm.MODERNBERT_LOCAL_ATTENTION
    local = AutoModel.from_pretrained(path).eval()
    wide = AutoModel.from_pretrained(path, local_attention=1024).eval()
    assert local.config._attn_implementation in ("sdpa", "eager")
    with torch.no_grad():
        out_local = local(**inputs).last_hidden_state
        out_wide = wide(**inputs).last_hidden_state
    assert (out_local - out_wide).abs().max() > 1e-3


def test_st_options(tiny_root):
    from sentence_transformers import SentenceTransformer

    prompts = {"query": "query: ", "document": "passage: "}
    options = dict(
        include_prompt=False,
        dense=16,
        normalize=True,
        prompts=prompts,
        default_prompt_name="query",
        max_seq_length=32,
        similarity_fn_name="dot",
    )
    path = tm.build_st_dir("bert", tiny_root, pooling_mode=("cls", "mean", "max"), **options)
    assert path == tm.build_st_dir("bert", tiny_root, pooling_mode=["cls", "mean", "max"], **options)
    assert path != tm.build_st_dir("bert", tiny_root)
    model = SentenceTransformer(str(path), device="cpu")
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert model[1].pooling_mode == ("cls", "mean", "max")
    assert model[1].include_prompt is False
    assert model.get_embedding_dimension() == 16
    assert model.prompts["query"] == "query: " and model.default_prompt_name == "query"
    assert model.max_seq_length == 32
    assert model.similarity_fn_name == "dot"
    emb = model.encode(TEXTS)
    assert emb.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert model.tokenize(TEXTS)["input_ids"].shape[1] == 32


@pytest.mark.parametrize(
    "pooling_mode", ["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", ("mean", "lasttoken")]
)
@pytest.mark.parametrize("arch", ["xlm-roberta", "llama"])
def test_st_pooling_modes(arch, pooling_mode, tiny_root):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tm.build_st_dir(arch, tiny_root, pooling_mode=pooling_mode)), device="cpu")
    emb = model.encode(TEXTS)
    n_modes = len(pooling_mode) if isinstance(pooling_mode, tuple) else 1
    assert emb.shape == (2, n_modes * model[0].get_embedding_dimension())
    assert np.isfinite(emb).all()


# ----------------------------------------------------------------------------------------------------------------
# Cross-encoders and causal LMs
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_cross_encoder(arch, tiny_root):
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(tm.build_hf_dir(arch, tiny_root, "seq-cls")), device="cpu")
    assert model.num_labels == 1
    scores = model.predict(PAIRS)
    assert scores.shape == (len(PAIRS),)
    assert np.isfinite(scores).all()
    # Batched == one-by-one (padding-correct, incl. left padding for decoders).
    single = np.array([model.predict([pair])[0] for pair in PAIRS])
    np.testing.assert_allclose(scores, single, atol=1e-5)


@pytest.mark.parametrize("arch", tm.DECODER_ARCHS)
def test_causal_lm(arch, tiny_root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tm.build_hf_dir(arch, tiny_root, "causal-lm")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    inputs = tok(TEXTS, return_tensors="pt", padding=True, truncation=True)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (2, tm.MAX_LEN, len(tok))
    assert torch.isfinite(logits).all()


# ----------------------------------------------------------------------------------------------------------------
# The tests' re-export, the MiniLM recipe (examples, benchmarks), real sizes, multi-vector pipelines
# ----------------------------------------------------------------------------------------------------------------


def test_tiny_models_reexports_the_factory():
    import tiny_models

    for name in tiny_models.__all__:
        assert getattr(tiny_models, name) is getattr(tm, name), name


@pytest.mark.parametrize("size", list(tm.SIZES))
def test_real_size_configs(size):
    arch, dims = tm.SIZES[size]
    tok = tm.load_tokenizer(arch, tokenizer="minilm")
    config = tm.model_config(arch, tok, tokenizer="minilm", size=size, task="seq-cls", max_len=128)
    assert {key: getattr(config, key) for key in dims} == dims
    assert config.vocab_size == len(tok) == 30522
    assert config.max_position_embeddings == 128 + (2 if arch == "xlm-roberta" else 0)
    assert config.num_labels == 1
    assert config.initializer_range == 0.02
    for field in ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"):
        token_id = getattr(config, field, None)
        assert token_id is None or 0 <= token_id < len(tok), (field, token_id)  # ModernBERT's defaults are not
    with pytest.raises(ValueError):
        tm.dims_for("llama", size)
    with pytest.raises(ValueError):
        tm.dims_for(arch, "huge")


def test_minilm_decoders(tiny_root):
    # The reranker examples' models: tiny dims on the embedded tokenizer, its model_max_length 512.
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig, AutoTokenizer

    path = tm.build_hf_dir("llama", tiny_root, "seq-cls", tokenizer="minilm")
    assert path.name == "llama-seq-cls-1labels-minilm"
    config = AutoConfig.from_pretrained(path)
    assert config.vocab_size == 30522 and config.hidden_size == 64 and config.max_position_embeddings == 512
    assert config.pad_token_id == 0  # the sequence-classification head finds each row's last token by it
    assert AutoTokenizer.from_pretrained(path).model_max_length == 512
    scores = CrossEncoder(str(path), device="cpu").predict(PAIRS)
    assert scores.shape == (len(PAIRS),) and np.isfinite(scores).all()
    causal = AutoConfig.from_pretrained(tm.build_hf_dir("qwen3", tiny_root, "causal-lm", tokenizer="minilm"))
    assert causal.pad_token_id is None and causal.tie_word_embeddings


def test_custom_dims_and_max_len(tiny_root):
    from transformers import AutoConfig

    dims = dict(hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=96)
    path = tm.build_hf_dir("bert", tiny_root, size=dims, max_len=32)
    assert path != tm.build_hf_dir("bert", tiny_root) and path.name.endswith("-len32")
    config = AutoConfig.from_pretrained(path)
    assert config.hidden_size == 48 and config.num_hidden_layers == 1 and config.max_position_embeddings == 32
    st_path = tm.build_st_dir("bert", tiny_root, size=dims, max_len=32)
    assert st_path != tm.build_st_dir("bert", tiny_root)


def test_multi_vector_dir(tiny_root):
    from sentence_transformers import MultiVectorEncoder

    model = MultiVectorEncoder(str(tm.build_multi_vector_dir("bert", tiny_root, dim=8)), device="cpu")
    assert [type(m).__name__ for m in model] == ["Transformer", "Dense", "MultiVectorMask", "Normalize"]
    torch.testing.assert_close(model[1].linear.weight, tm.projection_weight("bert", 32, 8))
    embeddings = model.encode_document(TEXTS)
    assert embeddings[0].shape[1] == 8
