"""PreCut: texts cut before tokenizing give exactly the ids (and type ids) of tokenizing whole, then truncating."""

import gzip
import itertools
import json
import random
import threading

import pytest
from conftest import SHARED_DATA
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from st_backend.engine.precut import PreCut, _plain, longest_first

CORPUS = SHARED_DATA / "arguana" / "corpus.jsonl.gz"
MAX_LENGTHS = (2, 8, 64, 256, 512)
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# Put next to each other and next to words, so that wherever a cut falls, one of these is near it.
SNIPPETS = [
    "e\u0301", "a\u0301\u0323\u0301", "\u0323", "\u0301" * 30, "ﬁ", "ﬂow", "ß", "İ", "ǅ", "Å", "Σ", "ς", "①",
    "\u00a8", "\u037a", "👩\u200d👩\u200d👧\u200d👦", "🇺🇸🇫🇷", "👍🏽", "\u200d", "\ufe0f", "中文字符", "日本語の", "한국어",
    "ｶﾞ", "ㄱㅏ", "\t", "\n", "\r\n", " " * 40, "   ", "\u00a0", "\u3000", "\ufeff", "\x00", "[MASK]", "[SEP]",
    "<s>", "</s>", "<mask>", "<Mask>", "covid19", "CoViD19", "don't", "we'll", "'re", "'S", "12345", "...", "---",
]  # fmt: skip


@pytest.fixture(scope="module")
def docs():
    if not CORPUS.exists():
        pytest.skip(f"the ArguAna corpus (BEIR jsonl with title/text) is not at {CORPUS}")
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        return [d["title"] + "\n" + d["text"] for d in map(json.loads, itertools.islice(f, 3000))]


def _train(tok, trainer, texts):
    tok.train_from_iterator(texts, trainer)
    return tok


@pytest.fixture(scope="module")
def tokenizers(docs, default_model_path):
    """Real MiniLM and tokenizers trained in seconds on ArguAna, each with literal-able added tokens."""
    train = docs[:400]
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(strip_accents=True, lowercase=True, handle_chinese_chars=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    _train(wp, trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials, show_progress=False), train)
    wp.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    wp.add_tokens([AddedToken("covid19", normalized=True), AddedToken("don't", normalized=True)])

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    _train(
        bpe,
        trainers.BpeTrainer(vocab_size=2000, special_tokens=specials, initial_alphabet=alphabet, show_progress=False),
        train,
    )
    bpe.add_special_tokens([AddedToken("<mask>", lstrip=True, normalized=False)])
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))

    llama = Tokenizer(models.BPE(byte_fallback=False))
    split = pre_tokenizers.Split(Regex(LLAMA3), "isolated")
    llama.pre_tokenizer = pre_tokenizers.Sequence(
        [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    _train(llama, trainers.BpeTrainer(vocab_size=2000, initial_alphabet=alphabet, show_progress=False), train[:250])
    llama.add_special_tokens(["<|begin_of_text|>"])
    llama.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1", special_tokens=[("<|begin_of_text|>", llama.token_to_id("<|begin_of_text|>"))])  # fmt: skip

    uni = Tokenizer(models.Unigram())
    uni.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    uni.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    specials = ["<pad>", "</s>", "<unk>"]
    _train(uni, trainers.UnigramTrainer(vocab_size=1000, special_tokens=specials, unk_token="<unk>", show_progress=False), train[:100])  # fmt: skip
    uni.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", 1)])  # fmt: skip
    uni.add_tokens([AddedToken("<Mask>", normalized=True)])
    first = json.loads(uni.to_str())
    first["pre_tokenizer"]["prepend_scheme"] = "first"

    minilm = AutoTokenizer.from_pretrained(default_model_path).backend_tokenizer
    made = {"minilm": minilm, "wordpiece": wp, "bytelevel": bpe, "llama3": llama, "unigram": uni}
    made["unigram-first"] = Tokenizer.from_str(json.dumps(first))
    return {name: tok.to_str() for name, tok in made.items()}


@pytest.fixture(scope="module")
def adversarial(docs):
    """Long texts: ArguAna words with SNIPPETS between and glued to them, tabs/CRLF, no-break spaces."""
    rng = random.Random(0)
    words = " ".join(docs[1000:1400]).split(" ")
    texts = []
    for density in (0.05, 0.3, 0.8):
        parts, size = [], 0
        while size < 10_000:
            parts.append(rng.choice(words))
            if rng.random() < density:
                parts.append(rng.choice(SNIPPETS) + ("" if rng.random() < 0.5 else rng.choice(words)))
            size += len(parts[-1]) + 1
        texts.append(" ".join(parts))
    texts.append(" ".join(docs[:10]))  # plain prose
    texts += ["\r\n\t".join(docs[2000:2010]), "".join(docs[2100:2108]).replace(" ", "\u00a0")]
    texts.append("word " + " " * 8_000 + "word " * 1200)
    return texts


@pytest.fixture(scope="module")
def unbroken():
    """100k+ characters without whitespace: one word for most pre-tokenizers, so they must come back whole."""
    rng = random.Random(1)
    letters = "".join(rng.choice("abcdefghij") for _ in range(110_000))
    cjk = "".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(100_000)) + "。"
    return ["a" * 120_000, letters, cjk, "e\u0301" * 60_000, "👩\u200d👩\u200d👧" * 20_000]


def _truncating(spec, max_length, side):
    tok = Tokenizer.from_str(spec)
    tok.no_padding()
    tok.enable_truncation(max_length, strategy="longest_first", direction=side)
    return tok


def _budget(spec, max_length, pair=False):
    processor = Tokenizer.from_str(spec).post_processor
    # Below 0 tokenizers truncates nothing (its usize subtraction wraps): PreCut must then cut nothing.
    return max_length - (processor.num_special_tokens_to_add(pair) if processor else 0)


def _same(spec, max_length, side, texts, cuts):
    """Tokenizing the cuts gives the ids and type ids of tokenizing the texts (those left as they are: trivially)."""
    changed = [i for i, (text, cut) in enumerate(zip(texts, cuts)) if cut is not text]
    tok = _truncating(spec, max_length, side)
    wants = tok.encode_batch([texts[i] for i in changed])
    for i, want, got in zip(changed, wants, tok.encode_batch([cuts[i] for i in changed])):
        assert (got.ids, got.type_ids) == (want.ids, want.type_ids), (max_length, side, i)
    return len(changed)


NAMES = ("minilm", "wordpiece", "bytelevel", "llama3", "unigram", "unigram-first")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("side", ["right", "left"])
def test_single_texts_exact(tokenizers, adversarial, docs, name, side):
    spec = tokenizers[name]
    precut = PreCut(spec, side)
    assert precut.reason is None
    cut_any = 0
    for max_length in MAX_LENGTHS:
        keep = _budget(spec, max_length)
        limit = precut.threshold(keep)
        around = [docs[7] * (limit // len(docs[7]) + 2)]
        texts = adversarial + [around[0][:n] for n in (limit - 1, limit, limit + 1, 2 * limit - 1, 2 * limit + 3)]
        cuts = precut.prefixes(texts, keep)
        cut_any += _same(spec, max_length, side, texts, cuts)
        assert all(cut is text for text, cut in zip(texts, cuts) if len(text) <= limit)
    assert cut_any >= 25  # not vacuous: most long texts were cut


@pytest.mark.parametrize("name", ["minilm", "bytelevel", "llama3", "unigram"])
def test_unbroken_texts(tokenizers, unbroken, name):
    for side in ("right", "left"):
        precut = PreCut(tokenizers[name], side)
        cuts = precut.prefixes(unbroken, 254)
        _same(tokenizers[name], 256, side, unbroken, cuts)
        # One word of 100k characters cannot be cut (CJK is split per character by BertPreTokenizer).
        assert cuts[0] is unbroken[0] and cuts[1] is unbroken[1]


@pytest.mark.parametrize("name", ["minilm", "wordpiece", "unigram"])
def test_through_transformers(tokenizers, adversarial, name):
    for side in ("right", "left"):
        hf = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizers[name]), truncation_side=side)
        precut = PreCut(hf.backend_tokenizer.to_str(), hf.truncation_side)
        for max_length in (8, 256):
            keep = max_length - hf.num_special_tokens_to_add(False)
            cuts = precut.prefixes(adversarial, keep)
            assert hf(cuts, truncation=True, max_length=max_length) == hf(
                adversarial, truncation=True, max_length=max_length
            )
            firsts = [t[: 25 * i] for i, t in enumerate(adversarial)]  # short: the pair is cut
            seconds = [t[:8000] for t in adversarial]
            pairs = precut.pair_prefixes(list(zip(firsts, seconds)), max_length - hf.num_special_tokens_to_add(True))
            a, b = zip(*pairs)
            want = hf(firsts, seconds, truncation="longest_first", max_length=max_length)
            assert hf(list(a), list(b), truncation="longest_first", max_length=max_length) == want
            assert sum(x is not y for x, y in zip(b, seconds)) >= 3


@pytest.mark.parametrize(
    "name, side",
    [("minilm", "right"), ("minilm", "left"), ("bytelevel", "left"), ("llama3", "right"), ("unigram-first", "left")],
)
def test_pairs_exact(tokenizers, adversarial, docs, name, side):
    spec = tokenizers[name]
    precut = PreCut(spec, side)
    rng = random.Random(f"{name}-{side}")
    # Long pair sides stay under ~8k characters: tokenizers builds every combination of the two sides'
    # overflowing pieces, so tokenizing long pairs whole (the reference) costs quadratic time.
    pool = [t[:8000] for t in adversarial] + [docs[3], "", "x", " ".join(docs[10:20]), "中文，" * 700]
    by_length = {}
    for _ in range(80):
        max_length = rng.choice([3, 4, 8, 9, 64, 65, 255, 256, 513])
        a, b = rng.choice(pool), rng.choice(pool)
        a, b = (
            a[rng.randrange(len(a) + 1) :] if rng.random() < 0.3 else a,
            b[: rng.randrange(len(b) + 1)] if rng.random() < 0.3 else b,
        )
        by_length.setdefault(max_length, []).append((a, b))
    cut = 0
    for max_length, pairs in by_length.items():
        keep = _budget(spec, max_length, pair=True)
        got = precut.pair_prefixes(pairs, keep)
        cut += _same(spec, max_length, side, pairs, got)
        limit = precut.threshold(keep)
        for (a, b), (x, y) in zip(pairs, got):
            if len(a) > limit and len(b) > limit or len(a) <= limit and len(b) <= limit:
                assert x is a and y is b  # both long: the final lengths would depend on a's and b's full lengths
    assert cut >= 15


@pytest.mark.parametrize("name", NAMES)
def test_random_texts_small_budgets(tokenizers, docs, name):
    """A seeded random loop: small budgets put the boundary a few words from the cut, next to SNIPPETS."""
    rng = random.Random(NAMES.index(name))
    pieces = " ".join(docs[1000:1100]).split(" ") + SNIPPETS

    def text(size):
        parts = [rng.choice(pieces) + rng.choice(["", " ", " ", "\n", "  "]) for _ in range(size // 4)]
        return "".join(parts)

    spec = tokenizers[name]
    cut = 0
    for side, max_length in itertools.product(("right", "left"), (3, 9)):
        precut = PreCut(spec, side)
        limit = precut.threshold(_budget(spec, max_length))
        texts = [text(rng.randrange(limit, 5 * limit)) for _ in range(30)]
        cut += _same(spec, max_length, side, texts, precut.prefixes(texts, _budget(spec, max_length)))
    assert cut >= 80


def test_normalizers_are_chunkable_before_a_plain_letter():
    """Point 2 of precut's argument on the Rust normalizers: N(x + y) == N(x) + N(y) when y starts with a plain
    letter, whatever x ends with (combining marks, jamo, halfwidth marks, ZWJ, spaces)."""
    letters = sorted(_plain()[0])
    tricky = SNIPPETS + ["\u0345", "\u1161", "\u11a8", "\uff9e", "\u0f73", "\u0344", "\u1100", "\u314f", "\u094d", " "]
    chains = [
        normalizers.NFC(), normalizers.NFD(), normalizers.NFKC(), normalizers.NFKD(), normalizers.Lowercase(),
        normalizers.Nmt(), normalizers.BertNormalizer(strip_accents=True, lowercase=True),
        normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC()]),
        normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " "), normalizers.Lowercase()]),
        normalizers.Replace("``", '"'),
    ]  # fmt: skip
    rng = random.Random(5)
    for _ in range(3000):
        x = "".join(rng.choice(tricky + letters[:200]) for _ in range(rng.randrange(4)))
        y = rng.choice(letters) + "".join(rng.choice(tricky) for _ in range(rng.randrange(3)))
        for normalizer in chains:
            assert normalizer.normalize_str(x + y) == normalizer.normalize_str(x) + normalizer.normalize_str(y), (x, y)


def test_no_boundary_inside_an_added_token(tokenizers):
    """Point 3 of the argument: no boundary inside an added token, raw or normalized, even one whose normalized
    form appears only after composition (e + U+0301 -> é under the NFC of this tokenizer)."""
    tok = Tokenizer.from_str(tokenizers["bytelevel"])
    tok.add_tokens([AddedToken("zcafé" + "q" * 5, normalized=True)])
    tok.add_special_tokens([AddedToken("wordsmith", normalized=False)])
    precut = PreCut(tok.to_str())
    precut._prepare()
    text = "xyzcafe\u0301qqqqq wordsmith tail"
    inside = {*range(3, 13), *range(text.index("wordsmith") + 1, text.index("wordsmith") + 9)}
    usable = {b for b in range(1, len(text) - 4) if precut._usable(text, b)}
    assert usable and not usable & inside


def test_longest_first_copies_the_rust_rule():
    tok = Tokenizer(models.WordLevel({"w": 0}, unk_token="w"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    grid = [("w " * a, "w " * b) for a in range(12) for b in range(12)]
    for budget in range(14):
        tok.enable_truncation(budget, strategy="longest_first")
        for (a, b), encoding in zip(grid, tok.encode_batch(grid)):
            lengths = (encoding.type_ids.count(0), encoding.type_ids.count(1))
            assert lengths == longest_first(len(a) // 2, len(b) // 2, budget), (a, b, budget)


def test_pair_rule_brute_force():
    """The rule of pair_prefixes: cut side X with stable count S > max(keep, n_y), Y whole, any budget <= keep."""
    for n_y, keep in itertools.product(range(12), range(1, 12)):
        for stable in range(max(keep, n_y) + 1, 15):
            for n_x, n_cut, budget in itertools.product(range(stable, 17), range(stable, 17), range(keep + 1)):
                for x in (0, 1):  # X first or second
                    full = longest_first(*((n_x, n_y) if x == 0 else (n_y, n_x)), budget)
                    cut = longest_first(*((n_cut, n_y) if x == 0 else (n_y, n_cut)), budget)
                    assert full == cut and full[x] <= stable
    # Weaker conditions fail: both sides cut (odd budget: the longer side gets the extra token) ...
    assert longest_first(9, 8, 5) != longest_first(7, 8, 5)
    # ... or a cut side whose stable count does not exceed the other side's length.
    assert longest_first(5, 6, 9) != longest_first(7, 6, 9)


def test_stable_prefix_ids_and_offsets(tokenizers, adversarial):
    for name in ("minilm", "bytelevel", "unigram"):
        precut = PreCut(tokenizers[name])
        tok = Tokenizer.from_str(tokenizers[name])
        tok.no_padding()
        tok.no_truncation()
        for keep in (1, 50, 300):
            texts = adversarial + ["short text"]
            results = [precut.stable_prefix(t, keep) for t in texts]
            for text, (cut, stable), full in zip(texts, results, tok.encode_batch(texts, add_special_tokens=False)):
                assert text.startswith(cut) and stable >= min(keep, len(full.ids))
                mine = tok.encode(cut, add_special_tokens=False)
                assert mine.ids[:stable] == full.ids[:stable] and mine.offsets[:stable] == full.offsets[:stable]
                assert cut is not text or stable == len(full.ids)
            assert sum(cut is not text for text, (cut, _) in zip(texts, results)) >= 4


def test_unsafe_tokenizers_are_left_whole(tokenizers, adversarial):
    base = json.loads(tokenizers["wordpiece"])
    bpe = json.loads(tokenizers["bytelevel"])
    cases = {
        "no pre-tokenizer": {**base, "pre_tokenizer": None},
        "Metaspace(split=False)": {
            **base,
            "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": False},
        },  # fmt: skip
        "ByteLevel(use_regex=False)": {
            **bpe,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": False},
        },  # fmt: skip
        "dropout": {**bpe, "model": {**bpe["model"], "dropout": 0.1}},
        "normalizer ByteLevel": {**bpe, "normalizer": {"type": "ByteLevel"}},
        "Replace(regex 'a.*b')": {
            **base,
            "normalizer": {"type": "Replace", "pattern": {"Regex": "a.*b"}, "content": ""},
        },
        "Replace('ab')": {**base, "normalizer": {"type": "Replace", "pattern": {"String": "ab"}, "content": "x"}},
        "UnicodeScripts": {**base, "pre_tokenizer": {"type": "UnicodeScripts"}},
        "Split(regex": {
            **base,
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated", "invert": False},
        },  # fmt: skip
    }
    texts = adversarial[:4]
    for expected, spec in cases.items():
        precut = PreCut(json.dumps(spec))
        assert precut.reason is not None and expected in precut.reason, (expected, precut.reason)
        assert precut.prefixes(texts, 8) is texts
        pairs = [(texts[0], "short")]
        assert precut.pair_prefixes(pairs, 8) is pairs
        assert precut.stable_prefix(texts[0], 8)[0] is texts[0]


def test_a_naive_cut_would_differ(tokenizers, adversarial):
    """The exactness checks can fail: cutting right after the last surviving token changes ids for some texts
    (composition across the cut, a word straddling it), although every surviving token lies before the cut."""
    differs = 0
    for name in ("wordpiece", "bytelevel", "unigram"):
        spec = tokenizers[name]
        tok = Tokenizer.from_str(spec)
        tok.no_padding()
        tok.no_truncation()
        keep = 62
        texts = adversarial[:3] + ["word " * 61 + "cafe\u0301 e\u0301te\u0301"]
        naive = [t[: e.offsets[keep - 1][1]] for t, e in zip(texts, tok.encode_batch(texts, add_special_tokens=False))]
        trunc = _truncating(spec, 64, "right")
        differs += sum(a.ids != b.ids for a, b in zip(trunc.encode_batch(texts), trunc.encode_batch(naive)))
    assert differs >= 3


def test_threads_share_one_instance(tokenizers, adversarial):
    precut = PreCut(tokenizers["unigram"])
    want = PreCut(tokenizers["unigram"]).prefixes(adversarial, 100)
    got = [None] * 4

    def work(i):
        got[i] = precut.prefixes(adversarial, 100)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == [want] * 4


def test_short_texts_come_back_as_they_are(tokenizers):
    precut = PreCut(tokenizers["minilm"])
    texts = ["a short sentence"] * 1000
    assert precut.prefixes(texts, 254) is texts
    pairs = [("a query", "a short passage")] * 10
    assert precut.pair_prefixes(pairs, 254) is pairs
