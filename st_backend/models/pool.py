"""ST's multi-process API (``start_multi_process_pool``, ``encode(pool=...)`` / ``encode(device=[...])``,
``predict(pool=...)``, ``stop_multi_process_pool``) with one packed engine per worker process.

Kept from ST: spawned daemon workers that each get a pickled copy of the model (``__getstate__`` drops the
engines, so every worker builds its own), the model moved to CPU shared memory first, the pool dict's
``"processes"`` list, and ST's ``_inference`` arguments (the worker runs the class's own ``_inference``, so the
engine, never ST's padded path). Changed, because ST's shared queues are unsafe when a worker is killed (a
process killed while it holds a queue's lock blocks every other reader or writer for good) and cut work by a
count of texts:

- one pipe per worker: the parent sends a worker its next chunk only when it has answered the last, so it
  always knows which chunk each worker holds; a dead worker's pipe reads as closed, never blocks.
- chunks are cut by characters (a proxy for tokens, capped at the model's maximum length), longest inputs
  first, each chunk a share of the work left (guided self-scheduling), so the last chunks are small and the
  workers finish together however long or short the texts are. Results come back in input order.
- a worker that dies mid-call has its chunk run again on a live one (once; a chunk that kills two workers fails
  the call, naming it); the call fails with a clear error when no worker is left. Nothing waits forever on a
  dead worker.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing import util as mp_util
from multiprocessing.connection import wait
from typing import Any

import sentence_transformers
import torch
from sentence_transformers.base.model import _move_tensors_to_cpu
from tqdm.autonotebook import tqdm

from . import _fallback

logger = logging.getLogger("st_backend")

PER_INPUT_CHARS = 8  # special tokens and per-sequence work: an empty text is not free
CHARS_PER_TOKEN = 4  # a text is cut at the model's maximum length: it weighs at most 4 chars per token of it
TAIL_CHUNKS_PER_WORKER = 8  # the smallest chunk: 1/8 of one worker's share (the most a worker can finish late)
MIN_CHUNK_CHARS = 4096  # below this a chunk's round trip costs more than it balances
MAX_CHUNK_INPUTS = 5000  # as ST's cap on a chunk
MAX_TRIES = 2  # a chunk runs again once on a live worker when the one running it dies
START_TIMEOUT_S = 900.0  # a worker must load the model and answer within this

_call_ids = itertools.count()


@dataclass
class _Worker:
    process: Any
    conn: Any
    device: str
    busy: tuple[int, int] | None = None  # (call id, chunk id) sent and not answered yet
    alive: bool = True
    last_call: dict = field(default_factory=dict)  # chunks, inputs and chars it answered in the latest call


class _Pipes:
    """Stands where ST's pool keeps its queues, so ST's own ``stop_multi_process_pool`` can close it too."""

    def __init__(self, workers: list[_Worker]) -> None:
        self._workers = workers

    def close(self) -> None:
        for w in self._workers:
            w.conn.close()

    def cancel_join_thread(self) -> None:
        pass


# -- planning ---------------------------------------------------------------------------------------------------


def input_weight(item: Any, max_chars: int | None = None) -> int:
    """Characters of a text or a pair (the texts a model reads), capped at ``max_chars``; other inputs count as
    one short text."""
    if isinstance(item, str):
        chars = len(item)
    elif isinstance(item, (tuple, list)) and all(isinstance(x, str) for x in item):
        chars = sum(len(x) for x in item)
    else:
        chars = 0
    if max_chars is not None:
        chars = min(chars, max_chars)
    return chars + PER_INPUT_CHARS


def plan_chunks(weights: Sequence[int], workers: int, max_inputs: int = MAX_CHUNK_INPUTS) -> list[list[int]]:
    """Input indices per chunk, in the order they are handed out: heaviest inputs first, each chunk about
    1/(2 * workers) of the weight still left, none lighter than 1/(8 * workers) of the total (or
    MIN_CHUNK_CHARS) unless it is the last, none over ``max_inputs`` inputs."""
    order = sorted(range(len(weights)), key=lambda i: -weights[i])
    remaining = sum(weights)
    floor = max(remaining / (workers * TAIL_CHUNKS_PER_WORKER), MIN_CHUNK_CHARS)
    chunks: list[list[int]] = []
    current: list[int] = []
    current_weight = 0
    for i in order:
        current.append(i)
        current_weight += weights[i]
        if current_weight >= max(remaining / (2 * workers), floor) or len(current) >= max_inputs:
            chunks.append(current)
            remaining -= current_weight
            current, current_weight = [], 0
    if current:
        chunks.append(current)
    return chunks


def _max_chars(model) -> int | None:
    for name in ("max_seq_length", "max_length"):
        value = getattr(model, name, None)
        if isinstance(value, int) and value > 0:
            return value * CHARS_PER_TOKEN
    return None


# -- the worker process ----------------------------------------------------------------------------------------


def _engines(model) -> dict[str, Any]:
    """What serves each task in this process: attention backends of the packed engine, or ST's own path."""
    found = model.engines() if hasattr(model, "engines") else {}
    out = {}
    for task, engine in found.items():
        if isinstance(engine, str):
            out[str(task)] = f"ST's own path: {engine}"
        else:
            out[str(task)] = sorted({r.backend.name for r in engine.runners._runners.values()})
    return out


def _describe(model, device: str, handled: dict) -> dict:
    # ``fallbacks``: the reasons this process ran ST's own path (warned once each); empty means all ran packed.
    return {
        "pid": os.getpid(),
        "device": device,
        "threads": torch.get_num_threads(),
        "engines": _engines(model),
        "fallbacks": sorted(_fallback._said),
        **handled,
    }


def _worker(device: str, model, conn, threads: int | None) -> None:
    """Answer the parent's messages until it says stop or its pipe closes."""
    if threads:
        torch.set_num_threads(threads)
    handled = {"chunks": 0, "inputs": 0}
    conn.send(("ready", None, _describe(model, device, handled)))
    while True:
        try:
            kind, tag, payload = conn.recv()
        except (EOFError, OSError):
            kind = "stop"  # the parent is gone
        if kind == "stop":
            # Skip the interpreter's teardown of torch and transformers (seconds per worker). multiprocessing's
            # finalizers still run: they release the semaphores made here (tqdm's lock) from the resource tracker.
            mp_util._exit_function()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        if kind == "info":
            conn.send(("info", tag, _describe(model, device, handled)))
            continue
        inputs, kwargs = payload
        try:
            outputs = _move_tensors_to_cpu(model._inference(inputs, device=device, **kwargs))
            handled["chunks"] += 1
            handled["inputs"] += len(inputs)
            conn.send(("done", tag, outputs))
        except Exception as exc:  # reported to the parent, which raises it; ST logs the traceback here
            _, exc = type(model)._report_worker_failure(tag[1], exc, device)
            conn.send(("error", tag, exc))


# -- the parent -------------------------------------------------------------------------------------------------


def _threads_per_worker(devices: list[str]) -> int | None:
    """CPU workers share the cores (each would otherwise start one thread per core); OMP_NUM_THREADS wins."""
    cpu_workers = sum(torch.device(d).type == "cpu" for d in devices)
    if not cpu_workers or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // cpu_workers)


def _receive(worker: _Worker, timeout: float | None = None) -> tuple | None:
    """The worker's next message; None when it has died (its pipe reads as closed) or ``timeout`` passed."""
    try:
        if timeout is not None and not worker.conn.poll(timeout):
            return None
        return worker.conn.recv()
    except (EOFError, OSError):
        worker.alive = False
        return None


def _dead(worker: _Worker) -> str:
    worker.process.join(timeout=5)
    return f"pid {worker.process.pid} on {worker.device} (exit code {worker.process.exitcode})"


def _drain(worker: _Worker) -> None:
    """Read and drop the answer to a chunk of an earlier call that was interrupted."""
    while worker.alive and worker.busy is not None:
        message = _receive(worker)
        if message is not None and message[0] in ("done", "error"):
            worker.busy = None


def start_pool(model, target_devices: list[str]) -> dict:
    devices = [str(d) for d in target_devices]
    if not devices:
        raise ValueError("start_multi_process_pool needs at least one device, e.g. ['cpu', 'cpu'] or ['cuda:0']")
    logger.info("Starting multi-process pool on devices: %s", ", ".join(devices))
    # As ST: the workers read the weights from CPU shared memory (the model stays on CPU after this).
    model.to("cpu")
    model.share_memory()
    ctx = mp.get_context("spawn")
    threads = _threads_per_worker(devices)
    workers: list[_Worker] = []
    for device in devices:
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_worker, args=(device, model, child, threads), daemon=True)
        process.start()
        child.close()  # the worker holds the only other end: its death reads as a closed pipe
        workers.append(_Worker(process, parent, device))
    pool = {"input": _Pipes(workers), "output": _Pipes(workers), "processes": [w.process for w in workers]}
    pool.update(workers=workers, lock=threading.Lock())
    for w in workers:
        message = _receive(w, timeout=START_TIMEOUT_S)
        if message is None or message[0] != "ready":
            what = (
                f"{_dead(w)} ended" if not w.alive else f"pid {w.process.pid} did not answer in {START_TIMEOUT_S:.0f}s"
            )
            stop_pool(pool)
            raise RuntimeError(
                f"a multi-process pool worker on {w.device} could not load the model: {what}. Its error is printed "
                "above; check that the device exists and the model fits on it."
            )
    return pool


def stop_pool(pool: dict) -> None:
    """Stop every worker (asked first when idle, else SIGTERM; SIGKILL when that fails) and wait for each."""
    workers: list[_Worker] = pool["workers"]
    asked = set()
    for w in workers:
        if w.alive and w.busy is None:
            try:
                w.conn.send(("stop", None, None))
                asked.add(id(w))
            except OSError:
                pass
    for w in workers:
        w.process.join(timeout=5 if id(w) in asked else 0)
        if w.process.exitcode is None:
            w.process.terminate()
            w.process.join(timeout=5)
        if w.process.exitcode is None:
            w.process.kill()
            w.process.join()
        w.alive = False
        w.conn.close()
        w.process.close()
    workers.clear()


def worker_info(pool: dict) -> list[dict]:
    """One dict per live worker: pid, device, torch threads, ``engines`` (task -> attention backends of its
    packed engine, or why it runs ST's own path), ``fallbacks`` (ST-path reasons it warned about) and the
    chunks and inputs it has answered."""
    with pool["lock"]:
        tag = (next(_call_ids), -1)
        out = []
        for w in pool["workers"]:
            _drain(w)
            try:
                w.conn.send(("info", tag, None))
            except OSError:  # died since its last answer
                w.alive = False
            message = _receive(w) if w.alive else None
            if message is not None:
                out.append({**message[2], "last_call": dict(w.last_call)})
        return out


def run_chunks(pool: dict, inputs: list, chunks: list[list[int]], weights: list[int], kwargs: dict, progress) -> list:
    """Each chunk's output, the chunks handed to whichever live worker is free; see the module docstring."""
    call = next(_call_ids)
    workers: list[_Worker] = pool["workers"]
    todo = deque(range(len(chunks)))
    tries = [0] * len(chunks)
    results: dict[int, Any] = {}
    lost: list[str] = []
    for w in workers:
        w.last_call = {"chunks": 0, "inputs": 0, "chars": 0}
    while len(results) < len(chunks):
        for w in workers:
            if w.alive and w.busy is None and todo:
                chunk = todo.popleft()
                try:
                    w.conn.send(("run", (call, chunk), ([inputs[i] for i in chunks[chunk]], kwargs)))
                except OSError:  # died since its last answer
                    w.alive = False
                    lost.append(_dead(w))
                    todo.appendleft(chunk)
                    continue
                w.busy = (call, chunk)
                tries[chunk] += 1
        busy = [w for w in workers if w.alive and w.busy is not None]
        if not busy:
            raise RuntimeError(
                f"every worker of this multi-process pool has died ({'; '.join(lost) or 'before this call'}); "
                f"{len(chunks) - len(results)} of {len(chunks)} chunks were not computed. Stop the pool "
                "(stop_multi_process_pool) and start a new one; a worker killed by the OS often means it ran out "
                "of memory: use fewer workers or a smaller batch_size."
            )
        ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
        for w in busy:
            if w.conn not in ready and w.process.sentinel not in ready:
                continue
            message = _receive(w, timeout=0)  # a worker may answer and then die: read what it sent first
            tag, w.busy = w.busy, None
            if message is None:  # died holding ``tag``
                w.alive = False
                lost.append(_dead(w))
                if tag[0] == call:
                    chunk = tag[1]
                    if tries[chunk] >= MAX_TRIES:
                        raise RuntimeError(
                            f"chunk {chunk} ({len(chunks[chunk])} inputs) was running on each multi-process pool "
                            f"worker that died: {'; '.join(lost)}. The call is abandoned; stop the pool and look "
                            "for what kills the workers (memory: fewer workers or a smaller batch_size)."
                        )
                    logger.warning(
                        "st_backend: multi-process pool worker %s died while running chunk %d (%d inputs); "
                        "running it again on a live worker. The pool has one worker fewer from now on.",
                        lost[-1],
                        chunk,
                        len(chunks[chunk]),
                    )
                    todo.appendleft(chunk)
                continue
            kind, got, payload = message
            if got[0] != call:
                continue  # the answer to a chunk of an interrupted earlier call
            if kind == "error":
                raise payload
            if len(payload) != len(chunks[got[1]]):
                raise RuntimeError(f"a pool worker returned {len(payload)} outputs for {len(chunks[got[1]])} inputs")
            results[got[1]] = payload
            done = chunks[got[1]]
            w.last_call["chunks"] += 1
            w.last_call["inputs"] += len(done)
            w.last_call["chars"] += sum(weights[i] for i in done)
            progress.update(len(done))
    return [results[c] for c in range(len(chunks))]


def reorder(outputs: list, chunks: list[list[int]], n: int):
    """Chunk outputs (tensors or lists, in plan order) back in input order."""
    order = [i for chunk in chunks for i in chunk]
    if isinstance(outputs[0], torch.Tensor):
        stacked = torch.cat(outputs)
        inverse = torch.empty(n, dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(n)
        return stacked[inverse]
    rows: list = [None] * n
    for i, row in zip(order, (row for out in outputs for row in out)):
        rows[i] = row
    return rows


class PoolMixin:
    """ST's multi-process API on st_backend's models (see the module docstring). Put it before the ST class."""

    def start_multi_process_pool(self, target_devices: list[str] | None = None) -> dict:
        """As ST's: one worker process per device (``["cpu", "cpu"]``, ``["cuda:0", "cuda:1"]``; None: every
        CUDA device, else 4 CPU workers), each running its own packed engine. Returns once every worker has
        loaded the model. CPU workers share the cores (``torch.set_num_threads``) unless OMP_NUM_THREADS is set."""
        if self._accelerate_placement_hook is not None:
            raise ValueError(
                "Multi-process encoding places the model on each target device itself, which a model dispatched "
                "by accelerate does not allow. Load it without a `device_map` to encode with a pool."
            )
        if target_devices is None:
            if torch.cuda.is_available():
                target_devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
            else:
                target_devices = ["cpu"] * 4
        return start_pool(self, list(target_devices))

    @staticmethod
    def stop_multi_process_pool(pool: dict) -> None:
        """Stop the pool's workers and wait for them to end (pools of plain ST too)."""
        if "workers" not in pool:
            return sentence_transformers.SentenceTransformer.stop_multi_process_pool(pool)
        stop_pool(pool)

    def _multi_process(
        self,
        inputs: Sequence,
        show_progress_bar: bool | None = True,
        pool: dict | None = None,
        device: str | torch.device | list[str | torch.device] | None = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ):
        if pool is not None and "workers" not in pool:  # a pool plain ST started: its own queues
            return super()._multi_process(inputs, show_progress_bar, pool, device, chunk_size, **kwargs)
        if chunk_size is not None and chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
        if not inputs:
            return []
        kwargs["show_progress_bar"] = False  # one bar here, not one per worker
        created = pool is None and isinstance(device, list)
        if created:
            pool = self.start_multi_process_pool(device)
        try:
            with pool["lock"]:
                if not pool["workers"]:
                    raise RuntimeError("this multi-process pool was stopped: start a new one")
                live = sum(w.alive for w in pool["workers"]) or 1
                max_chars = _max_chars(self)
                weights = [input_weight(x, max_chars) for x in inputs]
                chunks = plan_chunks(weights, live, chunk_size or MAX_CHUNK_INPUTS)
                with tqdm(total=len(inputs), desc="Inputs", disable=not show_progress_bar) as progress:
                    outputs = run_chunks(pool, list(inputs), chunks, weights, kwargs, progress)
                return reorder(outputs, chunks, len(inputs))
        finally:
            if created:
                self.stop_multi_process_pool(pool)
