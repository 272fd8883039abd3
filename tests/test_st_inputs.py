"""Inputs ST 6.2 accepts give ST's results: structured message content, templates changed after load,
conversations, dicts, single texts and mixed lists for classifiers, (text, dict) pairs, score templates declared
in the model's ST config, generative templates, and templates longer than max_seq_length."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import sentence_transformers
from compare import assert_rows_close
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling
from test_cross_encoder import PAIRS, QWEN_TEMPLATE, causal_pair
from tiny_models import build_hf_dir, build_st_dir

import st_backend

TEXTS = ["what is a cat", "", "a cat is a small animal that purrs", "東京 🙂"]
STRUCTURED_EMBED = "{% for m in messages %}<{{ m.role }}> {{ m.content[0].text }}\n{% endfor %}"
# What ST's own error text suggests for a cross-encoder with structured content.
STRUCTURED_SCORE = (
    '<Query>: {{ (messages | selectattr("role", "eq", "query") | first).content[0].text }}\n'
    '<Document>: {{ (messages | selectattr("role", "eq", "document") | first).content[0].text }}\n'
)
FLAT_SCORE = STRUCTURED_SCORE.replace(".content[0].text", ".content")
# Mentions ".type" (so ST renders structured content) but prints each content as is.
TYPE_MENTION = "{% for m in messages %}{{ m.role }}: {{ m.content }}{% if m.type %}!{% endif %}\n{% endfor %}"
ROLES = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def embed_pair(tiny_root, arch, template, pooling="mean"):
    backbone = Transformer(str(build_hf_dir(arch, tiny_root)), processor_kwargs={"chat_template": template})
    modules = [backbone, Pooling(backbone.get_embedding_dimension(), pooling)]
    plain = sentence_transformers.SentenceTransformer(modules=modules, device="cpu")
    fast = st_backend.SentenceTransformer(modules=modules, device="cpu")
    assert not isinstance(fast.engine_for(None), str), fast.engine_for(None)
    return plain, fast


def score_pair(tiny_root, template, arch="qwen3"):
    path = str(build_hf_dir(arch, tiny_root, "seq-cls"))
    plain = sentence_transformers.CrossEncoder(path, device="cpu", processor_kwargs={"chat_template": template})
    fast = st_backend.CrossEncoder(path, device="cpu", chat_template=template)
    assert not isinstance(fast.engine(), str), fast.engine()
    return plain, fast


@pytest.mark.parametrize("arch", ["bert", "qwen3"])
def test_structured_content_embedder(tiny_root, arch):
    plain, fast = embed_pair(tiny_root, arch, STRUCTURED_EMBED)
    assert fast[0].input_formatter.message_format == "structured"
    got, want = fast.encode(TEXTS), plain.encode(TEXTS)
    assert_rows_close(got, want)
    assert np.abs(got[0] - got[2]).max() > 1e-3  # each text its own vector
    assert_rows_close(fast.encode(TEXTS, prompt="Represent it"), plain.encode(TEXTS, prompt="Represent it"))


@pytest.mark.parametrize("template", [STRUCTURED_SCORE, TYPE_MENTION], ids=["content[0].text", ".type"])
def test_structured_content_cross_encoder(tiny_root, template):
    plain, fast = score_pair(tiny_root, template)
    pairs = [p for p in PAIRS if len(p[0]) < 100]
    np.testing.assert_allclose(fast.predict(pairs), plain.predict(pairs), atol=1e-5)


def test_template_changed_after_load_is_used(tiny_root):
    plain, fast = score_pair(tiny_root, FLAT_SCORE)
    pairs = [p for p in PAIRS if len(p[0]) < 100]
    before = fast.predict(pairs)
    for model in (plain, fast):
        model[0].processor.chat_template = FLAT_SCORE.replace("<Query>", "Question")
    after = fast.predict(pairs)
    np.testing.assert_allclose(after, plain.predict(pairs), atol=1e-5)
    assert np.abs(after - before).max() > 1e-4
    for model in (plain, fast):  # a broken template is refused at the call, as ST refuses it
        model[0].processor.chat_template = "only {{ messages[0]['content'] }}"
    with pytest.raises(ValueError, match="renders without"):
        fast.predict(pairs)


def test_conversations_and_dicts_for_a_template_embedder(tiny_root):
    plain, fast = embed_pair(tiny_root, "qwen3", ROLES, pooling="lasttoken")
    conversations = [
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        {"role": "user", "content": "one message"},
    ]
    texts = [{"text": "a dict"}, "a text"]
    for inputs in (conversations, texts):
        assert_rows_close(fast.encode(inputs), plain.encode(inputs))
        assert_rows_close(fast.encode(inputs, prompt="Be brief"), plain.encode(inputs, prompt="Be brief"))
    # ST 6.2 nests each conversation inside a "user" message when a call mixes them with texts, so a row would
    # depend on what else is in the call: refused, naming the fix.
    with pytest.raises(ValueError, match="separate calls"):
        fast.encode(conversations + texts)


def test_dict_input_for_a_text_embedder(tiny_root):
    path = str(build_st_dir("bert", tiny_root))
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    fast = st_backend.SentenceTransformer(path, device="cpu")
    assert_rows_close(fast.encode({"text": "hello"})[None], plain.encode({"text": "hello"})[None])
    assert_rows_close(fast.encode([{"text": "hello"}, "x"]), plain.encode([{"text": "hello"}, "x"]))
    mixed = [("a question", "an answer"), "a text", ["x", "y " * 50]]
    assert_rows_close(fast.encode(mixed), plain.encode(mixed))


@pytest.mark.parametrize("arch", ["bert", "qwen3"])
def test_classifier_takes_single_texts_and_mixed_lists(tiny_root, arch):
    path = str(build_hf_dir(arch, tiny_root, "seq-cls"))
    plain = sentence_transformers.CrossEncoder(path, device="cpu")
    fast = st_backend.CrossEncoder(path, device="cpu")
    np.testing.assert_allclose(fast.predict("one text"), plain.predict("one text"), atol=1e-5)
    mixed = [("a", "b"), "c", ["what is a cat", "a cat is an animal " * 20], "d " * 90]
    np.testing.assert_allclose(fast.predict(mixed), plain.predict(mixed), atol=1e-5)
    np.testing.assert_allclose(fast.predict(mixed, prompt="Rate: "), plain.predict(mixed, prompt="Rate: "), atol=1e-5)


def test_text_dict_pairs_for_a_template_reranker(tiny_root):
    plain, fast = causal_pair(tiny_root, "qwen3", QWEN_TEMPLATE)
    inputs = [("what is a cat", {"text": "a small animal"}), ("q", "d"), ["a list pair", "of two texts"]]
    np.testing.assert_allclose(fast.predict(inputs), plain.predict(inputs), atol=1e-5)


def test_score_template_declared_in_the_st_config(tiny_root, tmp_path):
    path = tmp_path / "reranker"
    shutil.copytree(build_hf_dir("qwen3", tiny_root, "seq-cls"), path)
    (path / "score.jinja").write_text(QWEN_TEMPLATE, encoding="utf-8")
    (path / "config_sentence_transformers.json").write_text(json.dumps({"score_template": "score.jinja"}))
    fast = st_backend.CrossEncoder(str(path), device="cpu")
    assert fast.engine().template.template == QWEN_TEMPLATE
    plain = sentence_transformers.CrossEncoder(
        str(path), device="cpu", processor_kwargs={"chat_template": QWEN_TEMPLATE}
    )
    pairs = [p for p in PAIRS if len(p[0]) < 100]
    np.testing.assert_allclose(fast.predict(pairs), plain.predict(pairs), atol=1e-5)
    given = st_backend.CrossEncoder(str(path), device="cpu", chat_template=STRUCTURED_SCORE)
    assert given.engine().template.template == STRUCTURED_SCORE  # the load argument wins


def test_generative_template_is_noted_once_and_can_be_turned_off(tiny_root, tmp_path, caplog):
    path = tmp_path / "inherited"
    shutil.copytree(build_hf_dir("qwen3", tiny_root, "seq-cls"), path)
    (path / "chat_template.jinja").write_text(CHATML, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        fast = st_backend.CrossEncoder(str(path), device="cpu")
        st_backend.CrossEncoder(str(path), device="cpu")
    notes = [r.getMessage() for r in caplog.records if "not one written for scoring" in r.getMessage()]
    assert len(notes) == 1 and "chat_template=False" in notes[0]
    pairs = [p for p in PAIRS if len(p[0]) < 100]
    plain = sentence_transformers.CrossEncoder(str(path), device="cpu")
    np.testing.assert_allclose(fast.predict(pairs), plain.predict(pairs), atol=1e-5)
    off = st_backend.CrossEncoder(str(path), device="cpu", chat_template=False)
    plain_off = sentence_transformers.CrossEncoder(str(path), device="cpu", processor_kwargs={"chat_template": None})
    assert off.engine().template is None
    np.testing.assert_allclose(off.predict(pairs), plain_off.predict(pairs), atol=1e-5)


def test_template_longer_than_max_length_gives_st_result(tiny_root):
    plain, fast = causal_pair(tiny_root, "qwen3", QWEN_TEMPLATE)
    for model in (plain, fast):
        model.max_seq_length = 16  # the template's head alone is longer
    pairs = [("what is a cat", "a small animal"), ("q", "d " * 40)]
    np.testing.assert_allclose(fast.predict(pairs), plain.predict(pairs), atol=1e-5)
