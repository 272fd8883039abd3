"""An MTEB run, plain ST and st_backend side by side, on a local STS task (offline, embedded default model).

The pairs below are a small built-in sample in the STS Benchmark layout; point `python -m mteb_eval --sts`
at ../shared/data/stsbenchmark/sts-test.csv (or add --retrieval / --classification) for the real tasks.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # mteb_eval is a repo-level tool

from _samples import STS_SAMPLE  # noqa: E402

from mteb_eval.runner import compare, format_table  # noqa: E402
from mteb_eval.tasks import sts_task  # noqa: E402
from st_backend.default_model import default_model_path  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "sts-sample.csv"
    path.write_text(
        "".join(f"sample\tbuilt-in\t2026\t{i:04d}\t{s}\t{a}\t{b}\n" for i, (s, a, b) in enumerate(STS_SAMPLE)), "utf-8"
    )
    report = compare(default_model_path(), [sts_task(path)])
    print(format_table(report))
