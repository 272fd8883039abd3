"""Local MTEB 2.x tasks built from files on disk (no hub access)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from datasets import Dataset, DatasetDict  # noqa: E402
from mteb.abstasks.classification import AbsTaskClassification  # noqa: E402
from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData  # noqa: E402
from mteb.abstasks.sts import AbsTaskSTS  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402

from .loaders import (  # noqa: E402
    ClassificationSplit,
    RetrievalData,
    STSData,
    load_classification_csv,
    load_retrieval,
    load_sts,
    subsample_retrieval,
    subsample_split,
)

_COMMON: dict[str, Any] = {
    "reference": "https://github.com/embeddings-benchmark/mteb",
    "category": "t2t",
    "modalities": ["text"],
    "eval_splits": ["test"],
    "eval_langs": ["eng-Latn"],
    "date": ("2020-01-01", "2020-12-31"),
    "dialect": [],
    "domains": [],
    "task_subtypes": [],
    "license": "not specified",
    "annotations_creators": "human-annotated",
    "sample_creation": "found",
    "bibtex_citation": "",
}


def _metadata(name: str, type_: str, main_score: str, path: str, **extra: Any) -> TaskMetadata:
    args = dict(_COMMON) | extra
    return TaskMetadata(
        name=name,
        description=f"Local {type_} task read from {path}",
        dataset={"path": f"local/{name}", "revision": "local"},
        type=type_,
        main_score=main_score,
        **args,
    )


class LocalSTSTask(AbsTaskSTS):
    """STS Benchmark-layout file; scores 0-5 (like MTEB's STSBenchmark)."""

    min_score = 0
    max_score = 5
    metadata = _metadata("LocalSTS", "STS", "cosine_spearman", "an STS Benchmark file")

    def __init__(self, data: STSData, name: str = "LocalSTS", **kwargs: Any) -> None:
        self._data = data
        self.metadata = self.metadata.model_copy(update={"name": name})
        super().__init__(**kwargs)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        d = self._data
        ds = Dataset.from_dict({"sentence1": d.sentence1, "sentence2": d.sentence2, "score": d.score})
        self.dataset = DatasetDict({"test": ds})
        self.data_loaded = True


class LocalRetrievalTask(AbsTaskRetrieval):
    """BEIR-layout directory. ``ignore_identical_ids`` is set per instance (True for ArguAna-style data)."""

    metadata = _metadata("LocalRetrieval", "Retrieval", "ndcg_at_10", "a BEIR directory")

    def __init__(
        self, data: RetrievalData, name: str = "LocalRetrieval", ignore_identical_ids: bool = True, **kwargs: Any
    ) -> None:
        self._data = data
        self.ignore_identical_ids = ignore_identical_ids
        self.metadata = self.metadata.model_copy(update={"name": name})
        super().__init__(**kwargs)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        d = self._data
        split = RetrievalSplitData(
            queries=Dataset.from_dict({"id": list(d.queries), "text": list(d.queries.values())}),
            corpus=Dataset.from_dict(
                {
                    "id": list(d.corpus),
                    "title": [v["title"] for v in d.corpus.values()],
                    "text": [v["text"] for v in d.corpus.values()],
                }
            ),
            relevant_docs={q: dict(docs) for q, docs in d.qrels.items()},
            top_ranked=None,
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


class LocalClassificationTask(AbsTaskClassification):
    """train.csv / test.csv with columns text, category. Labels become ints (sorted category names)."""

    metadata = _metadata("LocalClassification", "Classification", "accuracy", "a CSV directory", category="t2c")

    def __init__(
        self, train: ClassificationSplit, test: ClassificationSplit, name: str = "LocalClassification", **kwargs: Any
    ) -> None:
        self._train, self._test = train, test
        self.metadata = self.metadata.model_copy(update={"name": name})
        super().__init__(**kwargs)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        names = sorted(set(self._train.label) | set(self._test.label))
        ids = {n: i for i, n in enumerate(names)}
        self.dataset = DatasetDict(
            {
                split: Dataset.from_dict({"text": s.text, "label": [ids[c] for c in s.label]})
                for split, s in (("train", self._train), ("test", self._test))
            }
        )
        self.data_loaded = True


# ----------------------------------------------------------------------------------------- factories


def sts_task(path: str | Path) -> LocalSTSTask:
    path = Path(path)
    return LocalSTSTask(load_sts(path), name=f"LocalSTS[{path.stem}]")


def retrieval_task(
    directory: str | Path,
    max_queries: int | None = None,
    max_docs: int | None = None,
    ignore_identical_ids: bool = True,
) -> LocalRetrievalTask:
    directory = Path(directory)
    data = subsample_retrieval(load_retrieval(directory), max_queries, max_docs)
    return LocalRetrievalTask(data, name=f"LocalRetrieval[{directory.name}]", ignore_identical_ids=ignore_identical_ids)


def classification_task(
    directory: str | Path, max_train: int | None = None, max_test: int | None = None
) -> LocalClassificationTask:
    directory = Path(directory)
    train = subsample_split(load_classification_csv(directory / "train.csv"), max_train)
    test = subsample_split(load_classification_csv(directory / "test.csv"), max_test)
    return LocalClassificationTask(train, test, name=f"LocalClassification[{directory.name}]")
