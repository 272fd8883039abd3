"""``bench --task maxsim``: reranking ``--docs-per-query`` encoded documents per query with ST's ``similarity``
(maxsim over lists of token matrices, padded per chunk) against st_backend's packed MaxSim on the same
embeddings."""

from __future__ import annotations

import numpy as np
import torch

from .corpora import load_corpus, synthetic_corpus
from .models import SIZES, build_random_model
from .tasks import query_shape


def run_maxsim(args, device: torch.device, dtype: torch.dtype) -> dict:
    import sentence_transformers

    from .. import MultiVectorEncoder
    from ..default_model import resolve_model
    from ..late_interaction import PackedEmbeddings
    from .run import Side, engine_config, progress, timed

    path = (
        build_random_model(args.model, "maxsim", args.max_length) if args.model in SIZES else resolve_model(args.model)
    )
    texts = load_corpus(args.texts or args.corpus, args.num_texts, args.data_dir, args.long_tokens)
    num_queries, per_query = query_shape(args)
    progress(args, f"loading {args.model} on {device}; encoding {min(len(texts), per_query)} documents")
    fast = MultiVectorEncoder(path, device=str(device), engine=engine_config(args)).to(dtype)
    plain = sentence_transformers.MultiVectorEncoder(path, device=str(device)).to(dtype)
    docs = fast.encode_document(texts[:per_query], batch_size=args.batch_size)
    queries = fast.encode_query(synthetic_corpus(num_queries, median_words=6, sigma=0.3, seed=1))
    packed = PackedEmbeddings.from_list(docs)

    def plain_call():
        return torch.stack([plain.similarity(q, docs)[0] for q in queries])

    def fast_call():
        return torch.stack([fast.similarity(q, packed)[0] for q in queries])

    progress(args, f"{len(queries)} queries x {len(docs)} documents: a warm-up and {args.repeats} timed runs per side")
    plain_call(), fast_call()
    ours, theirs = Side("st_backend"), Side("plain ST")
    for repeat in range(args.repeats):
        progress(args, f"run {repeat + 1}/{args.repeats}")
        ref, sec, peak = timed(plain_call, device)
        theirs.seconds.append(sec)
        theirs.peak_memory_mb = peak
        got, sec, peak = timed(fast_call, device)
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
