"""Tokenizer worker processes (tokenizer_worker.py) feeding the GPU: each has its own GIL, so turning encodings
into arrays no longer takes the GIL from the thread that launches the GPU's kernels, and two processes overlap
one's conversion with the other's Rust encode.

Started as scripts with ``sys.executable`` (not multiprocessing), so a user's script is never re-imported and
torch is never loaded in them. Any failure is reported to the caller, which tokenizes in-process instead.

A worker that dies or stops answering costs a bounded wait: each request gets a deadline from the work it
sends (``deadline_s``), the pipes are non-blocking and every wait is a poll() that ends by that deadline, and
past it the worker is killed and reaped. Every worker that ends is reaped (no zombies); a worker also ends when
its parent goes away (see tokenizer_worker.py).
"""

from __future__ import annotations

import math
import os
import queue
import select
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: select.poll is missing too, and TokenizerProcesses refuses to start
    fcntl = None

from .errors import InputError
from .tokenizer_worker import HEAD, PARENT, REPLY, REQUEST, SIZE

_WORKER = Path(__file__).with_name("tokenizer_worker.py")

# A request's deadline (deadline_s): a worker that has not answered by then is killed, the call is tokenized
# in-process and the workers are off for good, so a false alarm costs their speed for the rest of the run while
# a real fault only waits. Hence generous, about 10x the slowest rates measured in a worker (one Rust thread) on
# a 2-core machine at load 4-5: 14-20 us per text (empty or one-letter texts), 0.7-1.6 us per byte, a 460 KB
# tokenizer.json parsed in 40 ms, a worker started and its imports done in 0.25 s.
DEADLINE_FLOOR_S = 5.0  # every request: scheduling, GC pauses, a swapping machine
DEADLINE_S_PER_TEXT = 200e-6
DEADLINE_S_PER_BYTE = 5e-6  # of the request as sent (texts' UTF-8 plus 8 bytes of length each): 200 KB/s
DEADLINE_START_S = 10.0  # a worker's first request also waits for the worker to start and import
DEADLINE_S_PER_SPEC_BYTE = 1e-6  # a request with a max_length / truncation side new to that worker parses the
# tokenizer's JSON again (1 MB/s: 17 s for bge-m3's 17 MB)

STOP_GRACE_S = 2.0  # close(): how long workers get to exit on their stdin's EOF before they are killed
EXIT_WAIT_S = 1.0  # a worker whose pipe closed: how long it gets to exit by itself (to report its exit code)
REAP_S = 5.0  # the longest wait for a killed worker to be reaped (SIGKILL ends even a stopped process)
# Each pipe's size where Linux lets it grow (F_SETPIPE_SZ; 0: the system's 64 KiB): a request or reply then
# takes a few reads and writes, each taking the GIL back, rather than one per 64 KiB.
PIPE_SIZE = 1 << 20


class TokenizerProcessError(RuntimeError):
    """A worker failed or refused a request; the in-process tokenizer is the fallback. ``refused``: the worker
    answered with an error (it is still usable), rather than failing."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class _Timeout(Exception):
    pass


class _Closed(Exception):
    pass


class _Worker:
    """One worker process, its pipes (non-blocking, as raw FileIO objects), and what the parent knows of it."""

    def __init__(self, index: int, spec: bytes, rayon_threads: int | None) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the parent's imports, whatever set them up
        env[PARENT] = str(os.getpid())
        if rayon_threads is not None:
            env["RAYON_NUM_THREADS"] = str(rayon_threads)
        self.index = index
        self.proc = subprocess.Popen(
            [sys.executable, str(_WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            bufsize=0,
        )
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        try:
            for pipe in (self.stdin, self.stdout):
                os.set_blocking(pipe.fileno(), False)
                if PIPE_SIZE and hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux
                    try:  # fewer, larger reads and writes: each one takes the GIL back
                        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
                    except OSError:  # above /proc/sys/fs/pipe-max-size, or this user's pipes are at their limit
                        pass
            self.writable, self.readable = select.poll(), select.poll()
            self.writable.register(self.stdin.fileno(), select.POLLOUT)
            self.readable.register(self.stdout.fileno(), select.POLLIN)
        except BaseException:
            self.end(kill=True)
            raise
        self.setup: bytes | None = b"S" + SIZE.pack(len(spec)) + spec  # sent with the first request
        self.keys: set = set()  # the (max_length, left) it has built a tokenizer for
        self.failure: str | None = None  # why it was ended, once it was

    def name(self) -> str:
        return f"tokenizer process {self.index} (pid {self.proc.pid})"

    def send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while True:
            written = self.stdin.write(view)  # None: the pipe is full
            if written:
                if written == len(view):
                    return
                view = view[written:]
            _wait(self.writable, deadline)

    def recv(self, size: int, deadline: float, ready: bool = True) -> np.ndarray:
        """``size`` bytes of the reply into a new array (the arrays returned are views of it). ready=False: the
        reply is not expected yet, so poll before the first read rather than after it."""
        data = np.empty(size, dtype=np.uint8)
        view, got = memoryview(data), 0
        if not ready and size:
            _wait(self.readable, deadline)
        while got < size:
            count = self.stdout.readinto(view[got:])  # None: nothing to read yet
            if count is None:
                _wait(self.readable, deadline)
            elif count == 0:
                raise _Closed
            else:
                got += count
        return data

    def end(self, kill: bool) -> str:
        """Make sure the worker is gone and reaped, and close its pipes; -> how it ended. kill=False: its pipe
        closed, so it is probably exiting: give it EXIT_WAIT_S to report its own exit code first."""
        proc = self.proc
        if not kill:
            try:
                proc.wait(timeout=EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
        proc.kill()  # nothing when it was reaped already
        try:
            proc.wait(timeout=REAP_S)
        except subprocess.TimeoutExpired:
            how = "did not exit when killed"
        else:
            code = proc.returncode
            how = f"exited with code {code}" if code >= 0 else f"was killed by signal {_signal_name(-code)}"
        for pipe in (self.stdin, self.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        return how


def _wait(poller, deadline: float) -> None:
    """Until the pipe is ready; _Timeout when it is not by ``deadline`` (ready then, it still counts)."""
    left = deadline - time.monotonic()
    timeout = None if left == math.inf else max(0, math.ceil(left * 1000))
    events = poller.poll(timeout)
    if not events:
        raise _Timeout
    if events[0][1] & select.POLLNVAL:  # closed under us (close() from another thread)
        raise _Closed


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _state(pid: int) -> str:
    """The process's state as /proc tells it (e.g. "T (stopped)"), or "" where there is no /proc."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("State:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def deadline_s(texts: int, size: int, starting: bool = False, spec: int = 0) -> float:
    """The longest a request may take: ``texts`` strings (a pair counts two) in a ``size``-byte request, to a
    worker that is still ``starting`` (its first request), that builds a tokenizer from ``spec`` JSON bytes."""
    limit = DEADLINE_FLOOR_S + texts * DEADLINE_S_PER_TEXT + size * DEADLINE_S_PER_BYTE
    return limit + (DEADLINE_START_S if starting else 0.0) + spec * DEADLINE_S_PER_SPEC_BYTE


def _stop(workers: list[_Worker], owner: int) -> None:
    if os.getpid() != owner:  # a forked child: the workers are its parent's to stop
        return
    for worker in workers:
        try:
            worker.stdin.close()  # EOF: the worker returns from main()
        except Exception:
            pass
    deadline = time.monotonic() + STOP_GRACE_S  # one wait for all (a forked child may hold their pipes open)
    for worker in workers:
        try:
            worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:
            pass
        try:
            worker.end(kill=True)  # one that did not exit (stopped, or its pipes held open) is killed; reaped
        except Exception:
            pass


def _request(texts: list, pairs: bool, max_length: int | None, special: bool, types: bool, left: bool) -> bytes:
    if pairs and not all(isinstance(t, tuple) and len(t) == 2 for t in texts):
        raise InputError("a list that mixes pairs with other inputs")
    columns = [t[0] for t in texts] + [t[1] for t in texts] if pairs else texts
    blobs = [t.encode("utf-8", "surrogatepass") for t in columns]
    sizes = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
    limit = -1 if max_length is None else max_length
    header = REQUEST.pack(len(texts), limit, special, pairs, types, left)
    return b"".join([b"R", header, sizes.tobytes(), *blobs])


class TokenizerProcesses:
    """``processes`` workers, each running one request at a time; callers on several threads share them."""

    def __init__(self, spec: str, processes: int, rayon_threads: int | None = None) -> None:
        """Raises TokenizerProcessError when a worker cannot be started (those already started are stopped)."""
        encoded = spec.encode("utf-8")
        self._spec_size = len(encoded)
        self._pid = os.getpid()  # a forked child must not share these pipes with its parent
        self._workers: list[_Worker] = []
        self._procs: list[subprocess.Popen] = []
        self._finalizer = weakref.finalize(self, _stop, self._workers, self._pid)
        if not hasattr(select, "poll"):
            raise TokenizerProcessError("tokenizer processes need select.poll, which this platform lacks")
        try:
            for index in range(processes):
                self._workers.append(_Worker(index, encoded, rayon_threads))
                self._procs.append(self._workers[-1].proc)
        except (OSError, ValueError) as exc:
            self.close()
            raise TokenizerProcessError(f"could not start a tokenizer process ({sys.executable}): {exc}") from exc
        # SimpleQueue: its get() is C, so an interrupt can lose a taken worker only in the instant between get()
        # returning and encode's try (Queue.get runs Python code after taking it).
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        for worker in self._workers:
            self._idle.put(worker)

    def close(self) -> None:
        """Stop every worker and reap it (at interpreter exit too)."""
        self._finalizer()

    def alive(self) -> bool:
        return os.getpid() == self._pid and all(w.failure is None and w.proc.poll() is None for w in self._workers)

    def encode(
        self, texts: list, max_length: int | None, special: bool, types: bool, left: bool
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None, np.ndarray]:
        """-> (ids per text, type ids per text or None, lengths), as the in-process tokenizer gives them."""
        if os.getpid() != self._pid:
            raise TokenizerProcessError("the tokenizer processes belong to the parent of this forked process")
        pairs = bool(texts) and isinstance(texts[0], tuple)
        try:
            message = _request(texts, pairs, max_length, special, types, left)
        except (AttributeError, TypeError, IndexError) as exc:  # not strings: the in-process call names the error
            raise TokenizerProcessError(f"cannot send these inputs: {exc}", refused=True) from exc
        worker = self._idle.get()
        limit, step = 0.0, "sending its request"
        try:
            if worker.failure is not None:
                raise TokenizerProcessError(worker.failure)  # ended by an earlier call: already reaped
            key = (max_length, left)
            spec = self._spec_size if key not in worker.keys else 0
            limit = deadline_s(len(texts) * (1 + pairs), len(message), worker.setup is not None, spec)
            deadline = time.monotonic() + limit
            if worker.setup is not None:
                worker.send(worker.setup, deadline)
                worker.setup = None
            worker.keys.add(key)
            worker.send(message, deadline)
            step = "reading its reply"
            head = worker.recv(HEAD, deadline, ready=False).tobytes()
            kind, (n, total) = head[:1], REPLY.unpack_from(head, 1)
            if kind == b"E":
                refusal = worker.recv(n, deadline).tobytes().decode("utf-8", "replace")
                raise TokenizerProcessError(refusal, refused=True)  # the whole reply was read: still in step
            if kind != b"K":
                raise self._fail(worker, f"sent {kind!r}, not a reply")
            if n != len(texts):
                raise self._fail(worker, f"answered {n} inputs for {len(texts)}")
            body = worker.recv(4 * n + 4 * total + (total if types else 0), deadline)
        except TokenizerProcessError:
            raise
        except _Timeout:
            state = _state(worker.proc.pid)
            state = f" (state {state})" if state else ""
            raise self._fail(worker, f"timed out after {limit:.1f} s {step}{state}") from None
        except (_Closed, OSError, ValueError) as exc:  # a closed pipe: it exited, or was killed
            raise self._fail(worker, f"while {step}", exited=True) from exc
        except BaseException:  # an interrupt: its pipes are out of step (its reply would be read by a later call)
            self._fail(worker, f"was interrupted while {step}")
            raise
        finally:
            self._idle.put(worker)  # an ended worker too: waiting callers then fail fast instead of blocking
        lengths = body[: 4 * n].view(np.int32).astype(np.int64)
        flat_ids = body[4 * n : 4 * (n + total)].view(np.int32)
        cuts = np.cumsum(lengths)[:-1]
        ids = np.split(flat_ids, cuts)
        if not types:
            return ids, None, lengths
        return ids, np.split(body[4 * (n + total) :].view(np.int8), cuts), lengths

    def _fail(self, worker: _Worker, what: str, exited: bool = False) -> TokenizerProcessError:
        """End ``worker`` (killed unless it ``exited`` by itself) and reap it; -> the error that says why."""
        how = worker.end(kill=not exited)
        if exited:
            worker.failure = f"{worker.name()} {how} {what}"
        else:
            worker.failure = f"{worker.name()} {what}; killed" + ("" if "signal" in how else f", but it {how}")
        return TokenizerProcessError(worker.failure)
