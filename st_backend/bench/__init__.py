"""``st-backend bench``: plain ST and st_backend side by side in one process (see run.py)."""

from __future__ import annotations

import json
import sys

from .corpora import CORPORA, synthetic_corpus
from .models import RERANK_TEMPLATE, SIZES, build_random_model
from .report import format_report
from .run import CPU_DEFAULTS, GPU_DEFAULTS, run_bench
from .tasks import QUERY_SHAPE_DEFAULTS, shape_problem

__all__ = ["RERANK_TEMPLATE", "SIZES", "add_parser", "build_random_model", "cmd_bench", "run_bench", "synthetic_corpus"]


def cmd_bench(args) -> int:
    problem = shape_problem(args)
    if problem is not None:
        print(f"st-backend bench: error: {problem}", file=sys.stderr)
        return 2
    report = run_bench(args)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return 0 if report["fidelity"]["ok"] else 1


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="plain ST vs st_backend throughput, outputs checked in the same run")
    p.add_argument("--model", default="default", help="a path, 'default', or a random model size: " + ", ".join(SIZES))
    p.add_argument(
        "--task",
        choices=["embed", "rerank", "rank", "colbert", "maxsim", "sparse"],
        default="embed",
        help="embed: SentenceTransformer; rerank: CrossEncoder predict on pairs of different queries, or, given "
        "both --num-queries N and --docs-per-query M, N queries of ~300 characters with M documents each, their "
        "pairs interleaved round-robin (q0 d0, q1 d0, ..., q0 d1, ...) in one predict(pairs) (tuned: "
        "predict(pairs, batch_size=--batch-size)); rank: CrossEncoder rank(query, documents) for --num-queries "
        "queries of ~300 characters with --docs-per-query documents each; colbert: MultiVectorEncoder document "
        "encoding; maxsim: MaxSim reranking of --docs-per-query encoded documents for --num-queries queries; "
        "sparse: SparseEncoder (SPLADE)",
    )
    p.add_argument(
        "--corpus",
        default="synthetic",
        help=f"texts: one of {', '.join(CORPORA)} (sts: STS Benchmark test sentences; arguana: ArguAna documents; "
        "long: --num-texts ArguAna documents joined to ~--long-tokens tokens each), or a file with one text per line",
    )
    p.add_argument("--data-dir", default=None, help="folder with stsbenchmark/ and arguana/ (default ../shared/data)")
    p.add_argument("--long-tokens", type=int, default=30_000, help="tokens per document of --corpus long")
    p.add_argument("--texts", help="a file of texts, one per line (same as --corpus FILE)")
    p.add_argument(
        "--num-texts",
        type=int,
        default=None,
        help=f"texts (or pairs) to run (default: {GPU_DEFAULTS['num_texts']} on CUDA, {CPU_DEFAULTS['num_texts']} on CPU)",
    )
    p.add_argument("--latency", type=int, default=0, help="instead: this many calls of one input each, p50/p99")
    p.add_argument("--max-seq-length", type=int, default=None, help="set model.max_seq_length on every side")
    p.add_argument(
        "--docs-per-query",
        type=int,
        default=None,
        help=f"documents per query of rank and maxsim (default {QUERY_SHAPE_DEFAULTS['docs_per_query']}) and of "
        "rerank's interleaved queries (with --num-queries)",
    )
    p.add_argument(
        "--num-queries",
        type=int,
        default=None,
        help=f"queries of rank and maxsim (default {QUERY_SHAPE_DEFAULTS['num_queries']}); rerank with "
        "--docs-per-query: queries interleaved in one predict. rank and rerank given both read N x M texts unless "
        "--num-texts says otherwise (as many whole queries as the corpus holds)",
    )
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, help="float16 / bfloat16 / float32 (default: fp16 on CUDA, fp32 on CPU)")
    p.add_argument(
        "--st-batch-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="plain ST's batch sizes to time, comma-separated; the best is the tuned reference (default: "
        + f"{','.join(map(str, GPU_DEFAULTS['st_batch_sizes']))} on CUDA, "
        + f"{','.join(map(str, CPU_DEFAULTS['st_batch_sizes']))} on CPU)",
    )
    p.add_argument("--batch-size", type=int, default=4096, help="batch_size of the tuned st_backend call")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="token budget (default: by device)")
    p.add_argument(
        "--compile",
        nargs="?",
        const=True,
        default=False,
        help="st_backend runs its packed forward under torch.compile (optionally: a torch.compile mode)",
    )
    p.add_argument("--attention", default="auto", help="attention backend (default: the probe's choice)")
    p.add_argument(
        "--rewrites",
        type=lambda s: () if s == "none" else tuple(s.split(",")),
        default=None,
        help="graph rewrites under --compile: names, or 'none' (default: those that pay on the device)",
    )
    p.add_argument("--tokenizer-threads", type=int, default=None)
    p.add_argument(
        "--tokenizer-processes",
        type=int,
        default=None,
        help="worker processes (default: one per 4 cores, at most 4, on CUDA)",
    )
    p.add_argument(
        "--fallback",
        action="store_true",
        help="st_backend runs sentence-transformers' own path (EngineConfig(packed=False)): what the wrapper costs",
    )
    p.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="every side of st_backend runs small batches eagerly (EngineConfig(cuda_graphs=False)): what graphs give",
    )
    p.add_argument(
        "--no-kernels",
        action="store_true",
        help="every side of st_backend runs without fused kernels (EngineConfig(kernels=())): what they give",
    )
    p.add_argument("--profile", action="store_true", help="time st_backend's stages (tokenize, pack, GPU, copy back)")
    p.add_argument("--max-batch-sequences", type=int, default=None)
    p.add_argument("--max-length", type=int, default=512, help="max tokens for random-weight models")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"timed runs of every call after its warm-up, the median reported (default: {GPU_DEFAULTS['repeats']} "
        f"on CUDA, {CPU_DEFAULTS['repeats']} on CPU)",
    )
    p.add_argument("--json", help="write the report here")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr (the report still on stdout)")
    p.set_defaults(fn=cmd_bench)
