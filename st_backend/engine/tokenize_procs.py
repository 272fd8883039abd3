"""Tokenizer worker processes (tokenize_worker.py) feeding the GPU: each has its own GIL, so turning encodings
into arrays no longer takes the GIL from the thread that launches the GPU's kernels, and two processes overlap
one's conversion with the other's Rust encode.

Started as scripts with ``sys.executable`` (not multiprocessing), so a user's script is never re-imported and
torch is never loaded in them. Any failure is reported to the caller, which tokenizes in-process instead.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np

from .tokenize_worker import REPLY, REQUEST, SIZE

_WORKER = Path(__file__).with_name("tokenize_worker.py")


class TokenizerProcessError(RuntimeError):
    """A worker failed or refused a request; the in-process tokenizer is the fallback. ``refused``: the worker
    answered with an error (it is still usable), rather than failing."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def _start(spec: bytes, rayon_threads: int | None) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the parent's imports, whatever set them up
    if rayon_threads is not None:
        env["RAYON_NUM_THREADS"] = str(rayon_threads)
    proc = subprocess.Popen(
        [sys.executable, str(_WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True
    )
    proc.stdin.write(b"S" + SIZE.pack(len(spec)) + spec)
    proc.stdin.flush()
    return proc


def _stop(procs: list[subprocess.Popen], owner: int) -> None:
    if os.getpid() != owner:  # a forked child: the workers are its parent's to stop
        return
    for proc in procs:
        try:
            proc.stdin.close()  # EOF: the worker returns from main()
        except Exception:
            pass
    deadline = time.monotonic() + 5  # one wait for all (a forked child may hold their pipes open)
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:
            proc.kill()


def _request(texts: list, pairs: bool, max_length: int | None, special: bool, types: bool, left: bool) -> bytes:
    if pairs and not all(isinstance(t, tuple) and len(t) == 2 for t in texts):
        raise TypeError("a list that mixes pairs with other inputs")
    columns = [t[0] for t in texts] + [t[1] for t in texts] if pairs else texts
    blobs = [t.encode("utf-8", "surrogatepass") for t in columns]
    sizes = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
    limit = -1 if max_length is None else max_length
    header = REQUEST.pack(len(texts), limit, special, pairs, types, left)
    return b"".join([b"R", header, sizes.tobytes(), *blobs])


def _read(stream, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise TokenizerProcessError("the tokenizer process exited")
    return data


class TokenizerProcesses:
    """``processes`` workers, each running one request at a time; callers on several threads share them."""

    def __init__(self, spec: str, processes: int, rayon_threads: int | None = None) -> None:
        """Raises TokenizerProcessError when a worker cannot be started (those already started are stopped)."""
        encoded = spec.encode("utf-8")
        self._pid = os.getpid()  # a forked child must not share these pipes with its parent
        self._procs: list[subprocess.Popen] = []
        self._finalizer = weakref.finalize(self, _stop, self._procs, self._pid)
        try:
            for _ in range(processes):
                self._procs.append(_start(encoded, rayon_threads))
        except (OSError, ValueError) as exc:
            self.close()
            raise TokenizerProcessError(f"could not start a tokenizer process ({sys.executable}): {exc}") from exc
        self._idle: queue.Queue = queue.Queue()
        for proc in self._procs:
            self._idle.put(proc)

    def close(self) -> None:
        self._finalizer()

    def alive(self) -> bool:
        return os.getpid() == self._pid and all(proc.poll() is None for proc in self._procs)

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
        proc = self._idle.get()
        try:
            proc.stdin.write(message)
            proc.stdin.flush()
            kind = _read(proc.stdout, 1)
            if kind == b"E":
                size = SIZE.unpack(_read(proc.stdout, SIZE.size))[0]
                refusal = _read(proc.stdout, size).decode("utf-8", "replace")
                raise TokenizerProcessError(refusal, refused=True)  # the whole reply was read: still in step
            if kind != b"K":
                raise TokenizerProcessError(f"the tokenizer process sent {kind!r}, not a reply")
            n, total = REPLY.unpack(_read(proc.stdout, REPLY.size))
            if n != len(texts):
                raise TokenizerProcessError(f"the tokenizer process answered {n} inputs for {len(texts)}")
            lengths = np.frombuffer(_read(proc.stdout, 4 * n), dtype=np.int32).astype(np.int64)
            flat_ids = np.frombuffer(_read(proc.stdout, 4 * total), dtype=np.int32)
            flat_types = np.frombuffer(_read(proc.stdout, total), dtype=np.int8) if types else None
        except TokenizerProcessError as exc:
            if not exc.refused:
                proc.kill()  # out of step with its pipes: every later request to it fails at once
            raise
        except BaseException as exc:  # a closed pipe, or an interrupt mid-reply (its reply would be read later)
            proc.kill()
            if isinstance(exc, (OSError, ValueError)):
                raise TokenizerProcessError(f"the tokenizer process failed: {exc}") from exc
            raise
        finally:
            self._idle.put(proc)  # a killed worker too: waiting callers then fail fast instead of blocking
        cuts = np.cumsum(lengths)[:-1]
        ids = np.split(flat_ids, cuts)
        return ids, (np.split(flat_types, cuts) if flat_types is not None else None), lengths
