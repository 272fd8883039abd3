"""Strict parsers for the local task files (STS Benchmark, BEIR retrieval, CSV classification).

Every problem with a file raises ``ValueError`` naming the file and, where it applies, the 1-based line number.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path


def _fail(path: Path | str, line: int | None, msg: str) -> ValueError:
    where = f"{path}, line {line}" if line is not None else str(path)
    return ValueError(f"{where}: {msg}")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise _fail(path, None, "file not found")
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return fh.read()
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise _fail(path, None, f"cannot read file: {exc}") from exc


# --------------------------------------------------------------------------------------------- STS


@dataclass
class STSData:
    sentence1: list[str]
    sentence2: list[str]
    score: list[float]


def load_sts(path: str | Path) -> STSData:
    """STS Benchmark layout: genre, file, year, id, score (0-5), sentence1, sentence2[, extra columns...].

    Split on tabs only (the sentences contain quotes, so no CSV parser).
    """
    path = Path(path)
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 7:
            raise _fail(path, lineno, f"expected at least 7 tab-separated columns, got {len(cols)}")
        try:
            score = float(cols[4])
        except ValueError:
            raise _fail(path, lineno, f"score column is not a number: {cols[4]!r}") from None
        if not 0.0 <= score <= 5.0:
            raise _fail(path, lineno, f"score {score} outside 0-5")
        s1.append(cols[5])
        s2.append(cols[6])
        scores.append(score)
    if not scores:
        raise _fail(path, None, "no STS pairs found")
    return STSData(s1, s2, scores)


# --------------------------------------------------------------------------------------- retrieval


@dataclass
class RetrievalData:
    corpus: dict[str, dict[str, str]]  # id -> {"title", "text"}
    queries: dict[str, str]  # id -> text
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)  # query id -> {doc id: score}


def _find(directory: Path, names: list[str]) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise _fail(directory / names[0], None, f"file not found (looked for {', '.join(names)} in {directory})")


def _load_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    rows = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(path, lineno, f"not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise _fail(path, lineno, "expected a JSON object")
        missing = [k for k in required if k not in obj or obj[k] is None]
        if missing:
            raise _fail(path, lineno, f"missing field(s) {', '.join(missing)}")
        rows.append(obj)
    if not rows:
        raise _fail(path, None, "no records found")
    return rows


def _load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    lines = _read_text(path).splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        cols = line.rstrip("\r").split("\t")
        if len(cols) != 3:
            raise _fail(path, lineno, f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cols)}")
        if lineno == 1 and cols[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue  # header
        try:
            score = int(float(cols[2]))
        except ValueError:
            raise _fail(path, lineno, f"score column is not a number: {cols[2]!r}") from None
        qrels.setdefault(cols[0], {})[cols[1]] = score
    if not qrels:
        raise _fail(path, None, "no qrels found")
    return qrels


def load_retrieval(directory: str | Path) -> RetrievalData:
    """BEIR layout: corpus.jsonl[.gz] (_id, title, text), queries.jsonl[.gz] (_id, text), qrels/test.tsv or test.tsv."""
    directory = Path(directory)
    if not directory.is_dir():
        raise _fail(directory, None, "retrieval directory not found")
    corpus_path = _find(directory, ["corpus.jsonl", "corpus.jsonl.gz"])
    queries_path = _find(directory, ["queries.jsonl", "queries.jsonl.gz"])
    qrels_path = _find(directory, ["qrels/test.tsv", "test.tsv"])
    corpus = {
        str(r["_id"]): {"title": str(r.get("title") or ""), "text": str(r["text"])}
        for r in _load_jsonl(corpus_path, ("_id", "text"))
    }
    queries = {str(r["_id"]): str(r["text"]) for r in _load_jsonl(queries_path, ("_id", "text"))}
    qrels = _load_qrels(qrels_path)
    # keep only queries that have judgements (as BEIR / MTEB do)
    queries = {qid: text for qid, text in queries.items() if qid in qrels}
    if not queries:
        raise _fail(qrels_path, None, f"no query id in the qrels occurs in {queries_path}")
    qrels = {qid: docs for qid, docs in qrels.items() if qid in queries}
    return RetrievalData(corpus, queries, qrels)


def subsample_retrieval(data: RetrievalData, max_queries: int | None, max_docs: int | None, seed: int = 0):
    """Deterministic subsample: ``max_queries`` queries, the corpus docs they need (judged docs and docs sharing a
    query's id, which ArguAna-style tasks ignore), plus a deterministic sample of other docs up to ``max_docs``."""
    if max_queries is None and max_docs is None:
        return data
    rng = random.Random(seed)
    qids = sorted(data.queries)
    if max_queries is not None and max_queries < len(qids):
        qids = sorted(rng.sample(qids, max_queries))
    needed: set[str] = set()
    for qid in qids:
        needed.update(d for d in data.qrels[qid] if d in data.corpus)
        if qid in data.corpus:
            needed.add(qid)
    others = sorted(set(data.corpus) - needed)
    if max_docs is None:
        keep = needed | set(others)
    else:
        room = max(0, max_docs - len(needed))
        keep = needed | set(random.Random(seed + 1).sample(others, min(room, len(others))))
    corpus = {d: data.corpus[d] for d in data.corpus if d in keep}  # keep file order
    queries = {q: data.queries[q] for q in qids}
    qrels = {q: data.qrels[q] for q in qids}
    return RetrievalData(corpus, queries, qrels)


# ---------------------------------------------------------------------------------- classification


@dataclass
class ClassificationSplit:
    text: list[str]
    label: list[str]


def load_classification_csv(path: str | Path) -> ClassificationSplit:
    """CSV with a header containing ``text`` and ``category``, parsed with the csv module."""
    path = Path(path)
    content = _read_text(path)
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise _fail(path, 1, "empty file, expected header text,category") from None
    except csv.Error as exc:
        raise _fail(path, 1, f"CSV error: {exc}") from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    if "text" not in header or "category" not in header:
        raise _fail(path, 1, f"header must contain 'text' and 'category', got {header}")
    ti, ci = header.index("text"), header.index("category")
    texts: list[str] = []
    labels: list[str] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise _fail(path, reader.line_num, f"CSV error: {exc}") from None
        lineno = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise _fail(path, lineno, f"expected {len(header)} columns, got {len(row)}")
        text, cat = row[ti], row[ci].strip()
        if not text.strip():
            raise _fail(path, lineno, "empty text")
        if not cat:
            raise _fail(path, lineno, "empty category")
        texts.append(text)
        labels.append(cat)
    if not texts:
        raise _fail(path, None, "no rows found")
    return ClassificationSplit(texts, labels)


def subsample_split(split: ClassificationSplit, n: int | None, seed: int = 0) -> ClassificationSplit:
    if n is None or n >= len(split.text):
        return split
    idx = sorted(random.Random(seed).sample(range(len(split.text)), n))
    return ClassificationSplit([split.text[i] for i in idx], [split.label[i] for i in idx])
