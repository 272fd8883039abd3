"""st_backend's server side by side with infinity-emb, with itself without cross-request batching, and with
in-process ``encode`` on the same texts: requests/s and p50/p99 at each concurrency, for one-sentence and
32-sentence requests, same model (all-MiniLM-L6-v2), OMP_NUM_THREADS=1 for every process.

    OMP_NUM_THREADS=1 python benchmarks/server/compare.py --json compare.json
    # infinity needs its own venv (it pins sentence-transformers < 4): --infinity /work/infinity-venv/bin/infinity_emb

Targets run one after another, each on a fresh server process, in an order rotated per --repeats round so a
busy machine does not always hurt the same one; before and after each point, in-process encode is timed on that
point's texts (vs_inprocess: the server's rows/s over the mean of the two). Each point sends max(--requests / size, concurrency) requests,
and stops sending after --seconds (requests in flight are still answered and timed).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import orjson  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import REPO, cpu_name, run, run_load, sentences, wait_healthy  # noqa: E402
from load import free_port, versions  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
INFINITY = "/work/infinity-venv/bin/infinity_emb"


def model_path() -> str:
    from st_backend.default_model import default_model_path

    return default_model_path()


def launch(target: str, port: int, args) -> tuple[subprocess.Popen, str, str]:
    """(process, embeddings path, health path) for one target, listening on 127.0.0.1:port."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]}
    if target == "infinity":
        env.update(DO_NOT_TRACK="1", INFINITY_ANONYMOUS_USAGE_STATS="0", HF_HUB_OFFLINE="1")
        if args.infinity_pythonpath:  # its own site-packages (it pins sentence-transformers < 4, transformers 4.x)
            env["PYTHONPATH"] = args.infinity_pythonpath
        cmd = [
            *args.infinity.split(),
            "v2",
            "--model-id",
            model_path(),
            "--served-model-name",
            MODEL,
            "--engine",
            "torch",
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-vector-disk-cache",
            "--batch-size",
            "32",
        ]
        log = open(os.path.join(os.environ.get("OUT", "/tmp"), "infinity.log"), "w")  # why it failed, if it does
        return (
            subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT),
            "/embeddings",
            "/health",
        )
    cmd = [
        sys.executable,
        "-m",
        "st_backend.server",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--queue-capacity",
        "4096",
    ]
    cmd += ["--device", args.device]
    if target == "st_backend-no-batching":
        cmd.append("--no-batching")
    return subprocess.Popen(cmd, cwd=REPO, env=env), "/v1/embeddings", "/health"


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def requests_for(texts: list[str], size: int, n: int) -> list[list[str]]:
    return [[texts[(i * size + j) % len(texts)] for j in range(size)] for i in range(n)]


def point(url: str, path: str, batches: list[list[str]], clients: int, seconds: float) -> dict:
    def send(batch):
        return path, orjson.dumps({"model": MODEL, "input": batch, "encoding_format": "float"}), len(batch)

    def check(batch, status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:120]!r}"
        if body.count(b'"index"') != len(batch):
            return "wrong number of embeddings"
        return None

    result = run(run_load(url, batches, clients, send, check, seconds))
    return result.summary()


class InProcess:
    """st_backend's encode in this process (OMP_NUM_THREADS=1), timed on a point's own texts just before and
    just after the point runs, so a machine whose load drifts compares like with like."""

    def __init__(self, device: str = "cpu") -> None:
        from st_backend import SentenceTransformer

        self.model = SentenceTransformer(model_path(), device=device)
        self.model.encode(["warm up"] * 64)

    def rows_per_s(self, batches: list[list[str]], rows: int) -> float:
        texts = [t for b in batches for t in b][:rows]
        start = time.perf_counter()
        self.model.encode(texts)
        return round(len(texts) / (time.perf_counter() - start), 2)


def serve_target(target: str, args, texts: list[str], local: InProcess) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc, path, health = launch(target, port, args)
    started = time.perf_counter()
    try:
        run(wait_healthy(url, 600, health, proc))
        load_s = time.perf_counter() - started
        point(url, path, requests_for(texts, 8, 64), 8, args.seconds)  # warm-up, not reported
        rows = {}
        for size in args.sizes:
            for clients in args.concurrency:
                batches = requests_for(texts, size, max(args.requests // size, clients))
                before = local.rows_per_s(batches, args.inprocess_rows)
                row = point(url, path, batches, clients, args.seconds)
                after = local.rows_per_s(batches, args.inprocess_rows)
                mean = round((before + after) / 2, 2)  # a machine whose speed drifts moves both timings
                row.update(
                    inprocess_before=before,
                    inprocess_after=after,
                    inprocess_rows_per_s=mean,
                    vs_inprocess=round(row["rows_per_s"] / mean, 3),
                )
                rows[f"size{size}-c{clients}"] = row
                print(target, size, clients, row, flush=True)
        return {"startup_s": round(load_s, 1), "points": rows}
    finally:
        stop(proc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default="st_backend,infinity,st_backend-no-batching")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32, 256])
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32])
    p.add_argument("--requests", type=int, default=2048, help="rows per point (requests = rows / size)")
    p.add_argument("--seconds", type=float, default=15.0, help="stop sending after this long per point")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--texts", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--infinity", default=INFINITY, help="the infinity_emb command (a path, or 'python3 -m ...')")
    p.add_argument("--infinity-pythonpath", default=None, help="PYTHONPATH for infinity's own packages")
    p.add_argument("--device", default="cpu", help="where every server and the in-process encode run")
    p.add_argument("--dtype", default="float32", help="infinity's --dtype (st_backend runs the model as saved)")
    p.add_argument("--inprocess-rows", type=int, default=512, help="rows of in-process encode timed per point")
    p.add_argument("--json")
    p.add_argument("--table", metavar="JSON", help="print the markdown table of an earlier --json report and exit")
    args = p.parse_args()
    if args.table:
        with open(args.table) as f:
            print(table(json.load(f)))
        return 0
    targets = [t for t in args.targets.split(",") if t]
    if "infinity" in targets and not shutil.which(args.infinity.split()[0]):
        print(f"infinity not found at {args.infinity}: skipped", file=sys.stderr)
        targets.remove("infinity")
    texts = sentences(args.texts, args.seed)
    local = InProcess(args.device)
    rounds = []
    for r in range(args.repeats):
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        rounds.append({t: serve_target(t, args, texts, local) for t in order})
    report = {
        "command": " ".join(["OMP_NUM_THREADS=" + os.environ["OMP_NUM_THREADS"], "python", *sys.argv]),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "versions": versions(),
        "rounds": rounds,
    }
    print(json.dumps(report, indent=2))
    print(table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def table(report: dict) -> str:
    """Markdown: requests/s (p50 / p99 ms) per target and point, one line per round; in-process encode (timed
    around st_backend's point) and st_backend's share of it."""
    rounds = report["rounds"]
    targets = list(rounds[0])
    head = ["request", "clients", "round", *targets, "in-process encode", "st_backend / in-process"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in rounds[0][targets[0]]["points"]:
        size, clients = key.removeprefix("size").split("-c")
        for i, rnd in enumerate(rounds, start=1):
            cells = []
            for t in targets:
                pt = rnd[t]["points"][key]
                cells.append(f"{pt['requests_per_s']:g} ({pt['p50_ms']:.0f} / {pt['p99_ms']:.0f})")
            ours = rnd.get("st_backend", rnd[targets[0]])["points"][key]
            inproc = f"{ours['inprocess_rows_per_s'] / int(size):.2f} req/s"
            lines.append(
                f"| {size} sentence(s) | {clients} | {i} | "
                + " | ".join(cells)
                + f" | {inproc} | {ours['vs_inprocess']:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
