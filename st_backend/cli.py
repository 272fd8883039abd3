"""``st-backend info | compare | bench | serve | encode``."""

from __future__ import annotations

import argparse
import json
import sys
import time

SAMPLE_TEXTS = [
    "A man is playing a guitar.",
    "A woman is slicing an onion.",
    "The new movie is awesome and everyone loved it.",
    "The cat sits outside on the mat.",
    "Stock markets fell sharply on Monday after the announcement.",
    "How do I reset my bank card PIN?",
    "",
    "Sentence embeddings map text to vectors; similar meanings land close together. " * 12,
]


def sts_spearman(model, s1: list[str], s2: list[str], gold: list[float], batch_size: int = 32) -> float:
    """Spearman correlation of cosine similarity against the gold scores."""
    from scipy.stats import spearmanr

    a = model.encode(s1, batch_size=batch_size, convert_to_tensor=True)
    b = model.encode(s2, batch_size=batch_size, convert_to_tensor=True)
    cos = model.similarity_pairwise(a, b) if model.similarity_fn_name == "cosine" else None
    if cos is None:
        import torch.nn.functional as F

        cos = F.cosine_similarity(a, b)
    return float(spearmanr(cos.cpu().numpy(), gold).statistic)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def cmd_info(args) -> int:
    from .info import format_info, info

    report = info(device=args.device, xformers_torch_ops=args.xformers_torch_ops, model=args.model)
    print(json.dumps(report, indent=2) if args.json else format_info(report))
    return 0


def cmd_compare(args) -> int:
    """Plain ST and st_backend on the same model and texts: fidelity, time, and STS Spearman if given."""
    import numpy as np
    import sentence_transformers

    from . import EngineConfig, SentenceTransformer
    from .default_model import resolve_model

    path = resolve_model(args.model)
    plain = sentence_transformers.SentenceTransformer(path, device=args.device)
    fast = SentenceTransformer(
        path, device=args.device, engine=EngineConfig(attention=args.attention, dtype=None)
    )  # ST's own dtype: a fidelity check
    if args.sts:
        from .bench.corpora import read_sts

        s1, s2, gold = read_sts(args.sts)
        texts = s1 + s2
    elif args.texts:
        with open(args.texts, encoding="utf-8") as f:
            texts = [line.rstrip("\n") for line in f]
    else:
        texts = SAMPLE_TEXTS
    for model in (plain, fast):  # warm-up
        model.encode(texts[: args.batch_size], batch_size=args.batch_size)
    ref, t_plain = _timed(lambda: plain.encode(texts, batch_size=args.batch_size))
    got, t_fast = _timed(lambda: fast.encode(texts, batch_size=args.batch_size))
    cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    engine = fast.engine_for(None)
    backend = engine if isinstance(engine, str) else engine.runner(fast.device).backend.name
    print(f"model {args.model} ({path}) on {fast.device}")
    print(f"texts {len(texts)}, embedding dim {got.shape[1]}, attention backend: {backend}")
    print(f"fidelity: min cosine {cos.min():.7f}, max abs diff {np.abs(ref - got).max():.2e}")
    print(f"time: plain ST {t_plain:.3f}s, st_backend {t_fast:.3f}s, speedup {t_plain / t_fast:.2f}x")
    if args.sts:
        sp_plain = sts_spearman(plain, s1, s2, gold, args.batch_size)
        sp_fast = sts_spearman(fast, s1, s2, gold, args.batch_size)
        print(f"STS Spearman: plain ST {sp_plain:.4f}, st_backend {sp_fast:.4f}")
    ok = cos.min() >= args.min_cosine
    print("OK" if ok else f"FAIL: min cosine below {args.min_cosine}")
    return 0 if ok else 1


def cmd_encode(args) -> int:
    import numpy as np

    from . import EngineConfig, SentenceTransformer
    from .default_model import resolve_model

    model = SentenceTransformer(resolve_model(args.model), device=args.device, engine=EngineConfig())
    with open(args.input, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    emb = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=args.normalize)
    np.save(args.output, emb)
    print(f"wrote {emb.shape} to {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .bench import add_parser as add_bench_parser
    from .server.cli import add_parser as add_serve_parser

    parser = argparse.ArgumentParser(prog="st-backend", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions, device, and which attention backends work here")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--xformers-torch-ops", action="store_true", help="allow xformers' PyTorch-kernel operators")
    p.add_argument("--model", default=None, help="also: how this model's tokenizer handles long texts ('default' ok)")
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("compare", help="plain ST vs st_backend on one model: fidelity and time")
    p.add_argument("--model", default="default", help="a model path, or 'default' (embedded all-MiniLM-L6-v2)")
    p.add_argument("--sts", help="an STS Benchmark file (tab-separated) to score Spearman on")
    p.add_argument("--texts", help="a file of texts, one per line")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--attention", default="auto")
    p.add_argument("--min-cosine", type=float, default=0.99999)
    p.set_defaults(fn=cmd_compare)

    add_bench_parser(sub)
    add_serve_parser(sub)

    p = sub.add_parser("encode", help="embed a file of texts (one per line) into a .npy file")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--model", default="default")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--normalize", action="store_true")
    p.set_defaults(fn=cmd_encode)

    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
