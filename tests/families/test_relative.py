"""Families with a relative-position bias inside their own attention (MPNet, DeBERTa-v2, the T5 encoder): they run
the grouped runner (engine/grouped.py) and equal plain ST; and that runner's bucketing and gather."""

from __future__ import annotations

import numpy as np
import pytest
import sentence_transformers
import torch
from compare import assert_rows_close
from family_check import TEXTS, check_cross_encoder, check_embedder
from tiny_models import MAX_LEN, build_st_dir, load_tokenizer

import st_backend
from st_backend.bench.factory import TOKENIZER_BUILDERS
from st_backend.engine.architectures import spec_for
from st_backend.engine.grouped import GroupedRunner, length_groups
from st_backend.engine.packing import pack

ARCHS = ("mpnet", "deberta-v2", "t5")
# (first token, last token, pad token, pad id, pair ids of "a" / "b" around their pieces)
SPECIALS = {
    "mpnet": ("<s>", "</s>", "<pad>", 1, ["<s>", "a", "</s>", "</s>", "b", "</s>"]),
    "deberta-v2": ("[CLS]", "[SEP]", "[PAD]", 0, ["[CLS]", "▁a", "[SEP]", "▁b", "[SEP]"]),
    "t5": (None, "</s>", "<pad>", 0, ["▁a", "</s>", "▁b", "</s>"]),
}


def _base_model(arch, root):
    return sentence_transformers.SentenceTransformer(str(build_st_dir(arch, root)), device="cpu")[0].model.eval()


# -- the tiny models ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_reloads_and_has_the_family_specials(arch, tiny_root):
    tok = load_tokenizer(arch, tiny_root)
    fresh = TOKENIZER_BUILDERS[arch]()
    texts = ["Hello world, an UNSEEN wörd 🙂 東京", "", "  spaces  "]
    assert tok(texts)["input_ids"] == fresh(texts)["input_ids"] and tok.get_vocab() == fresh.get_vocab()
    assert tok.model_max_length == MAX_LEN
    first, last, pad, pad_id, pair = SPECIALS[arch]
    tokens = tok.convert_ids_to_tokens(tok("hello world")["input_ids"])
    assert (tokens[0] == first if first else tokens[0] not in tok.all_special_tokens) and tokens[-1] == last
    assert (tok.pad_token, tok.pad_token_id) == (pad, pad_id)  # MPNet: its padding_idx is hardcoded 1
    assert tok.convert_ids_to_tokens(tok("a", "b")["input_ids"]) == pair
    if arch == "deberta-v2":
        assert tok("a", "b")["token_type_ids"] == [0, 0, 0, 1, 1]


def _bias_weight(model):
    if model.config.model_type == "mpnet":
        return model.encoder.relative_attention_bias.weight
    if model.config.model_type == "t5":
        return model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    return model.encoder.rel_embeddings.weight


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_configs_make_the_relative_bias_matter(arch, tiny_root):
    """Outputs change when the relative-position table is perturbed, so a runner that got it wrong would fail."""
    model = _base_model(arch, tiny_root)
    ids = torch.tensor(load_tokenizer(arch, tiny_root)(" ".join(TEXTS[4:6]))["input_ids"][:MAX_LEN])[None]
    with torch.no_grad():
        before = model(input_ids=ids).last_hidden_state
        weight = _bias_weight(model)
        saved = weight.clone()
        weight.copy_(torch.roll(saved, 1, dims=0))  # every relative distance gets its neighbour bucket's bias
        after = model(input_ids=ids).last_hidden_state
        weight.copy_(saved)
    assert ids.shape[1] > 40 and (before - after).abs().max() > 1e-2


# -- equal to plain ST ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_embedder(arch, tiny_root, caplog):
    check_embedder(arch, tiny_root, caplog)


@pytest.mark.parametrize(("arch", "num_labels"), [("deberta-v2", 1), ("deberta-v2", 3), ("mpnet", 1)])
def test_cross_encoder(arch, num_labels, tiny_root, caplog):
    check_cross_encoder(arch, tiny_root, caplog, num_labels=num_labels)


@pytest.mark.parametrize(("arch", "attention"), [("t5", "sdpa"), ("t5", "eager"), ("mpnet", "eager")])
def test_runs_the_users_attention_implementation(arch, attention, tiny_root):
    path = str(build_st_dir(arch, tiny_root))
    kwargs = {"model_kwargs": {"attn_implementation": attention}}
    plain = sentence_transformers.SentenceTransformer(path, device="cpu", **kwargs)
    fast = st_backend.SentenceTransformer(path, device="cpu", **kwargs)
    assert_rows_close(fast.encode(TEXTS), plain.encode(TEXTS))
    described = fast.engine_for().describe(torch.device("cpu"))
    assert described["attention_backend"] == f"grouped ({attention})" and not described["shared_prefixes"]


@pytest.mark.parametrize("arch", ARCHS)
def test_small_engine_batches(arch, tiny_root):
    """encode's batch_size does not change the engine's batches (its token budget does): a small budget splits the
    inputs over several batches, each bucketed on its own."""
    path = str(build_st_dir(arch, tiny_root))
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    fast = st_backend.SentenceTransformer(path, device="cpu", engine=st_backend.EngineConfig(max_batch_tokens=48))
    assert_rows_close(fast.encode(TEXTS * 2), plain.encode(TEXTS * 2))


def test_t5_encoder_decoder_runs_st_path(tiny_root):
    """Only T5's encoder is served: a full encoder-decoder config (T5ForSequenceClassification) has no spec."""
    config = _base_model("t5", tiny_root).config
    assert spec_for(config).runner == "grouped"
    full = type(config).from_dict({**config.to_dict(), "is_encoder_decoder": True})
    assert spec_for(full) is None


# -- the grouped runner ---------------------------------------------------------------------------------------


def test_length_groups_bound_padding_and_scores():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(1, 300, 200), [0, 0, 512, 1]])
    for share, min_pad, cap in [(1 / 8, 0, 1 << 62), (0.0, 0, 1 << 62), (1 / 8, 256, 1 << 62), (1 / 4, 0, 1 << 20)]:
        groups = length_groups(lengths, heads=4, pad_share=share, min_pad=min_pad, max_scores=cap)
        seen = np.concatenate(groups)
        assert sorted(seen.tolist()) == sorted(np.flatnonzero(lengths).tolist())  # every non-empty input once
        for group in groups:
            longest, n = lengths[group].max(), len(group)
            assert lengths[group[0]] == longest
            assert n * longest - lengths[group].sum() <= max(share * n * longest, min_pad)
            assert n == 1 or 4 * n * longest**2 <= cap
        if share == 0 and min_pad == 0:
            assert all(len(set(lengths[g])) == 1 for g in groups)  # exact-length groups
    assert length_groups(np.zeros(3, dtype=np.int64)) == []


@pytest.mark.parametrize("arch", ARCHS)
def test_grouped_forward_equals_each_input_alone(arch, tiny_root):
    """Several buckets, one input longer than all others, an empty one: each input's rows in packed order equal
    the model run on that input alone (no padding at all), with pair token types where the family takes them."""
    model = _base_model(arch, tiny_root)
    tok = load_tokenizer(arch, tiny_root)
    words = TEXTS[5].split()
    texts = [" ".join(words[:k]) for k in (3, 40, 9, 1, 10, 25, 11, 2, 4)] + ["", " ".join(words * 3)]
    encoded = [tok(t, words[0], truncation=True) for t in texts]
    ids = [np.asarray(e["input_ids"], dtype=np.int64) for e in encoded] + [np.zeros(0, dtype=np.int64)]
    types = [np.asarray(e.get("token_type_ids", np.zeros(len(e["input_ids"]))), dtype=np.int64) for e in encoded]
    types.append(np.zeros(0, dtype=np.int64))
    spec = spec_for(model.config)
    runner = GroupedRunner(model, spec, backend=None)
    order = np.random.default_rng(1).permutation(len(ids))  # the batch's order is not the length order
    batch = pack(ids, types if spec.token_type_ids else None, order)
    assert len(length_groups(batch.host_lengths)) >= 3
    with torch.no_grad():
        got = runner.forward(batch)
        assert got.shape == (sum(map(len, ids)), model.config.hidden_size)
        for k, i in enumerate(order):
            if not len(ids[i]):
                continue
            inputs = {"input_ids": torch.from_numpy(ids[i])[None]}
            if spec.token_type_ids:
                inputs["token_type_ids"] = torch.from_numpy(types[i])[None]
            want = model(**inputs).last_hidden_state[0]
            start = int(batch.cu_seqlens[k])
            assert_rows_close(got[start : start + len(ids[i])], want, what=f"input {i}")
