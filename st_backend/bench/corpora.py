"""Texts of real shapes for benchmarks: short sentences (STS Benchmark), documents (ArguAna), long documents
(ArguAna documents joined), a synthetic MS MARCO-like corpus, or a file of texts. The real data sets are read
from a folder the caller names (``--data-dir``); the package itself ships none."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np

CORPORA = ("synthetic", "sts", "arguana", "long")
#: Characters per all-MiniLM-L6-v2 token on ArguAna documents, used to size long documents before tokenizing.
CHARS_PER_TOKEN = 5.5


def default_data_dir() -> Path | None:
    """$ST_BACKEND_DATA, else ../shared/data from the working directory (this repository's layout), else None."""
    for candidate in (os.environ.get("ST_BACKEND_DATA"), "../shared/data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def synthetic_corpus(n: int, median_words: float = 45.0, sigma: float = 0.6, seed: int = 0) -> list[str]:
    """MS MARCO-like passages: lognormal word counts (median ~45 words), words from the embedded vocabulary."""
    from transformers import AutoTokenizer

    from ..default_model import default_model_path

    vocab = [w for w in AutoTokenizer.from_pretrained(default_model_path()).get_vocab() if w.isalpha() and w.isascii()]
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.lognormal(np.log(median_words), sigma, size=n).astype(int), 1, 400)
    words = np.array(sorted(vocab))
    return [" ".join(words[rng.integers(0, len(words), size=c)]) for c in counts]


def read_texts(path: str | Path) -> list[str]:
    """A UTF-8 file's texts, one per line, so that text i is line i: lines end in "\\n" or "\\r\\n" (stripped; a
    lone "\\r" stays in its text), a final newline adds no text, a leading byte-order mark is dropped, and blank
    lines are kept as empty texts (a valid input; dropping them would shift every later row). ``encode`` and
    ``compare --texts`` read their input with this, and ``bench`` a file of texts."""
    with open(path, encoding="utf-8-sig", newline="\n") as f:  # newline="\n": split on \n only, translate nothing
        return [line[:-2] if line.endswith("\r\n") else line.removesuffix("\n") for line in f]


def read_sts(path: str | Path) -> tuple[list[str], list[str], list[float]]:
    """STS Benchmark layout: tab-separated genre, file, year, id, score, sentence1, sentence2 (tabs only)."""
    s1, s2, gold = [], [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 7:
                raise ValueError(f"{path}:{lineno}: expected >= 7 tab-separated columns, got {len(cols)}")
            try:
                gold.append(float(cols[4]))
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: score column {cols[4]!r} is not a number") from exc
            s1.append(cols[5])
            s2.append(cols[6])
    return s1, s2, gold


def sts_sentences(data_dir: Path) -> list[str]:
    """Every sentence of the STS Benchmark test and dev splits, both columns (5,758 sentences of ~12 tokens)."""
    s1, s2, _ = read_sts(_need(data_dir, "stsbenchmark/sts-test.csv"))
    dev = Path(data_dir) / "stsbenchmark" / "sts-dev.csv"
    if dev.is_file():
        d1, d2, _ = read_sts(dev)
        s1, s2 = s1 + d1, s2 + d2
    return s1 + s2


def arguana_documents(data_dir: Path) -> list[str]:
    """The 8,674 ArguAna documents (title and text, as MTEB joins them), ~183 tokens each."""
    path = _need(data_dir, "arguana/corpus.jsonl.gz")
    docs = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from exc
            title = row.get("title") or ""
            title = " ".join(title) if isinstance(title, list) else str(title)
            docs.append(f"{title} {row['text']}".strip())
    return docs


def long_documents(data_dir: Path, count: int = 64, tokens: int = 30_000) -> list[str]:
    """``count`` documents of ~``tokens`` tokens each, every one ArguAna documents joined in corpus order."""
    docs = arguana_documents(data_dir)
    target = int(tokens * CHARS_PER_TOKEN)
    out, i = [], 0
    for _ in range(count):
        parts, size = [], 0
        while size < target:
            parts.append(docs[i % len(docs)])
            size += len(parts[-1]) + 2
            i += 1
        out.append("\n\n".join(parts))
    return out


def load_corpus(name: str, n: int, data_dir: str | Path | None = None, long_tokens: int = 30_000) -> list[str]:
    """The first ``n`` texts of a named corpus (CORPORA), or of a file of texts (one per line)."""
    if name == "synthetic":
        return synthetic_corpus(n)
    if name not in CORPORA:
        return read_texts(name)[:n]
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if root is None:
        raise ValueError(
            f"--corpus {name} reads real data: give --data-dir (the folder holding stsbenchmark/, arguana/)"
        )
    if name == "sts":
        return sts_sentences(root)[:n]
    if name == "arguana":
        return arguana_documents(root)[:n]
    return long_documents(root, count=n, tokens=long_tokens)


def _need(data_dir: Path, relative: str) -> Path:
    path = Path(data_dir) / relative
    if not path.is_file():
        raise ValueError(f"{path} not found: --data-dir must hold {relative}")
    return path
