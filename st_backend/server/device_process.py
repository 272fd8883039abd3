"""A ``serve --devices`` device process: it loads the models on its device with the plain Bridge, then answers
the front end's merged calls over its pipe, one at a time, until told to stop or until the pipe closes (the front
end died). Answers travel as numpy arrays (see ``pack``)."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import signal
import sys
import threading
from multiprocessing import util as mp_util

import torch

from .bridge import Bridge
from .memory import Trimmer

logger = logging.getLogger("st_backend.server")


def pack(out):
    """A call's outputs as numpy arrays: plain pickles, nothing shared with a process that may die (torch would
    send CPU tensors as shared-memory handles and CUDA ones as IPC handles)."""
    if isinstance(out, torch.Tensor):
        t = out.detach().cpu()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16
            return ("bf16", t.view(torch.int16).numpy())
        return ("tensor", t.numpy())
    if isinstance(out, (list, tuple)):
        return ("list", [pack(o) for o in out])
    return ("raw", out)


def unpack(packed):
    kind, value = packed
    if kind == "tensor":
        return torch.from_numpy(value)
    if kind == "bf16":
        return torch.from_numpy(value).view(torch.bfloat16)
    if kind == "list":
        return [unpack(v) for v in value]
    return value


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it pickles (a ValueError stays a 400), else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _inbox(conn, inbox: queue.SimpleQueue) -> None:
    # Always reading, so the front end's send never waits on a call running here.
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the front end is gone
            message = ("stop",)
        except Exception:  # a message that does not unpickle here: end, not hang (calls in flight are retried)
            logger.exception("st_backend server: unreadable message from the front end; this device stops")
            message = ("stop",)
        if message[0] == "stop":
            inbox.put(None)
            return
        inbox.put(message)


def _exit(code: int) -> None:
    # Skip the interpreter's teardown of torch and transformers (seconds); multiprocessing's finalizers still run.
    mp_util._exit_function()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve_device(conn, spec: dict) -> None:
    """A device process: load the models on spec["device"], then answer ("call", id, model, operation, rows)."""
    # The front end stops this process (a terminal's Ctrl-C or a group SIGTERM reaches it too, mid-drain).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=spec["log_level"], format=f"%(asctime)s %(levelname)s device {spec['label']}: %(name)s: %(message)s"
    )
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    try:
        bridge = Bridge(
            *spec["paths"],
            device=spec["device"],
            matryoshka_dimensions=spec["matryoshka_dimensions"],
            attention=spec["attention"],
        )
        bridge.load()
        info = {
            "pid": os.getpid(),
            "models": bridge.describe(),
            "budgets": {name: bridge.batch_budget(s) for name, s in bridge.served.items()},
        }
    except Exception as exc:
        logger.exception("st_backend server: loading on %s failed", spec["device"])
        conn.send(("failed", None, f"{type(exc).__name__}: {exc}"))
        _exit(1)
    conn.send(("ready", None, info))
    trimmer = Trimmer()  # the rows and outputs of its calls fragment this process's heap as the front end's
    trimmer.start()
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=_inbox, args=(conn, inbox), daemon=True).start()
    while (message := inbox.get()) is not None:
        _, call_id, name, op, rows = message
        try:
            reply = ("done", call_id, pack(bridge.run(bridge.served[name], op, rows)))
        except Exception as exc:
            logger.exception("st_backend server: call on %s failed", spec["device"])
            reply = ("error", call_id, _portable(exc))
            if _device_is_broken(exc):  # every later call here would fail too: answer, then let it be restarted
                with contextlib.suppress(OSError):
                    conn.send(reply)
                _exit(1)
        try:
            conn.send(reply)
        except OSError:
            break
        trimmer.touch()
    _exit(0)


def _device_is_broken(exc: BaseException) -> bool:
    """A CUDA error that leaves the process's context unusable (illegal address, device-side assert, ...): the
    device answers every later call with it, so the process exits and the supervisor starts a fresh one."""
    accelerator_error = getattr(torch, "AcceleratorError", None)
    return (accelerator_error is not None and isinstance(exc, accelerator_error)) or "CUDA error" in str(exc)
