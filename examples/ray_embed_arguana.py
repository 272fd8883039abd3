"""Embed the ArguAna corpus to Parquet with Ray Data: one st_backend model per actor (st_backend.adapters.ray).

    python examples/ray_embed_arguana.py ../shared/data/arguana/corpus.jsonl.gz --out arguana-embeddings --actors 2

The corpus is BEIR jsonl (``_id``, ``title``, ``text``); each passage is ``title + " " + text`` as BEIR embeds it,
as a document (the model's document prompt, if any). The Parquet files hold ``_id``, ``text`` and ``embedding``
(``fixed_size_list<float32>[dim]``). Without a corpus argument it embeds the first 128 documents of
../shared/data/arguana (a smoke run); ``--limit N`` cuts any corpus. Needs ``pip install "st-backend[ray]"``.
"""

import argparse
import os
import sys
import time
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared/data/arguana/corpus.jsonl.gz"


def embed_corpus(
    corpus: str, out: str, model: str, actors: int, batch_size: int, limit: int | None, actor_cpus: float = 1
) -> int:
    """Embed ``corpus`` into Parquet files under ``out``; returns the number of documents written."""
    import pyarrow.compute as pc
    import ray

    from st_backend.adapters.ray import Embed

    ds = ray.data.read_json(corpus)
    if limit is not None:
        ds = ds.limit(limit)
    # One gzip file reads as one block, and an actor takes whole blocks: cut it so every actor gets work.
    ds = ds.repartition(target_num_rows_per_block=batch_size)

    def passages(batch):  # defined here so Ray ships it by value: workers need not import this script
        text = pc.utf8_trim_whitespace(pc.binary_join_element_wise(batch["title"], batch["text"], " "))
        return batch.select(["_id"]).append_column("text", text)

    ds = ds.map_batches(passages, batch_format="pyarrow")
    ds = ds.map_batches(
        Embed,
        fn_constructor_kwargs={"model": model, "role": "document", "device": "cpu"},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=actor_cpus,
        batch_format="pyarrow",
    )
    ds.write_parquet(out)
    import pyarrow.parquet as pq

    return pq.read_table(out, columns=["_id"]).num_rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", help="corpus.jsonl(.gz); default: a 128-document smoke run")
    parser.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    parser.add_argument("--model", default="default", help="a model path, or 'default' (all-MiniLM-L6-v2)")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="rows per encode call")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        import ray
    except ImportError:
        print('ray is not installed: pip install "st-backend[ray]" to run this example')
        return
    from st_backend.default_model import default_model_path

    corpus, limit = args.corpus, args.limit
    if corpus is None:
        if not DEFAULT_CORPUS.exists():
            print(f"no corpus given and {DEFAULT_CORPUS} is missing: pass a BEIR corpus.jsonl(.gz)")
            return
        corpus, limit = str(DEFAULT_CORPUS), limit or 128
    model = default_model_path() if args.model == "default" else args.model
    out = args.out
    if out is None:
        import tempfile

        out = tempfile.mkdtemp(prefix="arguana-embeddings-")
    # One CPU beyond the actors' for the read and write tasks: without it Ray Data waits for one forever.
    cpus = max(os.cpu_count() or 1, args.actors + 1)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    start = time.perf_counter()
    n = embed_corpus(corpus, out, model, args.actors, args.batch_size, limit)
    seconds = time.perf_counter() - start
    ray.shutdown()
    print(f"{n} documents embedded into {out} in {seconds:.1f}s ({n / seconds:.1f} docs/s, {args.actors} actors)")


if __name__ == "__main__":
    main(sys.argv[1:])
