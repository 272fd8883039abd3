"""``st-backend bench``: plain ST and st_backend in one process, same model, texts and dtype, alternating after
warm-up; outputs checked against each other inside the run, so a fast wrong result is a failure.

Every run times four calls: plain ST's and st_backend's *default call* (``encode(texts)`` / ``predict(pairs)``
exactly as ST's documentation writes them: what a user gets by changing only the import), plain ST at each
``--st-batch-sizes`` (its best is the fair tuned reference), and st_backend tuned (the engine flags given here,
``--batch-size``). ``--latency N`` instead makes N calls of one input each and reports p50 / p99.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..engine.engine import results
from .corpora import load_corpus
from .models import SIZES, build_random_model, template_for
from .report import format_options
from .tasks import TASKS, pairs_shape, query_shape, shape_given

#: What --num-texts, --repeats and --st-batch-sizes default to where they are not given. On CUDA: work enough to
#: keep a GPU busy. Elsewhere (CPU): ``bench --model default`` in under a minute on 2 cores, where the CUDA defaults
#: (20,000 texts, 5 calls, each run 4 times) would take hours; plain ST's default call is its bs=32 already.
GPU_DEFAULTS = {"num_texts": 20000, "repeats": 3, "st_batch_sizes": [32, 256]}
CPU_DEFAULTS = {"num_texts": 256, "repeats": 2, "st_batch_sizes": [32]}


def apply_defaults(args, device: torch.device) -> dict:
    """Set each of --num-texts, --repeats, --st-batch-sizes not given to the device's default; -> those set.
    rank and rerank given both --num-queries and --docs-per-query read that many documents on any device."""
    table = GPU_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    task = getattr(args, "task", None)
    if getattr(args, "num_texts", None) is None and task in ("rank", "rerank") and shape_given(args):
        args.num_texts = args.num_queries * args.docs_per_query  # the shape asked for, not a device default
    if device.type != "cuda" and task == "maxsim":  # it encodes --docs-per-query texts
        table = {**table, "num_texts": max(table["num_texts"], query_shape(args)[1])}
    filled = {}
    for name, value in table.items():
        if getattr(args, name, None) is None:
            setattr(args, name, list(value) if isinstance(value, list) else value)
            filled[name] = value
    return filled


def progress(args, message: str) -> None:
    """One line on stderr as the run goes (stdout carries only the report), unless --quiet."""
    if not getattr(args, "quiet", False):
        print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass
class Side:
    name: str
    seconds: list[float] = field(default_factory=list)
    peak_memory_mb: float | None = None
    output: object = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed(fn, device: torch.device):
    """(fn's output, seconds, peak CUDA memory in MB or None), the device synchronised around the call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return out, elapsed, peak


def padded_tokens(lengths: np.ndarray, batch_size: int) -> int:
    """Tokens plain ST pushes through the model: it sorts by length and pads each batch to its longest."""
    ordered = np.sort(lengths)[::-1]
    return int(
        sum(batch.max() * len(batch) for batch in np.split(ordered, range(batch_size, len(ordered), batch_size)))
    )


def engine_config(args):
    from ..engine.config import EngineConfig

    return EngineConfig(
        max_batch_tokens=args.max_batch_tokens,
        max_batch_sequences=args.max_batch_sequences,
        compile=args.compile,
        attention=args.attention,
        rewrites=args.rewrites,
        tokenizer_threads=args.tokenizer_threads,
        tokenizer_processes=args.tokenizer_processes,
        profile=args.profile,
        packed=not args.fallback,
        cuda_graphs=not args.no_cuda_graphs,
        kernels=() if args.no_kernels else None,
    )


def load_models(args, device: torch.device, dtype: torch.dtype):
    """(path, plain ST model, st_backend tuned, st_backend with default settings) for ``args.task``."""
    import sentence_transformers

    import st_backend

    from ..default_model import resolve_model
    from ..engine.config import EngineConfig

    path = (
        build_random_model(args.model, args.task, args.max_length) if args.model in SIZES else resolve_model(args.model)
    )
    task = TASKS[args.task]
    template = template_for(args.model) if args.task in ("rerank", "rank") else None
    plain_kwargs = {"processor_kwargs": {"chat_template": template}} if template else {}
    fast_kwargs = {"chat_template": template} if template else {}
    plain = getattr(sentence_transformers, task.plain_class)(path, device=str(device), **plain_kwargs).to(dtype)
    tuned = engine_config(args)
    fast = getattr(st_backend, task.plain_class)(path, device=str(device), engine=tuned, **fast_kwargs).to(dtype)
    default = fast
    untuned = EngineConfig(
        packed=not args.fallback, cuda_graphs=not args.no_cuda_graphs, kernels=() if args.no_kernels else None
    )
    if tuned != untuned:
        default = getattr(st_backend, task.plain_class)(path, device=str(device), engine=untuned, **fast_kwargs)
        default = default.to(dtype)
    if args.max_seq_length:
        for model in {id(m): m for m in (plain, fast, default)}.values():
            model.max_seq_length = args.max_seq_length
    return path, plain, fast, default


def run_bench(args) -> dict:
    import sentence_transformers

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    filled = apply_defaults(args, device)
    cpu_defaults = filled if device.type != "cuda" else {}
    if cpu_defaults:
        progress(
            args, f"CPU defaults (a quick run; give these options for a longer one): {format_options(cpu_defaults)}"
        )
    if args.task == "maxsim":
        from .maxsim import run_maxsim

        return {**run_maxsim(args, device, dtype), "cpu_defaults": cpu_defaults}
    task = TASKS[args.task]
    progress(args, f"reading {args.num_texts} texts of corpus {args.texts or args.corpus}")
    texts = load_corpus(args.texts or args.corpus, args.num_texts, args.data_dir, args.long_tokens)
    inputs = task.inputs(texts, args)
    progress(args, f"loading {args.model} on {device} ({str(dtype).replace('torch.', '')})")
    path, plain, fast, default = load_models(args, device, dtype)
    report = {
        "model": args.model,
        "task": args.task,
        "corpus": args.texts or args.corpus,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "versions": {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__},
        "inputs": len(inputs),
        "max_seq_length": getattr(fast, "max_seq_length", None),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k != "fn"},
        "cpu_defaults": cpu_defaults,
    }
    if args.latency:
        progress(args, f"{args.latency} calls of one input each, per side")
        timings = latency(task, plain, default, inputs, args.latency, device)
        return {**report, **timings, "engine": describe(default, args.task)}
    lengths = np.asarray(task.tokens(fast, inputs))
    n_tokens = int(lengths.sum())
    calls = {"plain ST default call": lambda: task.default_call(plain, inputs)}
    for bs in args.st_batch_sizes:
        calls[f"plain ST bs={bs}"] = lambda bs=bs: task.tuned_call(plain, inputs, bs)
    calls["st_backend default call"] = lambda: task.default_call(default, inputs)
    calls["st_backend tuned"] = lambda: task.tuned_call(fast, inputs, args.batch_size)
    sides = {name: Side(name) for name in calls}
    profile = counted = None
    first = {}
    runs, run = len(calls) * (1 + args.repeats), 0
    progress(
        args,
        f"{len(inputs)} {task.unit}, {n_tokens} tokens: {len(calls)} calls, a warm-up and {args.repeats} timed each",
    )
    for name, fn in calls.items():  # warm-up (and compile): the first call's seconds are reported too
        first[name] = timed(fn, device)[1]
        run += 1
        progress(args, f"[{run}/{runs}] warm-up  {name:24s} {first[name]:8.3f}s")
    for repeat in range(args.repeats):
        for name, fn in calls.items():
            with results() as done:
                out, sec, peak = timed(fn, device)
            run += 1
            progress(args, f"[{run}/{runs}] run {repeat + 1}/{args.repeats} {name:24s} {sec:8.3f}s")
            if name == "st_backend tuned" and done:
                profile = done[-1].profile
            if name == "st_backend default call":
                counted = layer_tokens(done)
            sides[name].seconds.append(sec)
            sides[name].peak_memory_mb = peak
            sides[name].output = out
            del out
        gc.collect()
    shaped = args.task == "rerank" and shape_given(args)  # several queries' documents, interleaved
    plain_sizes = [f"plain ST bs={bs}" for bs in args.st_batch_sizes]
    best = min(plain_sizes, key=lambda name: sides[name].median)
    threshold = 0.999 if dtype != torch.float32 else 0.99999
    fidelity = {}
    for label, ref, got in (
        ("default call", "plain ST default call", "st_backend default call"),
        ("tuned", best, "st_backend tuned"),
    ):
        name, value = task.compare(sides[ref].output, sides[got].output)
        fidelity[label] = {"metric": name, "value": value}
    report.update(
        {
            "tokens": n_tokens,
            "shape": pairs_shape(inputs) if args.task == "rank" or shaped else None,
            "layer_tokens": counted,
            "engine": describe(fast, args.task),
            "attention_backend": describe(fast, args.task).get("attention_backend", "ST's own path"),
            "rewrites": describe(fast, args.task).get("rewrites", {}),
            "tokenizer_processes": fast.engine_config.processes(device),
            "padding_tokens_avoided": padded_tokens(lengths, 32) - n_tokens,
            "rows": {
                name: {
                    "seconds": s.median,
                    "tokens_per_s": n_tokens / s.median,
                    "inputs_per_s": len(inputs) / s.median,
                    "peak_mb": s.peak_memory_mb,
                    "first_call_seconds": first[name],
                }
                for name, s in sides.items()
            },
            "best_plain_batch_size": int(best.split("=")[1]),
            "speedup_default_call": sides["plain ST default call"].median / sides["st_backend default call"].median,
            "speedup": sides[best].median / sides["st_backend tuned"].median,
            "default_share_of_tuned": sides["st_backend tuned"].median / sides["st_backend default call"].median,
            "fidelity": {
                **fidelity,
                "threshold": threshold,
                "ok": all(f["value"] >= threshold for f in fidelity.values()),
            },
            "profile_of_last_st_backend_run": profile,
        }
    )
    return report


def latency(task, plain, fast, inputs, calls: int, device: torch.device) -> dict:
    """``calls`` default calls of one input each, alternating sides (which goes first alternates too)."""
    one = [inputs[i % len(inputs)] for i in range(calls)]
    wrap = (lambda x: x) if isinstance(one[0], str) else (lambda x: [x])  # encode(text); predict([pair])
    for x in one[:10]:
        task.default_call(plain, wrap(x)), task.default_call(fast, wrap(x))
    seconds = {"plain ST": [], "st_backend": []}
    for i, x in enumerate(one):
        order = (("plain ST", plain), ("st_backend", fast)) if i % 2 else (("st_backend", fast), ("plain ST", plain))
        for name, model in order:
            seconds[name].append(timed(lambda m=model, x=x: task.default_call(m, wrap(x)), device)[1])
    rows = {
        name: {"p50_ms": 1e3 * float(np.percentile(s, 50)), "p99_ms": 1e3 * float(np.percentile(s, 99))}
        for name, s in seconds.items()
    }
    ok = all(rows["st_backend"][k] <= rows["plain ST"][k] for k in ("p50_ms", "p99_ms"))
    return {"latency": rows, "calls": calls, "fidelity": {"ok": True}, "latency_ok": ok}


def layer_tokens(calls: list) -> dict | None:
    """Tokens in the rows of one timed call's engine calls (after rendering and truncation) against those that ran
    through the layers (a shared prefix once per call), and forward / rows; None where the call ran ST's own path
    (no engine call)."""
    if not calls:
        return None
    rows, forward = sum(c.row_tokens for c in calls), sum(c.forward_tokens for c in calls)
    return {"row_tokens": rows, "forward_tokens": forward, "forward_share": forward / rows if rows else None}


def task_engine(fast, task: str):
    """The engine serving the task's calls, or the reason they run ST's own path."""
    return fast.engine() if task in ("rerank", "rank") else fast.engine_for("document" if task == "colbert" else None)


def describe(fast, task: str) -> dict:
    """The engine's own description of what it runs (attention backend, rewrites, budget, ...)."""
    engine = task_engine(fast, task)
    return {"st_path": engine} if isinstance(engine, str) else engine.describe(fast.device)
