"""TextTokenizer (Rust backend, no padding) gives exactly the ids of the transformers tokenizer call."""

import pytest
from tiny_models import ARCHS, corpus, load_tokenizer
from transformers import AutoTokenizer

from st_backend.engine.tokenize import TextTokenizer

TEXTS = ["", "a", "Hello, World!", "Ünïcödé 東京 🙂", "  spaces   inside  ", "word " * 300, *corpus()[:50]]


def _check(hf, max_length):
    got = TextTokenizer(hf)(TEXTS, max_length)
    want = hf(TEXTS, truncation="longest_first", max_length=max_length)
    assert [a.tolist() for a in got.ids] == want["input_ids"]
    assert got.lengths.tolist() == [len(x) for x in want["input_ids"]]
    if "token_type_ids" in want:
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
