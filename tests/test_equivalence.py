"""The equivalence matrix: st_backend against plain ST on the same tiny random weights (CPU, fp32).

Every architecture x pooling mode x include_prompt x Dense x Normalize, each with a set of encode calls
that covers prompts, normalize_embeddings, truncate_dim, every output_value, numpy/tensor/list outputs
and every precision, on texts from one token to past the model's maximum (truncation).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sentence_transformers
import torch
from compare import assert_same_output
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
from sentence_transformers.util.quantization import quantize_embeddings
from tiny_models import ARCHS, DECODER_ARCHS, build_hf_dir

import st_backend
from st_backend.engine.engine import Engine

POOLINGS = ["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", ("cls", "mean", "max")]
PROMPTS = {"query": "query: ", "long": "represent this passage for retrieval of related ones: "}
WORDS = "the quick brown fox jumps over a lazy dog while seven tired cats watch from under wet grass".split()
TEXTS = [
    "",
    "a",
    "hi",
    "A man is playing a guitar.",
    " ".join(WORDS[:7]),
    " ".join(WORDS),
    " ".join(WORDS * 2),  # close to the maximum of 64 tokens
    " ".join(WORDS * 6),  # past it: truncated
    "Ünïcödé 東京 🙂 text",
    "a",  # a duplicate keeps its own slot
    "numbers 1 2 3 4 5 6 7 8 9 10",
    "short one",
]

# Each call is one set of encode kwargs; together they cover every value of every option.
CALLS = [
    {},
    {"prompt_name": "query"},
    {"prompt_name": "long", "normalize_embeddings": True, "truncate_dim": 8, "convert_to_tensor": True},
    {"prompt_name": "query", "convert_to_numpy": False, "batch_size": 3},
    {"prompt_name": "query", "output_value": "token_embeddings"},
    {"prompt": "Instruct: find it\nQuery: ", "output_value": None},
    {"prompt_name": "query", "precision": "int8", "truncate_dim": 16},
    {"precision": "uint8", "normalize_embeddings": True},
    {"prompt_name": "long", "precision": "binary"},
    {"prompt_name": "query", "precision": "ubinary", "convert_to_tensor": True},
]


@pytest.fixture(scope="module")
def backbones(tiny_root):
    return {arch: Transformer(str(build_hf_dir(arch, tiny_root))) for arch in ARCHS}


def _pair(backbone, pooling, include_prompt, dense, normalize):
    torch.manual_seed(0)
    modules = [backbone, Pooling(backbone.get_embedding_dimension(), pooling, include_prompt=include_prompt)]
    if dense:
        modules.append(Dense(modules[1].get_embedding_dimension(), 24, activation_function=torch.nn.Tanh()))
    if normalize:
        modules.append(Normalize())
    plain = sentence_transformers.SentenceTransformer(modules=modules, device="cpu", prompts=PROMPTS)
    # A small token budget so that every call runs several packed batches.
    fast = st_backend.SentenceTransformer(
        modules=modules, device="cpu", prompts=PROMPTS, engine=st_backend.EngineConfig(max_batch_tokens=96)
    )
    return plain, fast


def _texts_for(plain, arch, pooling, include_prompt, call):
    # With left padding (decoders), ST's cls over a sequence that its prompt fills entirely reads a pad
    # position, which depends on the batch; no packed layout has one. Such sequences (e.g. Llama's "" or
    # "a" after "query: ", whose trailing "▁" merges into the text) are left out of that one case.
    prompt = call.get("prompt") or PROMPTS.get(call.get("prompt_name"))
    if arch not in DECODER_ARCHS or "cls" not in pooling or include_prompt or not prompt:
        return TEXTS
    transformer = plain[0]
    n_prompt = transformer._get_prompt_length(prompt)
    return [t for t in TEXTS if len(transformer.tokenizer(prompt + t)["input_ids"]) > n_prompt]


STRUCTURES = list(itertools.product(ARCHS, POOLINGS, [True, False], [False, True], [False, True]))


@pytest.mark.parametrize(
    "arch,pooling,include_prompt,dense,normalize",
    STRUCTURES,
    ids=[
        f"{a}-{'+'.join(p) if isinstance(p, tuple) else p}-ip{int(i)}-d{int(d)}-n{int(n)}"
        for a, p, i, d, n in STRUCTURES
    ],
)
def test_encode_matches_plain_st(backbones, caplog, arch, pooling, include_prompt, dense, normalize):
    plain, fast = _pair(backbones[arch], pooling, include_prompt, dense, normalize)
    assert isinstance(fast.engine_for(None), Engine), fast.engine_for(None)
    for call in CALLS:
        texts = _texts_for(plain, arch, pooling, include_prompt, call)
        want = plain.encode(texts, **call)
        with caplog.at_level("WARNING", logger="st_backend"):
            got = fast.encode(texts, **call)
        assert_same_output(got, want, what=f"encode(**{call})", precision=call.get("precision", "float32"))
        if call.get("precision", "float32") != "float32":
            # Quantized: the float embeddings match plain ST's, and the output is exactly ST's
            # quantization of st_backend's own float embeddings.
            float_call = {k: v for k, v in call.items() if k not in ("precision", "convert_to_tensor")}
            fast_float = fast.encode(texts, **float_call)
            assert_same_output(fast_float, plain.encode(texts, **float_call), what=f"encode(**{float_call})")
            expected = quantize_embeddings(fast_float, precision=call["precision"])
            np.testing.assert_array_equal(np.asarray(got), expected)
        # A single string gives a single result (or the same error, e.g. int8 of one embedding), as in ST.
        try:
            want = plain.encode(texts[3], **call)
        except ValueError as exc:
            with pytest.raises(type(exc)):
                fast.encode(texts[3], **call)
        else:
            got = fast.encode(texts[3], **call)
            assert_same_output(got, want, f"single encode(**{call})", precision=call.get("precision", "float32"))
    # Only these calls may take ST's own path: output_value=None (ST's full per-input feature dicts) and,
    # for left-padding decoders, token_embeddings (ST keeps their batch-dependent pad rows).
    allowed = ["output_value=None"] + (["left-padding"] if arch in DECODER_ARCHS else [])
    reasons = [r.getMessage() for r in caplog.records if "own path" in r.getMessage()]
    assert all(any(a in r for a in allowed) for r in reasons), reasons


@pytest.mark.parametrize("arch", ARCHS)
def test_each_output_is_the_same_alone_and_inside_a_large_mixed_call(backbones, arch):
    """No input's embedding depends on what else is in the call or how the call was batched."""
    rng = np.random.default_rng(0)
    noise = [" ".join(rng.choice(WORDS, size=rng.integers(1, 40))) for _ in range(150)]
    mixed = TEXTS + noise
    order = rng.permutation(len(mixed))
    for pooling in ("mean", "cls", "lasttoken"):
        plain, fast = _pair(backbones[arch], pooling, True, False, False)
        default = st_backend.SentenceTransformer(modules=list(fast.children()), device="cpu", prompts=PROMPTS)
        alone = np.stack([fast.encode([t])[0] for t in TEXTS])
        for model in (fast, default):
            together = model.encode([mixed[i] for i in order], batch_size=7)
            rows = together[np.argsort(order)][: len(TEXTS)]
            assert_same_output(rows, alone, what=f"{arch} {pooling}: texts in a mixed call vs alone")
        assert_same_output(alone, plain.encode(TEXTS), what=f"{arch} {pooling}: alone vs plain ST")
