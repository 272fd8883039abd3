"""The same texts through one process ``encode``, a multi-process pool and Ray Data actors, on CPU, one torch
thread per process: texts/s, tokens/s, and every path's rows checked against one process's.

    python benchmarks/scale_cpu.py --json benchmarks/scale/cpu.json

Texts: ``--sentences`` STS Benchmark sentences (sentence1 and sentence2 of sts-test.csv, then sts-dev.csv) and
``--documents`` ArguAna documents (title + text), shuffled together. Tokens are the model's real input tokens
(truncated at its maximum length, special tokens included). ``--repeats`` rounds run the three paths in turn;
each row gives the best and the median. The pool is started once (its start-up reported apart) and warmed up;
Ray is started once, and each round makes a new actor pool: its time is the span from the first batch any actor
began to the last one finished, so the actors' start-up is left out (``wall_with_actor_start_s`` has it).
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before torch loads: one thread in this process and every child

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def sts_sentences(n: int) -> list[str]:
    out: list[str] = []
    for name in ("sts-test.csv", "sts-dev.csv"):
        for line in (DATA / "stsbenchmark" / name).read_text(encoding="utf-8").splitlines():
            fields = line.split("\t")  # tabs only: sentences hold quotes and commas
            if len(fields) >= 7:
                out += [fields[5], fields[6]]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} STS-B sentences in {DATA / 'stsbenchmark'}; ask for fewer")
    return out[:n]


def arguana_documents(n: int) -> list[str]:
    docs = []
    with gzip.open(DATA / "arguana" / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            docs.append(f"{doc['title']} {doc['text']}".strip())
            if len(docs) == n:
                break
    return docs


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def compare(got, want) -> dict:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    cos = (got * want).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1), 1e-30)
    return {"max_abs_diff": float(np.abs(got - want).max()), "min_cosine": float(cos.min())}


def summary(path: str, processes: int, n: int, tokens: int, runs: list[float], cpu: list[float], **extra) -> dict:
    best = min(runs)
    return {
        "path": path,
        "processes": processes,
        "texts": n,
        "tokens": tokens,
        "best_s": round(best, 3),
        "median_s": round(float(np.median(runs)), 3),
        "runs_s": [round(r, 2) for r in runs],
        "texts_per_s": round(n / best, 1),
        "tokens_per_s": round(tokens / best),
        # Per CPU-second of the processes doing the work: what the path costs, whatever else shares the cores.
        "tokens_per_cpu_s": round(tokens / min(cpu)),
        **extra,
    }


def ray_embed(model_path: str, texts: list[str], actors: int, batch_size: int):
    """-> (embeddings in input order, span of the actors' batches, wall time with the actors' start-up, the
    actors' CPU seconds in their batches)."""
    import pyarrow as pa
    import ray

    from st_backend.adapters.ray import Embed

    class TimedEmbed(Embed):  # when each batch ran, to time the actors' work apart from their start-up
        def __call__(self, batch):
            start, cpu = time.time(), time.process_time()
            out = super().__call__(batch)
            n, cpu = out.num_rows, (time.process_time() - cpu) / out.num_rows  # spread over the rows, summed later
            out = out.append_column("t0", pa.array([start] * n)).append_column("t1", pa.array([time.time()] * n))
            return out.append_column("cpu", pa.array([cpu] * n))

    start = time.perf_counter()
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=4 * actors)
    ds = ds.map_batches(
        TimedEmbed,
        fn_constructor_kwargs={"model": model_path, "device": "cpu"},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
        batch_format="pyarrow",
    )
    rows = sorted(ds.take_all(), key=lambda r: r["id"])
    wall = time.perf_counter() - start
    span = max(r["t1"] for r in rows) - min(r["t0"] for r in rows)
    return np.array([r["embedding"] for r in rows], dtype=np.float32), span, wall, sum(r["cpu"] for r in rows)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (all their threads)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="a model path, or 'default' (all-MiniLM-L6-v2)")
    parser.add_argument("--sentences", type=int, default=4000)
    parser.add_argument("--documents", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="pool workers and Ray actors")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the three paths, interleaved")
    parser.add_argument("--ray-batch-size", type=int, default=256, help="rows per map_batches call")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--json", default=None, help="write the rows and the machine here")
    args = parser.parse_args()

    import sentence_transformers
    import transformers

    import st_backend
    from st_backend import SentenceTransformer
    from st_backend.default_model import resolve_model

    torch.set_num_threads(1)
    texts = sts_sentences(args.sentences) + arguana_documents(args.documents)
    random.Random(0).shuffle(texts)
    model_path = resolve_model(args.model)
    model = SentenceTransformer(model_path, device="cpu")
    lengths = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    tokens = sum(len(ids) for ids in lengths)
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "st_backend": st_backend.__version__,
    }

    model.encode(texts[:200])  # warm-up: engine built, attention backend probed
    pool, pool_start_s = timed(lambda: model.start_multi_process_pool(["cpu"] * args.workers))
    model.encode(texts[:200], pool=pool)  # warm-up in every worker
    ray_init_s = None
    if not args.skip_ray:
        import ray

        versions["ray"] = ray.__version__
        # One CPU beyond the actors' for Ray Data's own tasks (it waits forever for one otherwise).
        _, ray_init_s = timed(lambda: ray.init(num_cpus=args.workers + 1, include_dashboard=False, log_to_driver=False))

    runs: dict[str, list[float]] = {"one process": [], "pool": [], "ray data": []}
    cpu: dict[str, list[float]] = {"one process": [], "pool": [], "ray data": []}  # CPU seconds of the work
    workers = [p.pid for p in pool["processes"]]
    checks: dict[str, dict] = {}
    ray_walls: list[float] = []
    load = [os.getloadavg()[0]]
    try:
        # Interleaved rounds: other work on the machine then weighs on every path alike.
        for _ in range(args.repeats):
            before = time.process_time()
            want, seconds = timed(lambda: model.encode(texts))
            runs["one process"].append(seconds)
            cpu["one process"].append(time.process_time() - before)
            before = cpu_seconds(workers)
            got, seconds = timed(lambda: model.encode(texts, pool=pool))
            runs["pool"].append(seconds)
            cpu["pool"].append(cpu_seconds(workers) - before)
            checks["pool"] = compare(got, want)
            if not args.skip_ray:
                got, span, wall, actor_cpu = ray_embed(model_path, texts, args.workers, args.ray_batch_size)
                runs["ray data"].append(span)
                cpu["ray data"].append(actor_cpu)
                ray_walls.append(round(wall, 2))
                checks["ray data"] = compare(got, want)
            load.append(os.getloadavg()[0])
    finally:
        model.stop_multi_process_pool(pool)
        if not args.skip_ray:
            ray.shutdown()

    n = len(texts)
    rows = [summary("one process", 1, n, tokens, runs["one process"], cpu["one process"])]
    pool_row = summary("pool", args.workers, n, tokens, runs["pool"], cpu["pool"], start_s=round(pool_start_s, 2))
    rows.append({**pool_row, **checks["pool"]})
    if not args.skip_ray:
        rows.append(
            summary(
                "ray data",
                args.workers,
                n,
                tokens,
                runs["ray data"],
                cpu["ray data"],
                ray_init_s=round(ray_init_s, 2),
                wall_with_actor_start_s=ray_walls,
                **checks["ray data"],
            )
        )
    for r in rows:
        extra = {k: v for k, v in r.items() if k not in ("path", "processes", "texts", "tokens")}
        print(f"{r['path']:<12} x{r['processes']}  {extra}")
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": model_path,
        "texts": {"sentences": args.sentences, "documents": args.documents, "total": n, "tokens": tokens},
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
        "load_average_1min": [round(x, 2) for x in load],  # at the start and after each round: other work too
        "versions": versions,
        "rows": rows,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    for r in rows[1:]:
        if r["max_abs_diff"] > 1e-5 or r["min_cosine"] < 0.99999:
            raise SystemExit(f"{r['path']} differs from one process: {r}")


if __name__ == "__main__":
    main()
