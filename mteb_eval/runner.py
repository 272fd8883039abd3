"""Run the same MTEB tasks with plain sentence-transformers and with st_backend; compare scores and wall time."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

BACKENDS = ("sentence_transformers", "st_backend")
#: The model classes compared, by ST's ``model_type`` (config_sentence_transformers.json): each backend has a class
#: of that name, and mteb wraps either (SparseEncoder through its SparseEncoderWrapper, sparse similarity kept).
MODEL_TYPES = ("SentenceTransformer", "SparseEncoder")
#: ``--model SIZE`` (a bench size, as ``st-backend bench --model``) builds random weights; the bench task per type.
RANDOM_TASKS = {"SentenceTransformer": "embed", "SparseEncoder": "sparse"}


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


def lexical_splade(path: str) -> str:
    """Reshape a random-weight SPLADE model (st_backend.bench's) in place so that retrieval with it is far above
    chance, so that equal scores on both sides mean something. Plain random weights give near-dense vectors (most
    of the vocabulary active for every text) whose dot products rank the same long documents first for every
    query: nDCG@10 0.0 on 30 ArguAna queries over 300 documents. Still random weights, three changes: the MLM decoder bias at -3.5 sigma of its logits
    (a few dozen vocabulary entries per token), token-type embeddings off and position embeddings x0.1 (a token's
    entries depend on the token more than on where it is), cosine similarity (no length bias)."""
    import torch
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(path, device="cpu")
    mlm = model[0].auto_model
    config = mlm.config
    # logit = LayerNorm output (unit variance per dim) . tied word embedding (std initializer_range)
    bias = -3.5 * config.initializer_range * config.hidden_size**0.5
    embeddings = getattr(mlm.base_model, "embeddings", None)
    head = mlm.get_output_embeddings()
    with torch.no_grad():
        head.bias.fill_(bias)
        for module in mlm.modules():  # BERT keeps a second copy of the decoder bias beside the decoder
            if getattr(module, "decoder", None) is head and isinstance(getattr(module, "bias", None), torch.Tensor):
                module.bias.fill_(bias)
        if getattr(embeddings, "token_type_embeddings", None) is not None:
            embeddings.token_type_embeddings.weight.zero_()
        if getattr(embeddings, "position_embeddings", None) is not None:
            embeddings.position_embeddings.weight.mul_(0.1)
    model.similarity_fn_name = "cosine"
    staging = f"{path}.lexical"  # saved beside, then swapped: the loaded weights may be memory-mapped
    model.save(staging)
    del model, mlm
    shutil.rmtree(path)
    os.rename(staging, path)
    return path


def model_type_of(path: str) -> str:
    """The saved ``model_type`` of a model folder; SentenceTransformer when absent (models saved before ST 5)."""
    try:
        saved = json.loads((Path(path) / "config_sentence_transformers.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        saved = None
    return saved if saved in MODEL_TYPES else "SentenceTransformer"


def load_model(backend: str, path: str, device: str = "cpu", model_type: str = "SentenceTransformer"):
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}; known: {', '.join(MODEL_TYPES)}")
    if backend == "sentence_transformers":
        import sentence_transformers as module
    elif backend == "st_backend":
        import st_backend as module
    else:
        raise ValueError(f"unknown backend {backend!r}")
    return getattr(module, model_type)(path, device=device)


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
    model_type: str | None = None,
) -> dict[str, Any]:
    """Evaluate every task with both backends. Returns a JSON-able dict with rows and the full score dicts.
    ``model_type`` (one of MODEL_TYPES) defaults to the one saved with the model."""
    model_type = model_type or model_type_of(model_path)
    for task in tasks:  # load (and validate) every task once, shared by both runs
        if not task.data_loaded:
            task.load_data()
    per_backend: dict[str, dict[str, tuple[dict, float]]] = {}
    load_times: dict[str, float] = {}
    for backend in backends:
        t0 = time.perf_counter()
        model = load_model(backend, model_path, device, model_type)
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
        "model_type": model_type,
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
    p.add_argument(
        "--model",
        default="default",
        help="model path, 'default' (embedded all-MiniLM-L6-v2) or a bench size such as bert-base (random weights "
        "on the MiniLM tokenizer, built in a temporary folder, as st-backend bench --model)",
    )
    p.add_argument(
        "--model-type",
        choices=MODEL_TYPES,
        help="model class on both sides (default: the one saved with the model; SentenceTransformer for a size)",
    )
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
    from st_backend.bench.models import SIZES, build_random_model
    from st_backend.default_model import resolve_model

    try:
        tasks = build_tasks(args)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    random_root = None
    if args.model in SIZES and not os.path.exists(args.model):
        model_type = args.model_type or "SentenceTransformer"
        try:
            model_path = build_random_model(args.model, RANDOM_TASKS[model_type])
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from exc
        # the whole mkdtemp folder it was built in (hundreds of MB at base size)
        tmp = Path(tempfile.gettempdir())
        random_root = tmp / Path(model_path).relative_to(tmp).parts[0]
    else:
        model_path = resolve_model(args.model)
        model_type = args.model_type or model_type_of(model_path)
    try:
        if random_root is not None and model_type == "SparseEncoder":
            lexical_splade(model_path)
        report = compare(model_path, tasks, batch_size=args.batch_size, device=args.device, model_type=model_type)
    finally:
        if random_root is not None:
            shutil.rmtree(random_root, ignore_errors=True)
    if random_root is not None:  # the temporary folder is gone: name the size
        reshaped = ", reshaped by lexical_splade" if model_type == "SparseEncoder" else ""
        report["model"] = f"{args.model} (random weights{reshaped})"
    table = format_table(report)
    print(table)
    print("model load s: " + ", ".join(f"{k}={v:.1f}" for k, v in report["model_load_s"].items()))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
        (out / "results.md").write_text(
            f"# MTEB: plain ST vs st_backend\n\nmodel: `{report['model']}` ({model_type})\n\n{table}\n"
        )
        print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0
