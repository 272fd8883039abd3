"""``st-backend info | compare | bench | serve | encode``."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

#: Edge cases every default ``compare`` run adds to the shipped STS sample's sentences (~12 tokens each): an empty
#: text and a long one (~190 tokens), with a few short ones.
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
#: ``--sts sample``: the STS Benchmark sample shipped inside the package (st_backend/data/sts_sample.tsv).
STS_SAMPLE_NAME = "sample"


class UsageError(Exception):
    """A bad argument or input file, found before any model loads: one line on stderr, exit code 2."""


def _usage_error(command: str, exc: UsageError) -> int:
    print(f"st-backend {command}: error: {exc}", file=sys.stderr)
    return 2


def _file_problem(flag: str, path: str, exc: Exception) -> UsageError:
    """One line naming the argument, the file and what is wrong with it."""
    if isinstance(exc, UnicodeDecodeError):
        why = f"not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at offset {exc.start})"
    elif isinstance(exc, OSError):
        why = exc.strerror or str(exc)
    else:
        why = str(exc)
    return UsageError(f"{flag} {path}: {why}".replace("\n", " "))


def read_text_file(flag: str, path: str) -> list[str]:
    """The texts of a file, one per line (see ``bench.corpora.read_texts``), or a UsageError that says why not."""
    from .bench.corpora import read_texts

    try:
        return read_texts(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise _file_problem(flag, path, exc) from None


def read_sts_file(path: str) -> tuple[str, list[str], list[str], list[float]]:
    """(what was read, sentences 1, sentences 2, gold scores) of ``--sts PATH`` or ``--sts sample``."""
    from .bench.corpora import read_sts

    if path == STS_SAMPLE_NAME:  # a file of that name: ./sample
        from .data import STS_SAMPLE

        label, path = f"the STS sample shipped with st-backend ({STS_SAMPLE.name})", str(STS_SAMPLE)
    else:
        label = path
    try:
        s1, s2, gold = read_sts(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problem = _file_problem("--sts", path, exc)
        if isinstance(exc, FileNotFoundError):
            problem = UsageError(f"{problem} (--sts {STS_SAMPLE_NAME}: the STS sample shipped with st-backend)")
        raise problem from None
    if not gold:
        raise UsageError(f"--sts {path}: no rows")
    return label, s1, s2, gold


def default_compare_texts() -> list[str]:
    """compare's texts when none are given: the shipped STS sample's sentences (both columns) and SAMPLE_TEXTS."""
    _, s1, s2, _ = read_sts_file(STS_SAMPLE_NAME)
    return s1 + s2 + SAMPLE_TEXTS


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
    try:  # the inputs first: a bad path fails in a line, before a model loads
        if args.repeats < 1:
            raise UsageError(f"--repeats {args.repeats}: give 1 or more")
        if args.sts:
            source, s1, s2, gold = read_sts_file(args.sts)
            texts = s1 + s2
        elif args.texts:
            source, texts = args.texts, read_text_file("--texts", args.texts)
            if not texts:
                raise UsageError(f"--texts {args.texts}: the file is empty")
        else:
            source, texts = "the STS sample shipped with st-backend, and 8 edge cases", default_compare_texts()
    except UsageError as exc:
        return _usage_error("compare", exc)

    import numpy as np
    import sentence_transformers

    from . import EngineConfig, SentenceTransformer
    from .default_model import resolve_model

    path = resolve_model(args.model)
    plain = sentence_transformers.SentenceTransformer(path, device=args.device)
    fast = SentenceTransformer(
        path, device=args.device, engine=EngineConfig(attention=args.attention, dtype=None)
    )  # ST's own dtype: a fidelity check
    for model in (plain, fast):  # warm-up
        model.encode(texts[: args.batch_size], batch_size=args.batch_size)
    seconds = {"plain": [], "fast": []}
    for _ in range(args.repeats):  # alternating, so that a slow spell of the machine hits both sides
        ref, sec = _timed(lambda: plain.encode(texts, batch_size=args.batch_size))
        seconds["plain"].append(sec)
        got, sec = _timed(lambda: fast.encode(texts, batch_size=args.batch_size))
        seconds["fast"].append(sec)
    t_plain, t_fast = statistics.median(seconds["plain"]), statistics.median(seconds["fast"])
    cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    engine = fast.engine_for(None)
    backend = engine if isinstance(engine, str) else engine.runner(fast.device).backend.name
    print(f"model {args.model} ({path}) on {fast.device}")
    print(f"texts {len(texts)} from {source}, embedding dim {got.shape[1]}, attention backend: {backend}")
    print(f"fidelity: min cosine {cos.min():.7f}, max abs diff {np.abs(ref - got).max():.2e}")
    runs = f"median of {args.repeats} runs" if args.repeats > 1 else "1 run"
    print(f"time ({runs}): plain ST {t_plain:.3f}s, st_backend {t_fast:.3f}s, speedup {t_plain / t_fast:.2f}x")
    if args.sts:
        sp_plain = sts_spearman(plain, s1, s2, gold, args.batch_size)
        sp_fast = sts_spearman(fast, s1, s2, gold, args.batch_size)
        print(f"STS Spearman ({len(gold)} pairs): plain ST {sp_plain:.4f}, st_backend {sp_fast:.4f}")
    ok = cos.min() >= args.min_cosine
    print("OK" if ok else f"FAIL: min cosine below {args.min_cosine}")
    return 0 if ok else 1


def cmd_encode(args) -> int:
    try:  # the input and the output's folder first: a bad path fails in a line, before the model loads
        texts = read_text_file("input", args.input)
        if not texts:
            raise UsageError(f"input {args.input}: the file is empty")
        folder = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(folder):
            raise UsageError(f"output {args.output}: no such folder {folder}")
    except UsageError as exc:
        return _usage_error("encode", exc)

    import numpy as np

    from . import EngineConfig, SentenceTransformer
    from .default_model import resolve_model

    model = SentenceTransformer(resolve_model(args.model), device=args.device, engine=EngineConfig())
    emb = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=args.normalize)
    output = args.output if args.output.endswith(".npy") else args.output + ".npy"  # np.save adds it
    np.save(output, emb)
    print(f"wrote {emb.shape} to {output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    inputs = p.add_mutually_exclusive_group()
    inputs.add_argument(
        "--sts",
        metavar="PATH",
        help="an STS Benchmark file (tab-separated: genre, file, year, id, score, sentence1, sentence2) to also "
        f"score Spearman on, or '{STS_SAMPLE_NAME}' for the 250 pairs shipped with st-backend (a file named "
        f"{STS_SAMPLE_NAME}: ./{STS_SAMPLE_NAME})",
    )
    inputs.add_argument(
        "--texts",
        metavar="PATH",
        help="a UTF-8 file of texts, one per line, read as encode reads its input "
        "(default: the shipped STS sample's 500 sentences and 8 edge cases)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="batch_size of both sides' encode calls (default 32)")
    p.add_argument("--attention", default="auto", help="st_backend's attention backend (default: the probe's choice)")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed runs of each side, alternating; the median (default 3)"
    )
    p.add_argument(
        "--min-cosine", type=float, default=0.99999, help="fail (exit 1) below this cosine of any row (default 0.99999)"
    )
    p.set_defaults(fn=cmd_compare)

    add_bench_parser(sub)
    add_serve_parser(sub)

    p = sub.add_parser(
        "encode",
        help="embed a file of texts (one per line) into a .npy file",
        description="Embed a UTF-8 text file, one text per line, into a .npy array of shape (lines, dim): row i is "
        "line i. Lines end in \\n or \\r\\n (both are stripped; a final newline adds no row). Blank lines are kept "
        "on purpose, as empty texts (an empty string is a valid input), so that row i stays line i.",
    )
    p.add_argument("input", help="the UTF-8 text file, one text per line; blank lines are kept as empty texts")
    p.add_argument("output", help="the .npy file to write (.npy is appended where the name lacks it)")
    p.add_argument("--model", default="default", help="a model path, or 'default' (embedded all-MiniLM-L6-v2)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per encode batch (default 32)")
    p.add_argument("--normalize", action="store_true", help="write unit-length (L2-normalised) embeddings")
    p.set_defaults(fn=cmd_encode)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
