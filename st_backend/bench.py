"""``st-backend bench``: plain ST and st_backend in one process, same model, texts and dtype, alternating after
warm-up; outputs checked against each other inside the run, so a fast wrong result is a failure."""

from __future__ import annotations

import gc
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch

# Random-weight models of real sizes (vocabulary of the embedded model's tokenizer, 30,522).
SIZES = {
    "bert-base": ("bert", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)),
    "bert-large": (
        "bert",
        dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    ),
    "xlm-roberta-large": (
        "xlm-roberta",
        dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    ),
    "modernbert-base": (
        "modernbert",
        dict(hidden_size=768, num_hidden_layers=22, num_attention_heads=12, intermediate_size=1152),
    ),
    "qwen3-0.6b": (
        "qwen3",
        dict(
            hidden_size=1024,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            intermediate_size=3072,
        ),
    ),
}
RERANK_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query. Note that the "
    'answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n<Query>: {{ messages[0]["content"] }}\n'
    '<Document>: {{ messages[1]["content"] }}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n'
)


def build_random_model(size: str, task: str, max_len: int = 512) -> str:
    """Save a random-weight model of a named size, with the embedded model's tokenizer; returns its path."""
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    from .default_model import default_model_path

    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; known: {sorted(SIZES)}")
    model_type, dims = SIZES[size]
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    extra = {"max_position_embeddings": max_len + (2 if model_type == "xlm-roberta" else 0)}
    if model_type == "xlm-roberta":
        extra["pad_token_id"] = 1
    config = AutoConfig.for_model(model_type, vocab_size=tokenizer.vocab_size, **dims, **extra)
    torch.manual_seed(0)
    if task == "rerank" and model_type == "qwen3":
        config.architectures = ["Qwen3ForCausalLM"]
        model = AutoModelForCausalLM.from_config(config)
    elif task == "rerank":
        config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModel.from_config(config)
    path = tempfile.mkdtemp(prefix=f"st_backend_bench_{size}_")
    model.save_pretrained(path)
    tokenizer.model_max_length = max_len
    tokenizer.save_pretrained(path)
    if task == "embed":
        import sentence_transformers
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

        backbone = Transformer(path)
        mode = "lasttoken" if model_type == "qwen3" else "mean"
        modules = [backbone, Pooling(backbone.get_embedding_dimension(), mode), Normalize()]
        sentence_transformers.SentenceTransformer(modules=modules, device="cpu").save(path)
    if task in ("colbert", "maxsim"):
        import sentence_transformers
        from sentence_transformers.base.modules import Dense, Normalize, Transformer
        from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

        backbone = Transformer(path)
        width = backbone.get_embedding_dimension()
        projection = Dense(
            width, 128, bias=False, activation_function=torch.nn.Identity(), module_input_name="token_embeddings"
        )
        modules = [backbone, projection, MultiVectorMask(), Normalize(module_input_name="token_embeddings")]
        sentence_transformers.MultiVectorEncoder(modules=modules, device="cpu").save(path)
    return path


def synthetic_corpus(n: int, median_words: float = 45.0, sigma: float = 0.6, seed: int = 0) -> list[str]:
    """MS MARCO-like passages: lognormal word counts (median ~45 words), words from the embedded vocabulary."""
    from transformers import AutoTokenizer

    from .default_model import default_model_path

    vocab = [w for w in AutoTokenizer.from_pretrained(default_model_path()).get_vocab() if w.isalpha() and w.isascii()]
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.lognormal(np.log(median_words), sigma, size=n).astype(int), 1, 400)
    words = np.array(sorted(vocab))
    return [" ".join(words[rng.integers(0, len(words), size=c)]) for c in counts]


@dataclass
class Side:
    name: str
    seconds: list[float] = field(default_factory=list)
    peak_memory_mb: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _timed(fn, device: torch.device):
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


def run_bench(args) -> dict:
    import sentence_transformers

    from . import CrossEncoder, EngineConfig, MultiVectorEncoder, SentenceTransformer
    from .default_model import resolve_model

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    if args.model in SIZES:
        path = build_random_model(args.model, args.task, args.max_length)
    else:
        path = resolve_model(args.model)
    if args.texts:
        with open(args.texts, encoding="utf-8") as f:
            texts = [line.rstrip("\n") for line in f][: args.num_texts]
    else:
        texts = synthetic_corpus(args.num_texts)
    engine = EngineConfig(
        max_batch_tokens=args.max_batch_tokens,
        max_batch_sequences=args.max_batch_sequences,
        compile=args.compile,
        attention=args.attention,
        rewrites=args.rewrites,
        tokenizer_threads=args.tokenizer_threads,
        tokenizer_processes=args.tokenizer_processes,
        profile=args.profile,
    )

    if args.task == "maxsim":
        return _maxsim_bench(args, path, texts, device, dtype, engine)
    if args.task == "rerank":
        queries = synthetic_corpus(len(texts), median_words=6, sigma=0.3, seed=1)
        inputs = list(zip(queries, texts))
        template = RERANK_TEMPLATE if SIZES.get(args.model, ("",))[0] == "qwen3" else None
        kwargs = {"processor_kwargs": {"chat_template": template}} if template else {}
        plain = sentence_transformers.CrossEncoder(path, device=str(device), **kwargs).to(dtype)
        fast = CrossEncoder(path, device=str(device), chat_template=template, engine=engine)
        fast.to(dtype)

        def call(model, batch_size):
            return model.predict(
                inputs, batch_size=batch_size, activation_fn=torch.nn.Identity(), convert_to_tensor=True
            )

        tokenized = fast.engine().tokenize(inputs, None)
        backend = fast.engine().runner(fast.device).backend.name
        engine_obj = fast.engine()
    elif args.task == "colbert":
        inputs = texts
        plain = sentence_transformers.MultiVectorEncoder(path, device=str(device)).to(dtype)
        fast = MultiVectorEncoder(path, device=str(device), engine=engine)
        fast.to(dtype)

        def call(model, batch_size):
            return torch.cat(model.encode_document(inputs, batch_size=batch_size))

        eng = fast.engine_for("document")
        tokenized = eng.tokenize(inputs, fast.prompts.get("document"), "document")
        backend = eng.runner(fast.device).backend.name
        engine_obj = eng
    else:
        inputs = texts
        plain = sentence_transformers.SentenceTransformer(path, device=str(device)).to(dtype)
        fast = SentenceTransformer(path, device=str(device), engine=engine)
        fast.to(dtype)

        def call(model, batch_size):
            return model.encode(inputs, batch_size=batch_size, convert_to_tensor=True)

        eng = fast.engine_for(None)
        tokenized = eng.tokenize(inputs, None, None)
        backend = eng.runner(fast.device).backend.name
        engine_obj = eng

    n_tokens = int(tokenized.lengths.sum())
    # Warm-up both, then alternate: plain ST at each batch size, st_backend.
    for bs in args.st_batch_sizes:
        call(plain, bs)
    call(fast, args.batch_size)
    sides = {bs: Side(f"plain ST bs={bs}") for bs in args.st_batch_sizes}
    ours = Side("st_backend")
    ref = got = None
    for _ in range(args.repeats):
        for bs in args.st_batch_sizes:
            ref, sec, peak = _timed(lambda bs=bs: call(plain, bs), device)
            sides[bs].seconds.append(sec)
            sides[bs].peak_memory_mb = peak
        got, sec, peak = _timed(lambda: call(fast, args.batch_size), device)
        ours.seconds.append(sec)
        ours.peak_memory_mb = peak
        gc.collect()
    best_bs = min(sides, key=lambda bs: sides[bs].median)
    rows = len(ref) if args.task == "colbert" else len(inputs)  # colbert: one row per kept token
    ref_f, got_f = ref.float().reshape(rows, -1), got.float().reshape(rows, -1)
    if args.task == "rerank":
        fidelity = float(np.corrcoef(ref_f.cpu().numpy().ravel(), got_f.cpu().numpy().ravel())[0, 1])
        fidelity_name = "pearson of raw scores"
    else:
        fidelity = float(torch.nn.functional.cosine_similarity(ref_f, got_f).min())
        fidelity_name = "min cosine"
    threshold = 0.999 if dtype != torch.float32 else 0.99999
    report = {
        "model": args.model,
        "task": args.task,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "versions": {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__},
        "inputs": len(inputs),
        "tokens": n_tokens,
        "attention_backend": backend,
        # Sites each graph rewrite replaced while compiling in this process (a graph taken from Inductor's
        # cache is not rewritten again, and counts 0).
        "rewrites": _rewrite_counts(engine_obj, fast.device),
        "tokenizer_processes": engine.processes(device),
        "padding_tokens_avoided": padded_tokens(tokenized.lengths, best_bs) - n_tokens,
        "plain": {
            bs: {"seconds": s.median, "tokens_per_s": n_tokens / s.median, "peak_mb": s.peak_memory_mb}
            for bs, s in sides.items()
        },
        "best_plain_batch_size": best_bs,
        "st_backend": {"seconds": ours.median, "tokens_per_s": n_tokens / ours.median, "peak_mb": ours.peak_memory_mb},
        "speedup": sides[best_bs].median / ours.median,
        "fidelity": {fidelity_name: fidelity, "threshold": threshold, "ok": fidelity >= threshold},
        "profile_of_last_st_backend_run": engine_obj.last_profile,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k != "fn"},
    }
    return report


def _rewrite_counts(engine_obj, device) -> dict[str, int]:
    rewrite_pass = engine_obj.runner(device).rewrite_pass
    return dict(rewrite_pass.counts) if rewrite_pass is not None else {}


def _maxsim_bench(args, path, texts, device, dtype, engine) -> dict:
    """Reranking ``--docs-per-query`` encoded documents per query: ST's ``similarity`` (maxsim over lists of
    token matrices, padded per chunk) against st_backend's packed MaxSim on the same embeddings."""
    import sentence_transformers

    from . import MultiVectorEncoder
    from .late_interaction import PackedEmbeddings

    fast = MultiVectorEncoder(path, device=str(device), engine=engine)
    fast.to(dtype)
    plain = sentence_transformers.MultiVectorEncoder(path, device=str(device)).to(dtype)
    per_query = args.docs_per_query
    docs = fast.encode_document(texts[:per_query], batch_size=args.batch_size)
    queries = fast.encode_query(synthetic_corpus(args.num_queries, median_words=6, sigma=0.3, seed=1))
    packed = PackedEmbeddings.from_list(docs)

    def plain_call():
        return torch.stack([plain.similarity(q, docs)[0] for q in queries])

    def fast_call():
        return torch.stack([fast.similarity(q, packed)[0] for q in queries])

    plain_call(), fast_call()
    ours, theirs = Side("st_backend"), Side("plain ST")
    for _ in range(args.repeats):
        ref, sec, peak = _timed(plain_call, device)
        theirs.seconds.append(sec)
        theirs.peak_memory_mb = peak
        got, sec, peak = _timed(fast_call, device)
        ours.seconds.append(sec)
        ours.peak_memory_mb = peak
    scored = len(queries) * per_query
    # Relative to the largest score: MaxSim sums one maximum per query token (fp16 maxima differ by an ulp).
    diff = float((ref.float() - got.float()).abs().max() / ref.float().abs().max().clamp(min=1))
    threshold = 1e-5 if dtype == torch.float32 else 1e-3
    pearson = float(np.corrcoef(ref.float().cpu().numpy().ravel(), got.float().cpu().numpy().ravel())[0, 1])
    return {
        "model": args.model,
        "task": "maxsim",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "versions": {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__},
        "queries": len(queries),
        "documents_per_query": per_query,
        "document_tokens": int(packed.values.shape[0]),
        "plain": {"seconds": theirs.median, "docs_per_s": scored / theirs.median, "peak_mb": theirs.peak_memory_mb},
        "st_backend": {"seconds": ours.median, "docs_per_s": scored / ours.median, "peak_mb": ours.peak_memory_mb},
        "speedup": theirs.median / ours.median,
        "fidelity": {
            "max relative score diff": diff,
            "pearson": pearson,
            "threshold": threshold,
            "ok": diff <= threshold,
        },
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k != "fn"},
    }


def format_report(r: dict) -> str:
    if r["task"] == "maxsim":
        return "\n".join(
            [
                f"{r['model']} MaxSim rerank on {r['device']}, {r['dtype']}: {r['queries']} queries x "
                f"{r['documents_per_query']} documents ({r['document_tokens']} document tokens)",
                f"  plain ST similarity  {r['plain']['seconds']:8.3f}s  {r['plain']['docs_per_s']:12.0f} docs/s",
                f"  st_backend packed    {r['st_backend']['seconds']:8.3f}s  {r['st_backend']['docs_per_s']:12.0f} docs/s",
                f"speedup: {r['speedup']:.2f}x; fidelity: max relative score diff {r['fidelity']['max relative score diff']:.2e}, "
                f"pearson {r['fidelity']['pearson']:.6f}: "
                f"{'OK' if r['fidelity']['ok'] else 'FAIL'}",
            ]
        )
    unit = "pairs" if r["task"] == "rerank" else "texts"
    lines = [f"{r['model']} ({r['task']}) on {r['device']}, {r['dtype']}, attention {r['attention_backend']}"]
    if r.get("rewrites"):
        lines[0] += ", rewrites " + ", ".join(f"{name} ({n} sites)" for name, n in r["rewrites"].items())
    lines.append(
        f"{r['inputs']} {unit}, {r['tokens']} tokens; padding tokens avoided vs ST: {r['padding_tokens_avoided']}"
    )
    for bs, p in r["plain"].items():
        lines.append(
            f"  plain ST  bs={bs:<5} {p['seconds']:8.3f}s  {p['tokens_per_s'] / 1e6:6.3f} M tok/s  "
            f"{r['inputs'] / p['seconds']:9.0f} {unit}/s  peak {p['peak_mb'] or 0:8.0f} MB"
        )
    s = r["st_backend"]
    lines.append(
        f"  st_backend         {s['seconds']:8.3f}s  {s['tokens_per_s'] / 1e6:6.3f} M tok/s  "
        f"{r['inputs'] / s['seconds']:9.0f} {unit}/s  peak {s['peak_mb'] or 0:8.0f} MB"
    )
    f = r["fidelity"]
    name = next(k for k in f if k not in ("threshold", "ok"))
    lines.append(f"speedup vs best plain ST (bs={r['best_plain_batch_size']}): {r['speedup']:.2f}x")
    lines.append(f"fidelity: {name} {f[name]:.6f} (>= {f['threshold']}): {'OK' if f['ok'] else 'FAIL'}")
    if r.get("profile_of_last_st_backend_run"):
        lines.append("profile of the last st_backend run (seconds; thread-summed stages can exceed wall):")
        lines += [f"  {k:45s} {v:8.3f}" for k, v in r["profile_of_last_st_backend_run"].items()]
    return "\n".join(lines)


def cmd_bench(args) -> int:
    report = run_bench(args)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return 0 if report["fidelity"]["ok"] else 1


__all__ = ["SIZES", "build_random_model", "cmd_bench", "run_bench", "synthetic_corpus"]
