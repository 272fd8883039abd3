"""TextTokenizer (Rust backend, no padding) gives exactly the ids of the transformers tokenizer call."""

import pytest
from tiny_models import ARCHS, corpus, load_tokenizer
from transformers import AutoTokenizer

from st_backend.engine.tokenizer import TextTokenizer

TEXTS = ["", "a", "Hello, World!", "Ünïcödé 東京 🙂", "  spaces   inside  ", "word " * 300, *corpus()[:50]]


def _check(hf, max_length):
    got = TextTokenizer(hf)(TEXTS, max_length)
    want = hf(TEXTS, truncation="longest_first", max_length=max_length)
    assert [a.tolist() for a in got.ids] == want["input_ids"]
    assert got.lengths.tolist() == [len(x) for x in want["input_ids"]]
    if "token_type_ids" in want and got.type_ids is None:
        # Left out only where every single-text type id is 0, the model's default.
        assert all(t == 0 for row in want["token_type_ids"] for t in row)
    elif "token_type_ids" in want:
        assert [a.tolist() for a in got.type_ids] == want["token_type_ids"]
    else:
        assert got.type_ids is None


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("max_length", [64, 7])
def test_tiny_tokenizers(tiny_root, arch, max_length):
    _check(load_tokenizer(arch, tiny_root), max_length)


@pytest.mark.parametrize("max_length", [256, 16])
def test_minilm_tokenizer(default_model_path, max_length):
    _check(AutoTokenizer.from_pretrained(default_model_path), max_length)


def test_left_truncation_side(tiny_root):
    hf = load_tokenizer("bert", tiny_root)
    hf.truncation_side = "left"
    _check(hf, 9)


def test_changing_max_length_between_calls(default_model_path):
    hf = AutoTokenizer.from_pretrained(default_model_path)
    tok = TextTokenizer(hf)
    assert tok(["word " * 100], 10).lengths.tolist() == [10]
    assert tok(["word " * 100], 50).lengths.tolist() == [50]
    assert tok(["word " * 100], None).lengths.tolist() == [102]


def test_type_ids_kept_when_a_single_text_template_uses_type_1(tiny_root):
    from st_backend.engine.tokenizer import _single_types_zero

    single = [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 1}}]
    assert not _single_types_zero({"post_processor": {"type": "TemplateProcessing", "single": single}})
    assert not _single_types_zero({"post_processor": {"type": "SomethingElse"}})
    assert _single_types_zero({"post_processor": None})
    pairs = TextTokenizer(load_tokenizer("bert", tiny_root))([("a question", "a passage")], 64)
    assert pairs.type_ids is not None and 1 in pairs.type_ids[0]  # pairs always keep their type ids


@pytest.mark.parametrize("arch", ARCHS)
def test_lengths_one_by_one_equal_the_transformers_counts(tiny_root, arch):
    """lengths(): a few texts (or pairs) counted one at a time, many in one batch call; untruncated either way."""
    hf = load_tokenizer(arch, tiny_root)
    tok = TextTokenizer(hf)
    pairs = list(zip(TEXTS[:-1], TEXTS[1:]))
    for rows in (TEXTS[:3], TEXTS, pairs[:4], pairs):
        if isinstance(rows[0], tuple):
            want = [len(ids) for ids in hf([a for a, _ in rows], [b for _, b in rows])["input_ids"]]
        else:
            want = [len(ids) for ids in hf(list(rows))["input_ids"]]
        assert tok.lengths(list(rows)).tolist() == want
        assert tok.lengths(list(rows), add_special_tokens=False).tolist() == [
            len(ids) for ids in tok(list(rows), None, add_special_tokens=False).ids
        ]
