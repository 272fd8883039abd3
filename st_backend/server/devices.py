"""``serve --devices cuda:0,cuda:1``: one engine process per device behind the one front end.

The front end keeps everything up to the model call (routes, limits, token counts, one batcher per model). It
loads each model once on the CPU for its tokenizer, prompts and limits and then drops the weights. Each device
gets a process (``device_process``, multiprocessing spawn) that loads the models there with the plain Bridge and
answers merged calls, one at a time, over its pipe. A model's batcher has one thread per device; each call goes
to the ready device with the fewest outstanding tokens, keyed by a call id.

A supervisor thread watches the processes. One that dies (or answers nothing for ``device_timeout`` seconds while
it holds work, and is then killed) loses its calls in flight: each is sent once more to a ready device (model
calls are pure), else answered 503; the process is started again (after a back-off when it dies while loading).
Shutdown asks every process to stop, then kills what is left; a process also stops when its pipe closes (the
front end died).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import wait
from typing import Any

import torch

from .batcher import Batcher, Job
from .bridge import SPARSE, Bridge, Served
from .config import ServerConfig
from .device_process import serve_device, unpack
from .errors import ApiError
from .metrics import Metrics
from .ops import Operation

logger = logging.getLogger("st_backend.server")

MAX_TRIES = 2  # a call whose device died runs once more elsewhere; one that kills two devices is answered 503
LOAD_TIMEOUT_S = 900.0  # a device process must load and warm its models within this
POLL_S = 0.2  # how often the supervisor looks at the clock (deaths wake it at once)
STOP_GRACE_S = 10.0  # shutdown: how long a process gets to finish its call and exit before it is killed
MAX_BACKOFF_S = 30.0  # a process that keeps dying while it loads is started again at most this often


class _Slot:
    """One call in flight: set once, by the reader (the answer) or the supervisor (the device died)."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.since = time.monotonic()
        self.event = threading.Event()
        self.reply: tuple | None = None
        self.lost: str | None = None


@dataclass(eq=False)
class Device:
    index: int
    name: str  # "cuda:0", "cpu"
    state: str = "starting"  # starting -> ready -> down -> starting ...; stopped at shutdown
    process: Any = None
    conn: Any = None
    reader: threading.Thread | None = None
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    pending: dict[int, _Slot] = field(default_factory=dict)
    pid: int | None = None
    info: dict | None = None  # its "ready" message: describe() and batch budgets of its models
    error: str | None = None  # why it is down
    outstanding: int = 0  # tokens sent, not yet answered
    sent: int = 0
    answered: int = 0
    restarts: int = 0
    crashes: int = 0  # deaths while loading in a row: the back-off
    started: float = 0.0
    last_answer: float = 0.0
    next_start: float = 0.0

    @property
    def labels(self) -> tuple[str, str]:
        return (str(self.index), self.name)

    @property
    def label(self) -> str:
        return f"{self.name} (worker {self.index})"


def _cpu_threads(devices: Sequence[str]) -> int | None:
    """CPU device processes share the cores (each would otherwise start one thread per core)."""
    cpu = sum(torch.device(d).type == "cpu" for d in devices)
    if not cpu or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // cpu)


class DevicePool:
    """The device processes, their supervisor, and ``call`` (the batchers' threads)."""

    def __init__(self, spec: dict, devices: Sequence[str], metrics: Metrics, timeout: float) -> None:
        self.spec = spec
        self.devices = [Device(i, d) for i, d in enumerate(devices)]
        self.metrics = metrics
        self.timeout = timeout
        self.threads = _cpu_threads(devices)
        self.ctx = mp.get_context("spawn")
        self.lock = threading.Condition()
        self.ids = itertools.count()
        self.stopping = False
        self.supervisor = threading.Thread(target=self._supervise, name="st_backend-devices", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        # Before multiprocessing's own exit handler, which would wait for processes that ignore SIGTERM.
        atexit.register(self.stop)
        for d in self.devices:
            self._spawn(d)
        self.supervisor.start()

    def wait_ready(self, timeout: float = LOAD_TIMEOUT_S) -> None:
        """Until every device has loaded; RuntimeError naming the first that could not."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                failed = [d for d in self.devices if d.error]
                if failed:
                    raise RuntimeError(f"device {failed[0].label} could not load the models: {failed[0].error}")
                if all(d.state == "ready" for d in self.devices):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the device processes did not load the models in {timeout:.0f}s")
                self.lock.wait(min(left, 1.0))

    def stop(self) -> None:
        """Stop every process (asked first, killed after STOP_GRACE_S) and reap it; calls left get 503."""
        atexit.unregister(self.stop)
        with self.lock:
            self.stopping = True
            self.lock.notify_all()
        # No spawn follows once stopping is set (_spawn checks it under the lock), so after this join nothing
        # replaces a device's process or pipe under us; it may take a _died of ~10 s.
        while self.supervisor.is_alive():
            self.supervisor.join(STOP_GRACE_S)
        for d in self.devices:
            conn = d.conn
            if conn is not None and d.send_lock.acquire(timeout=1.0):
                try:
                    conn.send(("stop",))
                except Exception:  # a pipe closed under us: the process is gone or going
                    pass
                finally:
                    d.send_lock.release()
        deadline = time.monotonic() + STOP_GRACE_S
        for d in self.devices:
            process = d.process
            if process is None:
                continue
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join(5)
            self._release(d, "stopped", "the server is shutting down")

    def _spawn(self, d: Device) -> None:
        with self.lock:
            if self.stopping:  # stop() is reaping the processes: start none it would not see
                return
        parent, child = self.ctx.Pipe()
        spec = {**self.spec, "device": d.name, "label": d.label, "threads": self.threads}
        process = self.ctx.Process(
            target=serve_device, args=(child, spec), name=f"st_backend-device-{d.index}", daemon=True
        )
        process.start()
        child.close()  # the process holds the only other end: its death reads as a closed pipe
        reader = threading.Thread(target=self._read, args=(d, parent), name=f"st_backend-device-{d.index}", daemon=True)
        with self.lock:
            d.process, d.conn, d.reader, d.pid = process, parent, reader, process.pid
            d.state, d.started = "starting", time.monotonic()
        self.metrics.device_up.set(*d.labels, value=0)
        reader.start()
        logger.info("st_backend server: device %s starting (pid %d)", d.label, process.pid)

    def _read(self, d: Device, conn) -> None:
        while True:
            try:
                kind, call_id, payload = conn.recv()
            except (EOFError, OSError):
                return  # the process ended: the supervisor takes it from here
            except Exception:  # an answer that does not unpickle here: its call waits for the device timeout
                logger.exception("st_backend server: unreadable answer from device %s", d.label)
                continue
            if kind == "ready":
                with self.lock:
                    d.state, d.info, d.pid, d.error, d.crashes = "ready", payload, payload["pid"], None, 0
                    d.last_answer = time.monotonic()
                    self.lock.notify_all()
                self.metrics.device_up.set(*d.labels, value=1)
                logger.info("st_backend server: device %s ready (pid %d)", d.label, d.pid)
            elif kind == "failed":
                with self.lock:
                    d.error = payload
                    self.lock.notify_all()
            else:
                with self.lock:
                    slot = d.pending.pop(call_id, None)
                    if slot is not None:
                        d.outstanding -= slot.tokens
                        d.answered += 1
                        d.last_answer = time.monotonic()
                if slot is not None:
                    slot.reply = (kind, payload)
                    slot.event.set()

    def _supervise(self) -> None:
        while True:
            now = time.monotonic()
            with self.lock:
                if self.stopping:
                    return
                live = {d.process.sentinel: d for d in self.devices if d.state in ("starting", "ready")}
                due = [d for d in self.devices if d.state == "down" and d.next_start <= now]
                stuck = [(d, why) for d in live.values() if (why := self._stuck(d, now))]
            for d, why in stuck:
                logger.error("st_backend server: device %s: %s; killing it", d.label, why)
                d.error = why
                d.process.kill()
            for d in due:
                d.restarts += 1
                self.metrics.device_restarts.inc(*d.labels)
                self._spawn(d)
            if not live:
                time.sleep(POLL_S)
                continue
            for sentinel in wait(list(live), timeout=POLL_S):
                self._died(live[sentinel])

    def _stuck(self, d: Device, now: float) -> str | None:
        """Why ``d`` is to be killed: loading for too long, or holding work without answering; else None."""
        if d.state == "starting":
            return f"not loaded in {LOAD_TIMEOUT_S:.0f}s" if now - d.started > LOAD_TIMEOUT_S else None
        if not d.pending:
            return None
        oldest = min(slot.since for slot in d.pending.values())
        return f"no answer in {self.timeout:g}s" if now - max(oldest, d.last_answer) > self.timeout else None

    def _died(self, d: Device) -> None:
        d.process.join(5)
        code = d.process.exitcode
        loading = d.state == "starting"
        why = d.error or (f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}")
        logger.error("st_backend server: device %s (pid %s) died: %s; restarting it", d.label, d.pid, why)
        d.crashes = d.crashes + 1 if loading else 0
        lost = self._release(d, "down", why)
        with self.lock:
            d.error = why
            d.next_start = time.monotonic() + min(MAX_BACKOFF_S, 2.0 ** (d.crashes - 1) if d.crashes else 0.0)
        if lost:
            self.metrics.device_lost.inc(*d.labels, amount=lost)

    def _release(self, d: Device, state: str, why: str) -> int:
        """Mark ``d`` ``state``, answer its calls in flight as lost, close its pipe; how many were lost."""
        if d.reader is not None:
            d.reader.join(5)  # answers already in the pipe still count
        with self.lock:
            lost = list(d.pending.values())
            d.pending.clear()
            d.outstanding, d.state = 0, state
            self.lock.notify_all()
        for slot in lost:
            slot.lost = why
            slot.event.set()
        self.metrics.device_up.set(*d.labels, value=0)
        if d.conn is not None:
            d.conn.close()
        try:
            d.process.close()
        except ValueError:  # still running after SIGKILL and 5 s: leave it to multiprocessing's atexit
            logger.error("st_backend server: device %s (pid %s) did not exit", d.label, d.pid)
        d.conn = d.reader = d.process = None
        return len(lost)

    # -- calls ------------------------------------------------------------------------------------------------

    def _send(self, model: str, key, rows: list, tokens: int) -> tuple[Device, _Slot]:
        """Register the call on the ready device with the fewest outstanding tokens (waiting for one to be
        ready, at most ``timeout``) and send it."""
        deadline = time.monotonic() + self.timeout
        with self.lock:
            while True:
                if self.stopping:
                    raise ApiError(503, "The server is shutting down.", None, "shutting_down")
                ready = [d for d in self.devices if d.state == "ready"]
                if ready:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    states = ", ".join(f"{d.label}: {d.state}" for d in self.devices)
                    raise ApiError(
                        503,
                        f"No device is serving ({states}); they are restarting, retry in a moment.",
                        None,
                        "no_device",
                        {"Retry-After": "5"},
                    )
                self.lock.wait(left)
            d = min(ready, key=lambda d: (d.outstanding, d.sent))
            call_id, slot = next(self.ids), _Slot(tokens)
            d.pending[call_id] = slot
            d.outstanding += tokens
            d.sent += 1
            conn, send_lock = d.conn, d.send_lock
        try:
            with send_lock:
                conn.send(("call", call_id, model, key, rows))
        except (OSError, TypeError, ValueError) as exc:
            if conn.closed or isinstance(exc, OSError):
                pass  # it died meanwhile (its pipe closed under us): the supervisor answers the slot as lost
            else:
                with self.lock:
                    if d.pending.pop(call_id, None) is not None:
                        d.outstanding -= tokens
                raise
        except BaseException:  # nothing was sent (rows that do not pickle): nothing to wait for
            with self.lock:
                if d.pending.pop(call_id, None) is not None:
                    d.outstanding -= tokens
            raise
        return d, slot

    def call(self, model: str, key, rows: list, tokens: int = 0):
        """One merged call on a device; one output per row (as Bridge.run). A device that dies mid-call: the call
        runs once more on another, else ApiError 503."""
        lost = []
        for _ in range(MAX_TRIES):
            d, slot = self._send(model, key, rows, tokens)
            # The supervisor answers the slot within timeout (it kills a device that does not); this is a backstop.
            if not slot.event.wait(self.timeout + LOAD_TIMEOUT_S):
                slot.lost = "no answer"
            if slot.lost is not None:
                lost.append(f"{d.label}: {slot.lost}")
                continue
            kind, payload = slot.reply
            labels = d.labels
            self.metrics.device_calls.inc(*labels)
            self.metrics.device_tokens.inc(*labels, amount=tokens)
            self.metrics.device_inference.observe(*labels, value=time.monotonic() - slot.since)
            if kind == "error":
                raise payload
            return unpack(payload)
        raise ApiError(
            503,
            f"The device process running this request died ({'; '.join(lost)}); it is being restarted: retry.",
            None,
            "device_lost",
            {"Retry-After": "5"},
        )

    # -- /health, /metrics, /info -----------------------------------------------------------------------------

    def health(self) -> list[dict]:
        with self.lock:
            out = []
            for d in self.devices:
                entry = {
                    "worker": d.index,
                    "device": d.name,
                    "state": d.state,
                    "pid": d.pid,
                    "restarts": d.restarts,
                    "outstanding_tokens": d.outstanding,
                    "calls": d.answered,
                }
                if d.error and d.state != "ready":
                    entry["error"] = d.error
                out.append(entry)
            return out

    def refresh_metrics(self) -> None:
        with self.lock:
            values = [(d.labels, d.outstanding) for d in self.devices]
        for labels, tokens in values:
            self.metrics.device_outstanding.set(*labels, value=tokens)


class DeviceBridge(Bridge):
    """A Bridge whose model calls run in the device processes. The models loaded here (CPU, weights dropped)
    answer only what the routes ask before queueing: token counts, prompts, limits, Matryoshka sizes."""

    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        super().__init__(
            config.model,
            config.cross_encoder,
            config.multi_vector,
            config.sparse,
            device="cpu",
            matryoshka_dimensions=config.matryoshka_dimensions,
            attention=config.attention,
        )
        metrics.add_devices()
        spec = {
            "paths": (config.model, config.cross_encoder, config.multi_vector, config.sparse),
            "matryoshka_dimensions": config.matryoshka_dimensions,
            "attention": config.attention,
            "log_level": logging.getLogger("st_backend.server").getEffectiveLevel(),
        }
        self.pool = DevicePool(spec, config.devices, metrics, config.device_timeout)

    def load(self) -> None:
        self.pool.start()  # the devices load while the front end's copies do
        try:
            super().load()
            self.pool.wait_ready()
        except BaseException:
            self.pool.stop()
            raise
        for entry in self._first()["models"]:  # what the devices learned at their warm-up call (a sparse size)
            served = self.served[entry["name"]]
            if served.kind == SPARSE:
                served.dimension = entry["dimension"]

    def _warm(self, served: Served) -> None:
        self.count(served, ["warm up"], None, None)  # builds the counting tokenizer's copy
        try:  # the weights stay on the devices: here they would only take memory
            served.model.to("meta")
        except Exception as exc:
            logger.warning("st_backend server: keeping %s's weights in the front end (%s)", served.name, exc)

    def close(self) -> None:
        self.pool.stop()

    def _first(self) -> dict:
        return next(d.info for d in self.pool.devices if d.info is not None)

    def _engine_of(self, served: Served) -> dict:
        return next(m["engine"] for m in self._first()["models"] if m["name"] == served.name)

    def batch_budget(self, served: Served) -> int:
        return min(d.info["budgets"][served.name] for d in self.pool.devices if d.info is not None)

    def engine_reason(self, served: Served) -> str | None:
        engine = self._engine_of(served)
        return engine.get("reason") if engine["path"] != "packed" else None

    def describe(self) -> list[dict]:
        names = [d.name for d in self.pool.devices]
        return [{**m, "devices": names} for m in self._first()["models"]]

    def health(self) -> list[dict]:
        return self.pool.health()

    def refresh_metrics(self) -> None:
        self.pool.refresh_metrics()

    def batcher(self, served: Served, **options) -> Batcher:
        return DeviceBatcher(served.name, self.pool, **options)

    def run(self, served: Served, op: Operation, rows: list):
        return self.pool.call(served.name, op, rows)


class DeviceBatcher(Batcher):
    """A model's queue drained by one thread per device; each call carries its token count to the pool."""

    def __init__(self, name: str, pool: DevicePool, **options) -> None:
        super().__init__(name, partial(pool.call, name), workers=len(pool.devices), **options)
        self.pool = pool

    def _call(self, batch: list[Job], rows: list):
        return self.pool.call(self.name, batch[0].key, rows, sum(job.tokens for job in batch))
