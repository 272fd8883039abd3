"""MTEB 2.x evaluation of plain sentence-transformers and st_backend side by side.

``python -m mteb_eval --model default --sts FILE --retrieval DIR --classification DIR --out DIR`` runs real
``mteb.evaluate`` on local tasks (STS Benchmark file, BEIR directory, CSV classification) or hub tasks (``--tasks``)
with both backends and prints score, difference, wall time and speedup per task. ``--model-type SparseEncoder``
(default: the type saved with the model) compares SPLADE models the same way.
"""

from .loaders import load_classification_csv, load_retrieval, load_sts
from .runner import compare, format_table

__all__ = ["compare", "format_table", "load_classification_csv", "load_retrieval", "load_sts"]
