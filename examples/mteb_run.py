"""An MTEB run, plain ST and st_backend side by side, on a local STS task (offline, embedded default model).

The pairs below are a small built-in sample in the STS Benchmark layout; point `python -m mteb_eval --sts`
at ../shared/data/stsbenchmark/sts-test.csv (or add --retrieval / --classification) for the real tasks.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # mteb_eval is a repo-level tool

from mteb_eval.runner import compare, format_table  # noqa: E402
from mteb_eval.tasks import sts_task  # noqa: E402
from st_backend.default_model import default_model_path  # noqa: E402

PAIRS = [
    (5.0, "A man is playing a guitar.", "A man plays the guitar."),
    (4.2, "A woman is slicing an onion.", "A woman cuts an onion."),
    (3.0, "A dog runs in the park.", "A dog is playing outside."),
    (1.6, "A cat sits on the mat.", "A dog sleeps on the sofa."),
    (0.2, "The stock market fell sharply.", "A child is eating ice cream."),
    (4.6, "Kids are playing soccer.", "Children play football."),
    (0.8, "He is cooking dinner.", "The plane landed safely."),
    (2.4, "A man rides a horse.", "A person is riding an animal on a beach."),
]

with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "sts-sample.csv"
    path.write_text(
        "".join(f"sample\tbuilt-in\t2026\t{i:04d}\t{s}\t{a}\t{b}\n" for i, (s, a, b) in enumerate(PAIRS)), "utf-8"
    )
    report = compare(default_model_path(), [sts_task(path)])
    print(format_table(report))
