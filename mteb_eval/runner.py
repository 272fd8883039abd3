"""Run the same MTEB tasks with plain sentence-transformers and with st_backend; compare scores and wall time."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

BACKENDS = ("sentence_transformers", "st_backend")


@dataclass
class Row:
    task: str
    metric: str
    plain: float
    backend: float
    diff: float
    plain_s: float
    backend_s: float
    speedup: float


def load_model(backend: str, path: str, device: str = "cpu"):
    if backend == "sentence_transformers":
        from sentence_transformers import SentenceTransformer
    elif backend == "st_backend":
        from st_backend import SentenceTransformer
    else:
        raise ValueError(f"unknown backend {backend!r}")
    return SentenceTransformer(path, device=device)


def evaluate_task(model, task, batch_size: int = 32) -> tuple[dict[str, Any], float]:
    """Run one task through ``mteb.evaluate`` (no cache, nothing written); returns (scores of the first eval split
    and subset, wall seconds)."""
    import mteb

    if not task.data_loaded:
        task.load_data()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        result = mteb.evaluate(
            model,
            task,
            cache=None,
            overwrite_strategy="always",
            show_progress_bar=False,
            encode_kwargs={"batch_size": batch_size, "show_progress_bar": False},
            raise_error=True,
        )
    wall = time.perf_counter() - t0
    (task_result,) = result.task_results
    split = task.metadata.eval_splits[0]
    scores = task_result.scores[split][0]
    return dict(scores), wall


def compare(
    model_path: str,
    tasks: list,
    batch_size: int = 32,
    device: str = "cpu",
    backends: tuple[str, str] = BACKENDS,
) -> dict[str, Any]:
    """Evaluate every task with both backends. Returns a JSON-able dict with rows and the full score dicts."""
    for task in tasks:  # load (and validate) every task once, shared by both runs
        if not task.data_loaded:
            task.load_data()
    per_backend: dict[str, dict[str, tuple[dict, float]]] = {}
    load_times: dict[str, float] = {}
    for backend in backends:
        t0 = time.perf_counter()
        model = load_model(backend, model_path, device)
        load_times[backend] = time.perf_counter() - t0
        per_backend[backend] = {t.metadata.name: evaluate_task(model, t, batch_size) for t in tasks}
        del model
        gc.collect()
    plain_name, backend_name = backends
    rows: list[Row] = []
    for task in tasks:
        name = task.metadata.name
        metric = task.metadata.main_score
        (ps, pt), (bs, bt) = per_backend[plain_name][name], per_backend[backend_name][name]
        p, b = float(ps["main_score"]), float(bs["main_score"])
        rows.append(Row(name, metric, p, b, b - p, pt, bt, pt / bt if bt > 0 else float("nan")))
    return {
        "model": model_path,
        "device": device,
        "batch_size": batch_size,
        "backends": list(backends),
        "model_load_s": load_times,
        "rows": [asdict(r) for r in rows],
        "scores": {b: {name: s for name, (s, _) in per_backend[b].items()} for b in backends},
    }


def format_table(report: dict[str, Any]) -> str:
    header = ["task", "metric", "plain ST", "st_backend", "diff", "plain ST s", "st_backend s", "speedup"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 6) + "|"]
    for r in report["rows"]:
        lines.append(
            f"| {r['task']} | {r['metric']} | {r['plain']:.4f} | {r['backend']:.4f} | {r['diff']:+.2e} | "
            f"{r['plain_s']:.1f} | {r['backend_s']:.1f} | {r['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def build_tasks(args: argparse.Namespace) -> list:
    from . import tasks as local

    out: list = []
    if args.sts:
        out.append(local.sts_task(args.sts))
    if args.retrieval:
        out.append(
            local.retrieval_task(
                args.retrieval,
                max_queries=args.retrieval_max_queries,
                max_docs=args.retrieval_max_docs,
                ignore_identical_ids=not args.keep_identical_ids,
            )
        )
    if args.classification:
        out.append(
            local.classification_task(
                args.classification, max_train=args.classification_max_train, max_test=args.classification_max_test
            )
        )
    if args.tasks:
        import mteb

        out.extend(mteb.get_tasks(tasks=args.tasks))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m mteb_eval",
        description="Run MTEB on one model with plain sentence-transformers and with st_backend; compare.",
    )
    p.add_argument("--model", default="default", help="model path, or 'default' (embedded all-MiniLM-L6-v2)")
    p.add_argument("--sts", metavar="FILE", help="STS Benchmark-layout file (tab-separated, score 0-5)")
    p.add_argument("--retrieval", metavar="DIR", help="BEIR-layout directory (corpus, queries, qrels)")
    p.add_argument("--retrieval-max-queries", type=int, metavar="N", help="deterministic subsample of N queries")
    p.add_argument(
        "--retrieval-max-docs", type=int, metavar="M", help="corpus size cap (needed docs + deterministic sample)"
    )
    p.add_argument(
        "--keep-identical-ids",
        action="store_true",
        help="do not ignore corpus docs whose id equals the query id (default: ignored, as for ArguAna)",
    )
    p.add_argument("--classification", metavar="DIR", help="directory with train.csv and test.csv (text,category)")
    p.add_argument("--classification-max-train", type=int, metavar="N", help="deterministic subsample of train")
    p.add_argument("--classification-max-test", type=int, metavar="N", help="deterministic subsample of test")
    p.add_argument("--tasks", nargs="+", metavar="NAME", help="MTEB task names (need the hub / a warm HF cache)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", metavar="DIR", help="write results.json and results.md here")
    args = p.parse_args(argv)
    if not (args.sts or args.retrieval or args.classification or args.tasks):
        p.error("give at least one of --sts, --retrieval, --classification, --tasks")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("mteb").setLevel(logging.ERROR)
    from st_backend.default_model import resolve_model

    model_path = resolve_model(args.model)
    try:
        tasks = build_tasks(args)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    report = compare(model_path, tasks, batch_size=args.batch_size, device=args.device)
    table = format_table(report)
    print(table)
    print("model load s: " + ", ".join(f"{k}={v:.1f}" for k, v in report["model_load_s"].items()))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
        (out / "results.md").write_text(f"# MTEB: plain ST vs st_backend\n\nmodel: `{model_path}`\n\n{table}\n")
        print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0
