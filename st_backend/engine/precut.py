"""Cut texts far longer than max_length before tokenizing them, keeping every token that survives truncation.

Tokenizing a 150k-character document to keep 256 tokens costs the whole document. A prefix of a few thousand
characters gives exactly the same ids when its first ``keep`` tokens are provably those of the whole text.
The proof is by locality, decided from the tokenizer's JSON; anything off the whitelist gets a ``reason``
(shown by ``st-backend info``) and its texts are tokenized whole:

1. The boundary: a raw position ``b`` with ``text[b-1 : b+WINDOW]`` all "plain" letters: BMP letters of
   combining class 0 that are no second half of a canonical composition (nor their NFD/NFKD first character),
   no Hangul jamo, no grapheme Prepend/SpacingMark letter; and whose image under the tokenizer's normalizer,
   measured exactly through the Rust alignments, is non-empty and, under every normalizer of a Sequence but
   the last, starts with a plain letter and holds only letters and marks.
2. Normalization is chunkable at ``b``: N(x + y) == N(x) + N(y) when y starts with a plain letter. Lowercase,
   Nmt, BertNormalizer, StripAccents map characters one by one; NFD/NFKD reorder only runs of non-starters,
   NFC/NFKC compose only onto a preceding starter with a second half, which a plain letter is not;
   Precompiled maps grapheme clusters, and two plain letters always have a grapheme break between them; a
   Replace of a letter-free string or of a whitespace run, and Strip, cannot reach across a letter; Prepend
   acts at the start only. So the cut and the whole text have the same normalized text, with the same
   alignments, on the side of ``b`` they share.
3. Added tokens (special tokens written in the text) are found by a leftmost-longest scan before (raw) or
   after (normalized) normalization. A ``b`` that one may cross is refused; without one, the scans of the
   cut and of the whole text agree on the shared side: from the start for a prefix, and from ``b`` on for a
   suffix, where every scan is between matches.
4. Pre-tokenizers split by a bounded neighbourhood (BertPreTokenizer, Whitespace(Split), Metaspace(split=True),
   Punctuation, Digits, CharDelimiterSplit, ByteLevel, the GPT-2/Llama-3/Qwen-2 Split regexes). Regex
   alternatives are contractions of at most 3 characters, whose lookahead the WINDOW letters after ``b``
   cover, greedy runs of whitespace, punctuation or digits, which a letter ends, or letter runs: the word
   holding ``b``. Every scan splits where a letter run ends, so a suffix's words resync after that word.
   This is where unbounded lookahead (``\\s+(?!\\S)``, NFC reordering, Replace(" {2,}")) stays on one
   side: whitespace runs, combining sequences and ZWJ emoji never hold ``b``.
5. Every model (WordPiece, BPE without dropout, Unigram, WordLevel) tokenizes each word on its own.

So for a prefix the tokens of the words before the word holding ``b`` are the whole text's, ids and character
offsets alike (for a suffix, those after it); MARGIN_WORDS more words are dropped for safety. ``keep`` is a
content budget: max_length minus the special tokens the post-processor adds. A negative budget truncates
nothing in tokenizers (its usize subtraction wraps), so nothing is cut for it.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import re
import threading
import unicodedata as ud

from tokenizers import PreTokenizedString, Regex, Tokenizer, pre_tokenizers

WINDOW = 4  # plain letters needed after the boundary: covers the 3-character contractions of the regexes
MARGIN_WORDS = 2  # words dropped next to the boundary beyond what the argument needs
MARGIN_CHARS = 16  # raw characters kept beyond the boundary's window in a candidate
CHARS_PER_TOKEN = 6  # first candidate length per needed token (measured: ~4.5-5 for English)

_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents", "Nmt", "Strip", "Prepend"}
_NORMALIZERS |= {"Precompiled", "Replace"}
_SPLITTERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Punctuation", "Digits", "CharDelimiterSplit"}
_MODELS = {"WordPiece", "BPE", "Unigram", "WordLevel"}
_WS_RUNS = re.compile(r"(?: |\\s|\\t|\\n|\\r|▁)(?:\+|\{\d+,\d*\})?")  # Replace patterns of one whitespace class
_CONTRACTIONS = ("'s|'t|'re|'ve|'m|'ll|'d", "(?i:'s|'t|'re|'ve|'m|'ll|'d)")
_SPLIT_REGEXES = {
    _CONTRACTIONS[0] + r"| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",  # GPT-2
    *(
        c + r"|[^\r\n\p{L}\p{N}]?\p{L}+|" + n + r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
        for c in _CONTRACTIONS
        for n in (r"\p{N}{1,3}", r"\p{N}")  # Llama-3 / Qwen-2
    ),
}
# Conjoining jamo compose algorithmically; these letters are grapheme Prepend or SpacingMark.
_EXCLUDED = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xD7B0, 0xD7FF), (0xFFA0, 0xFFDC))
_EXCLUDED += ((0x0D4E, 0x0D4E), (0x0E33, 0x0E33), (0x0EB3, 0x0EB3))

_lock = threading.Lock()
_plain_tables: tuple[frozenset[str], re.Pattern] | None = None
_images: dict[str, _Images] = {}  # normalizer JSON -> its images of plain letters


def _plain() -> tuple[frozenset[str], re.Pattern]:
    """The letters passing the Unicode half of point 1, and a regex for runs of WINDOW + 1 of them; built once."""
    global _plain_tables
    with _lock:
        if _plain_tables is None:
            bmp = "".join(map(chr, range(0x10000)))
            seconds = set()  # second halves of canonical pair decompositions
            for c in (*bmp, *map(chr, range(0x11000, 0x12000)), *map(chr, range(0x1D100, 0x1D200))):
                parts = ud.decomposition(c).split() if not ud.is_normalized("NFD", c) else ()
                if len(parts) == 2 and not parts[0].startswith("<"):
                    seconds.add(chr(int(parts[1], 16)))
            excluded = {chr(cp) for lo, hi in _EXCLUDED for cp in range(lo, hi + 1)}

            def starter(c: str) -> bool:
                return ud.combining(c) == 0 and c not in seconds and not c.isspace()

            letters = []
            for run in re.findall(r"[^\W\d_]+", bmp):
                stable = ud.is_normalized("NFKD", run)  # then every letter of the run is its own decomposition
                letters += [
                    c
                    for c in run
                    if ud.category(c) in ("Lu", "Ll", "Lt", "Lo") and starter(c) and c not in excluded
                    if stable or all(starter(ud.normalize(f, c)[0]) for f in ("NFD", "NFKD"))
                ]
            groups = itertools.groupby(enumerate(sorted(map(ord, letters))), lambda x: x[1] - x[0])
            ranges = "".join(
                f"{re.escape(chr(g[0][1]))}-{re.escape(chr(g[-1][1]))}" for g in map(list, (g for _, g in groups))
            )
            _plain_tables = frozenset(letters), re.compile(f"[{ranges}]{{{WINDOW + 1},}}")
    return _plain_tables


def _leaves(spec: dict | None, key: str) -> list[dict]:
    if spec is None:
        return []
    if spec.get("type") == "Sequence":
        return [leaf for sub in spec.get(key) or [] for leaf in _leaves(sub, key)]
    return [spec]


class _Images:
    """Images of plain letters under a normalizer, measured per letter on first use (point 1): None for a
    letter that does not qualify. Exact: a plain letter's image does not depend on its plain neighbours."""

    def __init__(self, leaves: list[dict]) -> None:
        model = {"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"}
        self.levels = []
        for i in range(1, len(leaves) + 1):
            spec = leaves[0] if i == 1 else {"type": "Sequence", "normalizers": leaves[:i]}
            self.levels.append(Tokenizer.from_str(json.dumps({"version": "1.0", "normalizer": spec, "model": model})))
        self.image = functools.lru_cache(maxsize=None)(self._measure)  # thread-safe

    def _measure(self, c: str) -> str | None:
        image = c
        for i, level in enumerate(self.levels):
            # The "a"s on both sides take what Prepend/Strip do at the ends of a string.
            text = PreTokenizedString("a" + c + "a")
            text.normalize(level.normalizer.normalize)
            _ONE_CHAR.pre_tokenize(text)
            splits = text.get_splits(offset_referential="original", offset_type="char")
            if any(end - start != 1 for _, (start, end), _ in splits):
                return None  # merged with a neighbour: not chunkable after all
            image = "".join(piece for piece, (start, _), _ in splits if start == 1)
            letters = _plain()[0]
            if i + 1 < len(self.levels):
                if not image or image[0] not in letters or ud.combining(image[-1]) == 9:  # a virama joins
                    return None
                if not all(ch in letters or ud.category(ch)[0] == "M" for ch in image):
                    return None
            elif not any(ch.isalpha() for ch in image):
                return None
        return image


_ONE_CHAR = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")


def _refusal(spec: dict) -> str | None:
    """None when cutting is provably safe for this tokenizer JSON, else why not."""
    model = (spec.get("model") or {}).get("type")
    if model not in _MODELS:
        return f"the model {model} is not known to tokenize words independently"
    if model == "BPE" and spec["model"].get("dropout"):
        return "BPE dropout makes the tokens of a word random"
    pre = _leaves(spec.get("pre_tokenizer"), "pretokenizers")
    for part, leaves, known in (
        ("normalizer", _leaves(spec.get("normalizer"), "normalizers"), _NORMALIZERS),
        ("pre-tokenizer", pre, _SPLITTERS | {"Split", "Metaspace", "ByteLevel"}),
    ):
        for leaf in leaves:
            kind, pattern = leaf.get("type"), leaf.get("pattern") or {}
            if kind not in known:
                return f"the {part} {kind} is not known to act locally"
            if "String" in pattern and (not pattern["String"] or any(c.isalpha() for c in pattern["String"])):
                return f"the {part} {kind}({pattern['String']!r}) can match across a cut inside a word"
            regex = pattern.get("Regex")
            if regex is not None and not (
                _WS_RUNS.fullmatch(regex) if part == "normalizer" else regex in _SPLIT_REGEXES
            ):
                return f"the {part} {kind}(regex {regex!r}) is not known to act locally"
    if not pre:
        return "no pre-tokenizer: the whole text is one word"
    flags = {"Metaspace": "split", "ByteLevel": "use_regex"}  # without them these keep a piece one word
    if not any(leaf.get(flags[leaf["type"]], True) if leaf["type"] in flags else True for leaf in pre):
        named = ", ".join(f"{leaf['type']}({flags[leaf['type']]}=False)" for leaf in pre)
        return f"the pre-tokenizer {named} makes the whole text one word"
    return None


def _first_length(need: int) -> int:
    return CHARS_PER_TOKEN * need + 64


def longest_first(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
    """The lengths tokenizers' truncate_encodings (LongestFirst, a pair) leaves; a copy of its Rust rule."""
    if budget == 0 or n_a + n_b <= budget:
        return (0, 0) if budget == 0 else (n_a, n_b)
    n1, n2 = min(n_a, n_b), max(n_a, n_b)
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1, n2 = budget // 2, budget // 2 + budget % 2
    return (n2, n1) if n_a > n_b else (n1, n2)


class PreCut:
    """Cuts long texts to prefixes (suffixes for truncation_side "left") that keep their surviving tokens.

    Thread-safe: the Rust tokenizer is never reconfigured after construction, the plain-letter tables are
    built once under a lock. ``reason`` is None when cutting is provably safe, else a sentence saying why not.
    """

    def __init__(self, spec: str, truncation_side: str = "right") -> None:
        data = json.loads(spec)
        self.left = truncation_side == "left"
        self.reason = _refusal(data)
        self._leaves = _leaves(data.get("normalizer"), "normalizers")
        self._added = [a for a in data.get("added_tokens") or [] if a.get("content")]
        self._ready: tuple | None = None
        self._tok = Tokenizer.from_str(spec)
        self._tok.no_padding()
        self._tok.no_truncation()

    def threshold(self, keep: int) -> int:
        """Texts longer than this (characters) are cut. Measured (MiniLM, ArguAna): a cut costs about as much
        as tokenizing 2 first candidates' worth of text whole; 3 leaves a margin for the Python work."""
        return 3 * _first_length(max(keep, 1))

    def prefixes(self, texts: list[str], keep: int) -> list[str]:
        """Texts whose first (last, for left truncation) ``keep`` tokens are the full texts': truncating to any
        content budget 0 <= m <= keep gives the same ids and type ids. Returns ``texts`` itself if none is long."""
        limit = self.threshold(keep)
        long = [i for i, t in enumerate(texts) if len(t) > limit] if self.reason is None and keep >= 0 else []
        if not long:
            return texts
        out = list(texts)
        for i, (text, _) in zip(long, self._cut([texts[i] for i in long], [max(keep, 1)] * len(long))):
            out[i] = text
        return out

    def pair_prefixes(self, pairs: list[tuple[str, str]], keep: int) -> list[tuple[str, str]]:
        """Pairs cut so that longest_first truncation to any budget 0 <= m <= keep gives the same ids.

        Proof (longest_first above, from truncate_encodings): cut side X, other side Y whole with n_y tokens,
        X's stable count S > max(keep, n_y). For both the full X (n_x >= S) and the cut (n'_x >= S): the total
        exceeds the budget m <= keep, so truncation happens; X is strictly the longer, so the shorter is Y with
        the same n_y, and the lengths depend only on (n_y, m, which side is longer): the same in both; X keeps
        m - n_y or ceil(m / 2) tokens, at most m < S, all stable. With both sides cut the final lengths would
        depend on whether n_a > n_b (for odd budgets), which the cut hides: such pairs stay whole, as do pairs
        where the cut side cannot exceed the other.
        """
        limit = self.threshold(keep)
        jobs = []
        if self.reason is None and keep >= 0:
            jobs = [(i, int(len(a) <= limit)) for i, (a, b) in enumerate(pairs) if (len(a) > limit) != (len(b) > limit)]
        if not jobs:
            return pairs
        others = self._tok.encode_batch([pairs[i][1 - side] for i, side in jobs], add_special_tokens=False)
        needs = [max(keep, len(e.ids)) + 1 for e in others]
        out = list(pairs)
        for (i, side), (text, _) in zip(jobs, self._cut([pairs[i][side] for i, side in jobs], needs)):
            out[i] = (text, pairs[i][1]) if side == 0 else (pairs[i][0], text)
        return out

    def stable_prefix(self, text: str, keep: int) -> tuple[str, int]:
        """(a prefix of text, S >= keep) where the prefix's first S tokens (no special tokens) have the ids and
        character offsets of the full text's; (text, its token count) when it is not cut."""
        if self.reason is None and keep >= 0 and len(text) > self.threshold(keep):
            ((cut, stable),) = self._cut([text], [max(keep, 1)], left=False)
            if stable is not None:
                return cut, stable
        return text, len(self._tok.encode(text, add_special_tokens=False).ids)

    # -- the cut -----------------------------------------------------------------------------------------

    def _prepare(self) -> tuple:
        if self._ready is None:
            letters, run = _plain()
            key = json.dumps(self._leaves, sort_keys=True)
            with _lock:
                if self._leaves and key not in _images:
                    _images[key] = _Images(self._leaves)
                images = _images[key].image if self._leaves else str
            raw = [a["content"] for a in self._added if not a.get("normalized", True)]  # (token, k): pairs around k
            raw = [(t, k) for t in raw for k in range(1, len(t)) if t[k - 1] in letters and t[k] in letters]
            norm = {a["content"] for a in self._added if a.get("normalized", True)}
            if self._tok.normalizer is not None:  # tokenizers matches these by their normalized form
                norm |= {self._tok.normalizer.normalize_str(t) for t in norm}
            self._ready = (letters, run, images, raw, sorted(t for t in norm if len(t) > 1))
        return self._ready

    def _usable(self, text: str, b: int) -> bool:
        """Point 1 at b (the letters' images qualify) and no added token across b (point 3: raw tokens checked
        on the raw text, normalized ones against the exact images of the plain letters around b)."""
        letters, _, images, raw, norm = self._ready
        if any(images(c) is None for c in text[b - 1 : b + WINDOW]) or any(
            text.startswith(token, b - k) for token, k in raw if k <= b
        ):
            return False
        longest = max(map(len, norm), default=0)

        def plain(i: int) -> bool:
            return 0 <= i < len(text) and text[i] in letters and images(text[i]) is not None

        lo, hi = b, b
        while b - lo < longest and plain(lo - 1):
            lo -= 1
        while hi - b < longest and plain(hi):
            hi += 1
        # A letter's image is exact between two chunk boundaries: drop the end letters next to a non-plain
        # character (e + U+0301 composes). Beyond the exact images anything may follow, so a token may match.
        left = "".join(map(images, text[lo + (not plain(lo - 1)) : b]))
        right = "".join(map(images, text[b : hi - (not plain(hi))]))
        for token in norm:
            for k in range(1, len(token)):
                head, tail = token[:k], token[k:]
                if (left.endswith(head) if len(left) >= k else head.endswith(left)) and (
                    right.startswith(tail) if len(right) >= len(tail) else tail.startswith(right)
                ):
                    return False
        return True

    def _boundary(self, text: str, start: int, length: int, left: bool) -> int | None:
        """A raw position b in the candidate text[start : start + length] that passes _usable, at least
        MARGIN_CHARS from the candidate's cut end and as close to it as found; None if there is none."""
        run = self._prepare()[1]
        lo, hi = start + MARGIN_CHARS - 1, start + length - MARGIN_CHARS + WINDOW
        for _ in range(8):
            if left:
                found = run.search(text, lo, start + length)
            else:
                found, step, lo = None, 256, hi
                while found is None and lo > start:
                    lo = max(start, lo - step)
                    step *= 4
                    found = max(run.finditer(text, lo, hi), key=lambda m: m.end(), default=None)
            if found is None:
                return None
            b = found.start() + 1 if left else found.end() - WINDOW
            if self._usable(text, b):
                return b
            lo, hi = b, b + WINDOW - 1  # next try: one position further from the cut end
        return None

    def _stable(self, encoding, b: int, left: bool) -> int:
        """Leading (trailing, if left) tokens of the candidate's encoding outside the word holding b."""
        words = encoding.word_ids
        if None in words:
            return 0
        pairs = zip(encoding.offsets, words)
        if left:
            held = max((w for (s, _), w in pairs if s < b), default=None)
            return 0 if held is None else len(words) - bisect.bisect_right(words, held + MARGIN_WORDS)
        held = min((w for (_, e), w in pairs if e > b), default=None)
        return 0 if held is None else bisect.bisect_left(words, held - MARGIN_WORDS)

    def _cut(self, texts: list[str], needs: list[int], left: bool | None = None) -> list[tuple[str, int | None]]:
        """(cut text, its stable token count >= need), or (text, None) when the text is better left whole.
        Candidates start proportional to the need and double; all candidates of a round encode in one batch."""
        left = self.left if left is None else left
        self._prepare()
        out: list = [None] * len(texts)
        lengths = [_first_length(n) for n in needs]
        todo = list(range(len(texts)))
        while todo:
            retry, batch = [], []
            for i in todo:
                text, length = texts[i], lengths[i]
                if 2 * length >= len(text):  # the cut would save less than half: not worth a proof
                    out[i] = (text, None)
                    continue
                start = len(text) - length if left else 0
                b = self._boundary(text, start, length, left)
                if b is None:
                    lengths[i] *= 2
                    retry.append(i)
                else:
                    batch.append((i, start, b))
            cuts = [texts[i][s : s + lengths[i]] for i, s, _ in batch]
            for (i, s, b), cut, encoding in zip(batch, cuts, self._tok.encode_batch(cuts, add_special_tokens=False)):
                stable = self._stable(encoding, b - s, left)
                if stable >= needs[i]:
                    out[i] = (cut, stable)
                else:
                    lengths[i] *= 2
                    retry.append(i)
            todo = retry
        return out
