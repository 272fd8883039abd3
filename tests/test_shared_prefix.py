"""A causal reranker's template head runs once per call (prefix keys/values shared by every pair): scores equal
plain ST's and the same engine's without sharing; attention with a key prefix equals attention over the whole
sequences."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from test_cross_encoder import NEMOTRON_TEMPLATE, PAIRS, QWEN_TEMPLATE, causal_pair
from tiny_models import DECODER_ARCHS

import st_backend
from st_backend.engine import prefix as prefix_module
from st_backend.engine.attention import PackedAttention, make_backend
from st_backend.engine.config import EngineConfig
from st_backend.engine.engine import results
from st_backend.engine.packing import pack
from st_backend.engine.prefix import MIN_PREFIX_TOKENS as MIN_TOKENS


def _spy_prefix_runs(monkeypatch) -> list[int]:
    """Lengths of the prefixes whose keys/values were computed."""
    runs: list[int] = []
    original = prefix_module.PrefixCache._compute

    def compute(self, ids, device):
        runs.append(len(ids))
        return original(self, ids, device)

    monkeypatch.setattr(prefix_module.PrefixCache, "_compute", compute)
    return runs


@pytest.mark.parametrize("template", [QWEN_TEMPLATE, NEMOTRON_TEMPLATE], ids=["qwen3-reranker", "nemotron"])
@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_shared_template_head_scores_equal_plain_st(tiny_root, monkeypatch, arch, template):
    runs = _spy_prefix_runs(monkeypatch)
    plain, fast = causal_pair(tiny_root, arch, template)
    pairs = [p for p in PAIRS if len(p[0]) < 100 and len(p[1]) < 100] * 3
    # A position-based template (nemotron's) loses the document under a prompt: refused (test_cross_encoder.py).
    prompts = ["Find the passage that answers the question."] if template == QWEN_TEMPLATE else []
    for call in ({}, *({"prompt": p} for p in prompts), {"batch_size": 2}):
        np.testing.assert_allclose(fast.predict(pairs, **call), plain.predict(pairs, **call), atol=1e-5)
    head = fast.engine().template.shared_prefix(None)
    with_prompt = [fast.engine().template.shared_prefix(p) for p in prompts]
    if template == QWEN_TEMPLATE:
        assert head is not None and len(head) >= 20  # the system message and "<Query>:"
    # Once per call (batch_size=2 makes many batches), never per batch or per pair; what the rows share (their
    # common prefix) is at least the probed head, which leaves out its last token:
    calls = (head, *with_prompt, head)
    assert len(runs) <= len(calls), runs
    if template == QWEN_TEMPLATE:
        assert len(runs) == len(calls) and all(r >= len(h) for r, h in zip(runs, calls)), (runs, calls)
    docs = [d for _, d in pairs]
    np.testing.assert_allclose(
        [r["score"] for r in fast.rank("what is a cat", docs)],
        [r["score"] for r in plain.rank("what is a cat", docs)],
        atol=1e-5,
    )


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_sharing_on_and_off_agree_with_truncation(tiny_root, arch):
    _, fast = causal_pair(tiny_root, arch, QWEN_TEMPLATE)
    off = st_backend.CrossEncoder(modules=list(fast.children()), device="cpu", engine=EngineConfig(shared_prefix=False))
    pairs = [*PAIRS, ("q", "word " * 600), ("a query", "x")]  # one document far past max_length
    shared, unshared = fast.predict(pairs), off.predict(pairs)
    np.testing.assert_allclose(shared, unshared, atol=1e-5)
    assert off.engine().shared_prefix(None, 2, torch.device("cpu")) is None
    with results() as calls:
        fast.predict(pairs)
    assert sum(c.truncated for c in calls) >= 1


def test_encoders_and_classifier_heads_share_nothing(tiny_root):
    from test_cross_encoder import load_pair
    from tiny_models import build_hf_dir

    _, fast = load_pair(build_hf_dir("bert", tiny_root, "seq-cls"))
    assert fast.engine().shared_prefix(None, 2, torch.device("cpu")) is None
    # A decoder classifier reads the last non-pad token, which could lie in the head: it never shares.
    fast = st_backend.CrossEncoder(str(build_hf_dir("qwen3", tiny_root, "seq-cls")), chat_template=QWEN_TEMPLATE)
    assert fast.engine().template is not None
    assert fast.engine().shared_prefix(None, 2, torch.device("cpu")) is None


def test_weights_changed_between_calls_are_used(tiny_root):
    plain, fast = causal_pair(tiny_root, "qwen3", QWEN_TEMPLATE)  # the two share their modules
    pairs = [p for p in PAIRS if len(p[0]) < 100 and len(p[1]) < 100]
    np.testing.assert_allclose(fast.predict(pairs), plain.predict(pairs), atol=1e-5)
    with torch.no_grad():
        for param in fast.parameters():
            param.mul_(1.5)
    np.testing.assert_allclose(fast.predict(pairs), plain.predict(pairs), atol=1e-5)


def test_probe_turns_sharing_off_for_a_kernel_aligned_top_left():
    from st_backend.engine.attention import _check_key_prefix
    from st_backend.engine.attention.reference import ReferenceBackend

    class TopLeft(ReferenceBackend):
        name = "top-left"

        def attend(self, q, k, v, packed, *, scale, causal, window):
            # Each query attends its own sequence's keys with the causal mask aligned to the top left.
            cu_k = packed.keys[0].long()
            out = []
            for i in range(len(packed.cu_seqlens) - 1):
                qs = q[packed.cu_seqlens[i] : packed.cu_seqlens[i + 1]]
                ks, vs = k[cu_k[i] : cu_k[i + 1]], v[cu_k[i] : cu_k[i + 1]]
                one = PackedAttention(torch.tensor([0, len(qs)], dtype=torch.int32), len(qs))
                trimmed = (ks[: len(qs)], vs[: len(qs)])
                out.append(super().attend(qs, *trimmed, one, scale=scale, causal=causal, window=window))
            return torch.cat(out)

    assert _check_key_prefix(ReferenceBackend(), torch.device("cpu"), torch.float32) is None
    assert _check_key_prefix(ReferenceBackend(), torch.device("cpu"), torch.float32, window=2) is None
    assert "differs from the reference" in _check_key_prefix(TopLeft(), torch.device("cpu"), torch.float32)


def _full_and_split(causal: bool, window: int | None, backend: str = "reference", device="cpu", dtype=torch.float32):
    """Attention over whole sequences (reference, float64), and over their tails with the shared head's keys put
    in front (``backend`` on ``device``); returns both on the CPU, and the split batch."""
    gen = torch.Generator().manual_seed(0)
    head = np.array([5, 6, 7, 8, 9])
    tails = [np.array([1, 2, 3]), np.array([4]), np.array([], dtype=np.int64), np.array([2, 2, 2, 2, 2, 2])]
    seqs = [np.concatenate([head, t]) for t in tails] + [np.array([1, 5, 6])]  # the last does not share
    full = pack(seqs, None, np.arange(len(seqs)))
    split = pack(seqs, None, np.arange(len(seqs)), prefix=(head,))
    assert split.kv_index is not None and split.num_tokens == full.num_tokens - 3 * len(head)
    heads, kv_heads, dim = 4, 2, 8
    q = torch.randn(full.num_tokens, heads, dim, generator=gen)
    k = torch.randn(full.num_tokens, kv_heads, dim, generator=gen)
    v = torch.randn(full.num_tokens, kv_heads, dim, generator=gen)
    shares = [len(t) > 0 for t in tails] + [False]  # a render that is only the head keeps it
    starts = full.cu_seqlens[:-1].long().tolist()
    for start, shared in zip(starts, shares):
        if shared:  # the head's keys/values are the same in every sequence, as the model computes them
            k[start : start + len(head)], v[start : start + len(head)] = k[: len(head)], v[: len(head)]
    ref = make_backend("reference")
    whole = PackedAttention(full.cu_seqlens, full.max_len)
    want = ref.attend(q.double(), k.double(), v.double(), whole, scale=0.3, causal=causal, window=window)
    # Rows of ``full`` that ``split`` keeps: every token after the head of a sharing sequence, all of the others.
    ends = full.cu_seqlens[1:].tolist()
    keep = torch.cat([torch.arange(s + len(head) * c, e) for s, e, c in zip(starts, ends, shares)])
    prefix_k, prefix_v = k[: len(head)], v[: len(head)]  # the first sequence's head rows
    keys = torch.cat([prefix_k, k[keep]])[split.kv_index]
    values = torch.cat([prefix_v, v[keep]])[split.kv_index]
    packed = PackedAttention(split.cu_seqlens.to(device), split.max_len, split.cu_seqlens_k.to(device), split.max_len_k)
    inputs = (x.to(device, dtype) for x in (q[keep], keys, values))
    got = make_backend(backend).attend(*inputs, packed, scale=0.3, causal=causal, window=window)
    return got.double().cpu(), want[keep], split


@pytest.mark.parametrize("window", [None, 2])
def test_causal_attention_with_a_key_prefix_equals_whole_sequences(window):
    got, want, split = _full_and_split(causal=True, window=window)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert split.position_ids[:3].tolist() == [5, 6, 7]  # positions continue after the head


def test_pack_with_prefix_lays_out_keys():
    ids = [np.array([1, 2, 3, 9, 9]), np.array([1, 2, 3]), np.array([5, 1, 2, 3, 7]), np.array([1, 2, 3, 4])]
    batch = pack(ids, None, np.arange(4), prefix=(np.array([1, 2, 3]),))
    assert batch.input_ids.tolist() == [9, 9, 1, 2, 3, 5, 1, 2, 3, 7, 4]  # a render that is only the head keeps it
    assert batch.position_ids.tolist() == [3, 4, 0, 1, 2, 0, 1, 2, 3, 4, 3]
    assert batch.cu_seqlens_k.tolist() == [0, 5, 8, 13, 17] and batch.max_len_k == 5
    assert batch.kv_index.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 1, 2, 13]
    assert pack(ids, None, np.arange(4), prefix=(np.array([8, 8]),)).kv_index is None  # nobody shares: plain batch


def test_pack_with_two_prefixes_gives_each_input_its_longest():
    """Groups of a call: each input takes the longest prefix it starts with; keys come from [prefixes; rows]."""
    ids = [np.array([1, 2, 3, 4, 9]), np.array([1, 2, 5, 6]), np.array([1, 2, 3, 4, 8, 8]), np.array([7, 7])]
    batch = pack(ids, None, np.arange(4), prefix=(np.array([1, 2, 3, 4]), np.array([1, 2])))
    assert [p.tolist() for p in batch.prefix] == [[1, 2, 3, 4], [1, 2]] and batch.shared_tokens == 4 + 2 + 4
    assert batch.input_ids.tolist() == [9, 5, 6, 8, 8, 7, 7]
    assert batch.position_ids.tolist() == [4, 2, 3, 4, 5, 0, 1]
    # keys: [1 2 3 4 | 1 2] (rows 0-5) then the batch's own rows from 6 on
    assert batch.kv_index.tolist() == [0, 1, 2, 3, 6, 4, 5, 7, 8, 0, 1, 2, 3, 9, 10, 11, 12]


PROMPT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: "


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_last_token_embedder_shares_its_prompt(tiny_root, monkeypatch, arch):
    import sentence_transformers
    from compare import assert_rows_close
    from test_sentence_transformer import TEXTS
    from tiny_models import build_st_dir

    runs = _spy_prefix_runs(monkeypatch)
    path = str(build_st_dir(arch, tiny_root))
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    fast = st_backend.SentenceTransformer(path, device="cpu")
    texts = [t for t in TEXTS if t] * 2
    for kwargs in ({"prompt": PROMPT}, {"prompt": PROMPT, "batch_size": 3}, {}):
        assert_rows_close(fast.encode(texts, **kwargs), plain.encode(texts, **kwargs))
    assert len(runs) == 2 and runs[0] >= MIN_TOKENS  # once per call with the prompt; no prompt, nothing shared
    tokens = fast.encode(texts[:4], prompt=PROMPT, output_value="token_embeddings")  # every token: no sharing
    want = plain.encode(texts[:4], prompt=PROMPT, output_value="token_embeddings")
    for got_row, want_row in zip(tokens, want):
        assert_rows_close(got_row, want_row)


def test_instruction_template_embedder_shares_its_head(tiny_root, monkeypatch):
    import sentence_transformers
    from compare import assert_rows_close
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from test_sentence_transformer import INSTRUCT_TEMPLATE
    from tiny_models import build_hf_dir

    runs = _spy_prefix_runs(monkeypatch)
    backbone = Transformer(str(build_hf_dir("qwen3", tiny_root)), processor_kwargs={"chat_template": INSTRUCT_TEMPLATE})
    modules = [backbone, Pooling(backbone.get_embedding_dimension(), "lasttoken")]
    plain = sentence_transformers.SentenceTransformer(modules=modules, device="cpu")
    fast = st_backend.SentenceTransformer(modules=modules, device="cpu")
    texts = ["what is a cat", "short one", "a longer query about the weather in town"] * 3
    prompt = "Given a question, retrieve passages that answer it"
    assert_rows_close(fast.encode(texts, prompt=prompt), plain.encode(texts, prompt=prompt))
    assert len(runs) == 1


WORDS = "the a cat dog man woman plays runs guitar street city river quickly slowly red green blue house".split()


def _docs(n: int) -> list[str]:
    """Documents whose first words differ from their neighbours' (so what the rows share ends at the document)."""
    return [" ".join([f"{i}"] + [WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + i % 17)]) for i in range(n)]


def _scores(results_list) -> list[float]:
    return [r["score"] for r in sorted(results_list, key=lambda r: r["corpus_id"])]


def _plain_rows(plain, pairs: list) -> list[list[int]]:
    """Each pair's token ids as plain ST renders and tokenizes it (none of these pairs is cut at max_seq_length):
    the expected counts come from here, not from the code under test."""
    features = plain.preprocess(pairs)
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(features["input_ids"], features["attention_mask"])]
    assert max(map(len, rows)) < plain.max_seq_length
    return rows


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_rank_shares_the_query_once_per_call(tiny_root, arch):
    """rank(query, 300 documents): every pair shares the template's head, the query and what comes before the
    document; that part runs through the layers once, and the scores equal plain ST's."""
    plain, fast = causal_pair(tiny_root, arch, QWEN_TEMPLATE)
    query = "what is the best way to keep a small cat happy at home in the city"
    docs = _docs(300)
    with results() as calls:
        got = fast.rank(query, docs)
    want = plain.rank(query, docs)
    np.testing.assert_allclose(_scores(got), _scores(want), atol=1e-5)
    assert [r["corpus_id"] for r in got[:10]] == [r["corpus_id"] for r in want[:10]]
    rows = _plain_rows(plain, [(query, d) for d in docs])
    shared = os.path.commonprefix(rows)
    head = fast.engine().template.shared_prefix(None)
    assert len(shared) > len(head) + 5  # the query is part of what runs once
    assert sum(c.row_tokens for c in calls) == sum(map(len, rows))
    assert sum(c.forward_tokens for c in calls) == sum(map(len, rows)) - (len(rows) - 1) * len(shared)


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_interleaved_queries_and_edge_cases_equal_plain_st(tiny_root, arch):
    """Ten queries interleaved in one predict (they share the template's head only); queries that are prefixes of
    one another; a query whose last characters run into the document's; a query longer than max_length; an empty
    document: scores equal plain ST's."""
    plain, fast = causal_pair(tiny_root, arch, QWEN_TEMPLATE)
    queries = [f"query number {i} about {WORDS[i]}" for i in range(10)]
    docs = _docs(40)
    interleaved = [(queries[i % 10], d) for i, d in enumerate(docs)]
    np.testing.assert_allclose(fast.predict(interleaved), plain.predict(interleaved), atol=1e-5)
    nested = [("what is a cat", d) for d in docs[:5]] + [("what is a cat food", d) for d in docs[:5]]
    np.testing.assert_allclose(fast.predict(nested), plain.predict(nested), atol=1e-5)
    for query in ("what is a cat", "what is a cat food", "what is a ca"):
        for documents in (docs[:20], ["ts and dogs", "tsup", ""] + docs[:5]):
            np.testing.assert_allclose(
                _scores(fast.rank(query, documents)), _scores(plain.rank(query, documents)), atol=1e-5
            )
    # Past max_length the documented template-aware cut applies (plain ST cuts the rendered sequence instead):
    # sharing changes nothing against the same engine without it.
    off = st_backend.CrossEncoder(modules=list(fast.children()), device="cpu", engine=EngineConfig(shared_prefix=False))
    long = "long query " * 40
    np.testing.assert_allclose(_scores(fast.rank(long, docs[:20])), _scores(off.rank(long, docs[:20])), atol=1e-5)


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_interleaved_queries_share_one_prefix_each(tiny_root, arch):
    """predict on pairs of 10 queries, interleaved: each query's rows run its head + query once (one prefix per
    group of rows that share one), and the scores equal plain ST's."""
    plain, fast = causal_pair(tiny_root, arch, QWEN_TEMPLATE)
    queries = [f"question {i}: how does the {WORDS[i]} {WORDS[i + 3]} work in the {WORDS[i + 5]}" for i in range(10)]
    docs = _docs(120)
    pairs = [(queries[i % 10], d) for i, d in enumerate(docs)]
    with results() as calls:
        got = fast.predict(pairs)
    np.testing.assert_allclose(got, plain.predict(pairs), atol=1e-5)
    rows = _plain_rows(plain, pairs)
    total, saved = sum(map(len, rows)), 0
    for q in range(10):
        group = rows[q::10]
        saved += (len(group) - 1) * len(os.path.commonprefix(group))
    assert sum(c.row_tokens for c in calls) == total
    assert sum(c.forward_tokens for c in calls) == total - saved
