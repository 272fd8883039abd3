"""Where tokenization time goes: one Rust tokenizer call stream vs threads, with and without the tokenizers
library's own (rayon) parallelism, and the cost of turning encodings into arrays. Prints JSON lines.

    python benchmarks/tokenize_probe.py [model_path]
"""

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def main() -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from st_backend.bench import synthetic_corpus
    from st_backend.default_model import resolve_model

    path = resolve_model(sys.argv[1] if len(sys.argv) > 1 else "default")
    spec = AutoTokenizer.from_pretrained(path).backend_tokenizer.to_str()
    texts = synthetic_corpus(20000)

    def fresh():
        t = Tokenizer.from_str(spec)
        t.no_padding()
        t.enable_truncation(512)
        return t

    def run(name, fn, repeats=3):
        best = min(_time(fn) for _ in range(repeats))
        tokens = sum(len(e) for e in fresh().encode_batch_fast(texts[:2000])) * 10
        print(json.dumps({"case": name, "seconds": round(best, 4), "M_tokens_per_s": round(tokens / best / 1e6, 3)}))

    def _time(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def chunked(threads, chunk, convert):
        toks = [fresh() for _ in range(threads)]

        def work(i):
            enc = toks[i % threads].encode_batch_fast(texts[i * chunk : (i + 1) * chunk])
            if convert == "asarray":
                return [np.asarray(e.ids, dtype=np.int64) for e in enc]
            if convert == "flat":
                ids = [e.ids for e in enc]
                return np.fromiter((x for row in ids for x in row), dtype=np.int64)
            return enc

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range((len(texts) + chunk - 1) // chunk)))

    for par in ("true", "false"):
        os.environ["TOKENIZERS_PARALLELISM"] = par
        run(f"parallelism={par} one call, no conversion", lambda: fresh().encode_batch_fast(texts))
        run(
            f"parallelism={par} one call + asarray",
            lambda: [np.asarray(e.ids) for e in fresh().encode_batch_fast(texts)],
        )
        for threads, chunk in ((8, 2048), (8, 512), (16, 512), (4, 1024)):
            for convert in ("none", "asarray"):
                run(
                    f"parallelism={par} {threads} threads chunk {chunk} convert={convert}",
                    lambda t=threads, c=chunk, v=convert: chunked(t, c, v),
                )
    enc = fresh().encode_batch_fast(texts)
    run("convert only: asarray(e.ids) per row", lambda: [np.asarray(e.ids, dtype=np.int64) for e in enc])
    run("convert only: e.ids lists", lambda: [e.ids for e in enc])
    run("convert only: ids + type_ids", lambda: [(e.ids, e.type_ids) for e in enc])


if __name__ == "__main__":
    main()
