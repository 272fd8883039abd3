"""st_backend.CrossEncoder against plain ST's CrossEncoder on the same tiny random weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import sentence_transformers
import torch
from sentence_transformers.base.modules.transformer import Transformer
from sentence_transformers.cross_encoder.modules.logit_score import LogitScore
from tiny_models import ARCHS, DECODER_ARCHS, build_hf_dir

import st_backend
from st_backend.engine.engine import Engine, results

PAIRS = [
    ("what is a cat", "a cat is a small animal"),
    ("q", "d " * 100),  # truncated, longest-first, as ST does
    ("", ""),
    ("long query " * 40, "doc"),
    ("what is a cat", "a cat is a small animal"),  # a duplicate: ties keep input order in rank
    ("Ünïcödé 🙂", "東京 text"),
]
QWEN_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements of the Query. Answer yes or no."
    "<|im_end|>\n<|im_start|>user\n<Query>: {{ (messages | selectattr('role','eq','query') | first).content }}\n"
    "<Document>: {{ (messages | selectattr('role','eq','document') | first).content }}<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)
NEMOTRON_TEMPLATE = 'question:{{ messages[0]["content"] }} \n \n passage:{{ messages[1]["content"] }}'
MAX_LEN = 256  # decoders use rotary positions: the tiny models' 64 would cut every templated pair


def assert_close(got, want):
    assert type(got) is type(want)
    if isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_close(g, w)
        return
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            assert_close(got[key], want[key])
        return
    if isinstance(want, (np.ndarray, torch.Tensor)):
        assert tuple(got.shape) == tuple(want.shape) and got.dtype == want.dtype
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64), atol=1e-5)
        return
    if isinstance(want, float):
        assert abs(got - want) <= 1e-5
        return
    assert got == want


def load_pair(path, **kwargs):
    plain = sentence_transformers.CrossEncoder(str(path), device="cpu", **kwargs)
    fast = st_backend.CrossEncoder(str(path), device="cpu", **kwargs)
    assert isinstance(fast.engine(), Engine), fast.engine()
    return plain, fast


@pytest.mark.parametrize("num_labels", [1, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_sequence_classification_predict_and_rank(tiny_root, caplog, arch, num_labels):
    plain, fast = load_pair(build_hf_dir(arch, tiny_root, "seq-cls", num_labels=num_labels))
    assert fast.num_labels == plain.num_labels == num_labels
    calls = [{}, {"convert_to_tensor": True}, {"batch_size": 2, "prompt": "Instruct: rank it. "}]
    calls += [{"activation_fn": torch.nn.Identity()}, {"convert_to_numpy": False}]
    if num_labels > 1:
        calls.append({"apply_softmax": True})
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        for call in calls:
            assert_close(fast.predict(PAIRS, **call), plain.predict(PAIRS, **call))
        assert_close(fast.predict(PAIRS[0]), plain.predict(PAIRS[0]))  # one pair -> one score
        if num_labels == 1:
            docs = [d for _, d in PAIRS]
            for kwargs in ({}, {"top_k": 3, "return_documents": True}):
                assert_close(fast.rank("what is a cat", docs, **kwargs), plain.rank("what is a cat", docs, **kwargs))
    assert not [r for r in caplog.records if "own path" in r.getMessage()]


def causal_pair(tiny_root, arch, template):
    path = str(build_hf_dir(arch, tiny_root, "causal-lm"))
    transformer = Transformer(path, transformer_task="text-generation", processor_kwargs={"chat_template": template})
    transformer.max_seq_length = MAX_LEN
    vocab = transformer.tokenizer.get_vocab()
    true_id, false_id = vocab[sorted(vocab)[-1]], vocab[sorted(vocab)[-2]]  # any two ordinary tokens
    modules = [transformer, LogitScore(true_id, false_id)]
    plain = sentence_transformers.CrossEncoder(modules=modules, device="cpu")
    fast = st_backend.CrossEncoder(modules=modules, device="cpu")
    assert isinstance(fast.engine(), Engine) and fast.engine().plan.description["causal"]
    return plain, fast


@pytest.mark.parametrize("template", [QWEN_TEMPLATE, NEMOTRON_TEMPLATE], ids=["qwen3-reranker", "nemotron"])
@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_causal_lm_yes_no_reranker_with_template(tiny_root, arch, template):
    plain, fast = causal_pair(tiny_root, arch, template)
    pairs = [p for p in PAIRS if len(p[0]) < 100 and len(p[1]) < 100]  # all fit: no truncation on either side
    prompt = {"prompt": "Find the passage that answers the question."}
    calls = []
    for call in ({}, prompt, {"batch_size": 1}):
        if call is prompt and template == NEMOTRON_TEMPLATE:
            # messages[0] / messages[1] read the prompt's system message and the query: the document never
            # reaches the render, so ST scores every document alike. st_backend refuses, naming the fix.
            with pytest.raises(ValueError, match="(?s)renders without the document.*selectattr"):
                fast.predict(pairs, **call)
            continue
        with results() as done:
            assert_close(fast.predict(pairs, **call), plain.predict(pairs, **call))
        calls += done
    docs = [d for _, d in pairs]
    assert_close(fast.rank("what is a cat", docs), plain.rank("what is a cat", docs))
    assert calls and sum(c.truncated for c in calls) == 0


def test_lm_head_runs_only_at_last_tokens(tiny_root, monkeypatch):
    _, fast = causal_pair(tiny_root, "qwen3", NEMOTRON_TEMPLATE)
    rows = []
    head = fast[0].auto_model.lm_head
    monkeypatch.setattr(head, "forward", lambda x, f=head.forward: rows.append(x.shape[0]) or f(x))
    fast.predict(PAIRS[:3], batch_size=8)
    assert rows == [3]


def test_template_given_three_ways_gives_identical_scores(tiny_root, tmp_path):
    import shutil

    base = build_hf_dir("qwen3", tiny_root, "seq-cls")
    beside = tmp_path / "beside"
    shutil.copytree(base, beside)
    (beside / "chat_template.jinja").write_text(NEMOTRON_TEMPLATE, encoding="utf-8")
    as_file = tmp_path / "template.jinja"
    as_file.write_text(NEMOTRON_TEMPLATE, encoding="utf-8")
    models = [
        st_backend.CrossEncoder(str(base), device="cpu", chat_template=NEMOTRON_TEMPLATE),
        st_backend.CrossEncoder(str(base), device="cpu", chat_template=str(as_file)),
        st_backend.CrossEncoder(str(beside), device="cpu"),
    ]
    scores = [m.predict(PAIRS[:3]) for m in models]
    for m in models:
        assert m.engine().template.template == NEMOTRON_TEMPLATE
    np.testing.assert_array_equal(scores[0], scores[1])
    np.testing.assert_array_equal(scores[0], scores[2])
    # and the load-time argument overrides a template beside the model
    other = st_backend.CrossEncoder(
        str(beside), device="cpu", chat_template="Q: {{ messages[0]['content'] }} D: {{ messages[1]['content'] }}"
    )
    assert other.engine().template.template.startswith("Q: ")
    # plain ST with the same template file agrees
    plain = sentence_transformers.CrossEncoder(str(beside), device="cpu")
    assert_close(scores[2], plain.predict(PAIRS[:3]))


@pytest.mark.parametrize(
    "template,missing",
    [
        ("question: {{ messages[0]['content'] }}", "document"),
        ("passage: {{ messages[1]['content'] }}", "query"),
        ("{% if true %}a fixed string{% endif %}", "the query (role 'query') and the document"),
    ],
)
def test_broken_template_fails_at_load(tiny_root, template, missing):
    path = build_hf_dir("qwen3", tiny_root, "seq-cls")
    with pytest.raises(ValueError, match="renders without") as err:
        st_backend.CrossEncoder(str(path), device="cpu", chat_template=template)
    assert missing in str(err.value) and "chat_template=" in str(err.value)


def test_chat_template_that_is_neither_file_nor_template(tiny_root):
    with pytest.raises(ValueError, match="neither a readable .jinja file nor a Jinja template"):
        st_backend.CrossEncoder(str(build_hf_dir("bert", tiny_root, "seq-cls")), chat_template="no-such-file.jinja")


def conversation(query: str, document: str) -> list[dict]:
    """The conversation ST builds for a text pair with these tiny models' flat message format."""
    return [{"role": "query", "content": query}, {"role": "document", "content": document}]


def contents(conversation: list[dict]) -> tuple[str, ...]:
    return tuple(m["content"] for m in conversation)


def single_token_words(tokenizer, count):
    words = []
    for word in sorted(tokenizer.get_vocab()):
        w = word.lstrip("Ġ▁")
        if w.isalpha() and len(w) > 2 and len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1:
            words.append(w)
    return words[:count]


@pytest.mark.parametrize(
    "template,max_len", [(QWEN_TEMPLATE, 160), (NEMOTRON_TEMPLATE, 64)], ids=["qwen3-reranker", "nemotron"]
)
def test_template_aware_truncation(tiny_root, template, max_len):
    _, fast = causal_pair(tiny_root, "qwen3", template)
    engine, tok = fast.engine(), fast[0].tokenizer
    fast.max_seq_length = max_len
    words = single_token_words(tok, 40) * 50
    long_doc = " ".join(words)  # well over 10x max_length
    query = "what is a cat"
    assert len(tok(long_doc)["input_ids"]) > 10 * max_len

    ids = engine.tokenize([conversation(query, long_doc)], None).ids[0].tolist()
    assert len(ids) <= max_len
    # The sequence keeps the template's prefix and ends with its suffix.
    render = lambda q, d: tok.apply_chat_template(  # noqa: E731
        [{"role": "query", "content": q}, {"role": "document", "content": d}], tokenize=False, chat_template=template
    )
    skeleton = render("QUERYMARK", "DOCMARK")
    head, tail = skeleton.split("QUERYMARK")[0], skeleton.split("DOCMARK")[1]
    text = tok.decode(ids)
    assert text.startswith(head + query) and text.endswith(tail)
    assert len(tok(render(query, ""), add_special_tokens=False)["input_ids"]) < len(ids)

    # By hand: the most words of the document whose render fits, found without st_backend's code.
    fits = [
        len(tok(render(query, " ".join(words[:n])), add_special_tokens=False)["input_ids"]) <= max_len
        for n in range(300)
    ]
    hand_doc = " ".join(words[: max(n for n, ok in enumerate(fits) if ok)])
    assert ids == tok(render(query, hand_doc), add_special_tokens=False)["input_ids"]
    np.testing.assert_allclose(fast.predict([(query, long_doc)]), fast.predict([(query, hand_doc)]), atol=1e-6)
    assert contents(engine.template.fit(conversation(query, long_doc), False, max_len))[0] == query  # never cut here

    # A query that alone fills the room is cut to half of it first: the document is not emptied.
    q_cut, d_cut = contents(engine.template.fit(conversation(long_doc, "short doc"), False, max_len))
    assert d_cut == "short doc" and long_doc.startswith(q_cut) and 0 < len(q_cut) < len(long_doc)
    room = max_len - len(tok(render("", ""), add_special_tokens=False)["input_ids"])
    assert len(tok(render(q_cut, ""), add_special_tokens=False)["input_ids"]) <= max_len - room // 2
    q_doc, d_doc = contents(engine.template.fit(conversation(long_doc, long_doc), False, max_len))
    assert long_doc.startswith(q_doc) and long_doc.startswith(d_doc) and len(d_doc) > 0


def test_text_merging_into_template_boundary(tiny_root):
    # No space between the template text and the content: tokens merge across the boundary. The fed ids
    # are still exactly the tokenization of the render of the cut texts.
    template = "passage:{{ messages[1]['content'] }}question:{{ messages[0]['content'] }}Answer:"
    _, fast = causal_pair(tiny_root, "qwen3", template)
    fast.max_seq_length = 40
    tok, engine = fast[0].tokenizer, fast.engine()
    doc = "catsatonthemat " * 50
    fitted = engine.template.fit(conversation("whatisit", doc), False, 40)
    q_cut, d_cut = contents(fitted)
    ids = engine.tokenize([conversation("whatisit", doc)], None).ids[0].tolist()
    rendered = engine.template.render(fitted)
    assert q_cut == "whatisit" and rendered.endswith("question:whatisitAnswer:")
    assert ids == tok(rendered, add_special_tokens=False)["input_ids"] and len(ids) <= 40


@pytest.mark.parametrize(
    "bad,error,match",
    [
        ([("a", "b", "c")], ValueError, r"inputs\[0\] has 3 items"),
        ([("a", 3)], TypeError, r"inputs\[0\]\[1\] is int"),
    ],
)
def test_bad_pairs_name_their_index(tiny_root, bad, error, match):
    _, fast = load_pair(build_hf_dir("bert", tiny_root, "seq-cls"))
    with pytest.raises(error, match=match):
        fast.predict(bad)


def test_rank_with_no_documents(tiny_root):
    plain, fast = load_pair(build_hf_dir("bert", tiny_root, "seq-cls"))
    assert fast.rank("query", []) == [] == plain.rank("query", [])
    assert_close(fast.predict([]), plain.predict([]))
