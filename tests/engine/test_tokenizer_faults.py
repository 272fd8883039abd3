"""Faults of the tokenizer worker processes cost a bounded wait and leave no process behind: a worker killed or
stopped in the middle of a call, Ctrl-C in the middle of a call, the interpreter exiting (or being killed) with
workers running. Each call runs in a thread joined with a timeout (or under a timer that kills the workers), so
broken fault handling fails the test instead of hanging it."""

import json
import logging
import os
import platform
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from tiny_models import corpus
from transformers import AutoTokenizer

from st_backend.engine import tokenizer_procs
from st_backend.engine.tokenizer import FEEDING, TextTokenizer


@pytest.fixture(autouse=True)
def _feeding(feeding_thread):
    """These tests call the tokenizer as a feeding thread does."""


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="watches the workers through /proc")

TEXTS = [f"{i}: {text}" for i, text in enumerate(corpus() * 6)]  # ~270 KB to send, ~250 KB of reply
DEADLINE_S = 1.5  # the tests' deadline for every request (the real one is several seconds: deadline_s)
BOUND_S = DEADLINE_S + 8.0  # a call still running after this hangs: the test fails
WRITE = {"x86_64": 1, "aarch64": 64}.get(platform.machine())  # the write syscall's number
ENGINE = Path(tokenizer_procs.__file__).parent


@pytest.fixture(scope="module")
def hf(default_model_path):
    return AutoTokenizer.from_pretrained(default_model_path)


@pytest.fixture(scope="module")
def want(hf):
    return TextTokenizer(hf)(TEXTS, None)


@pytest.fixture
def tok(hf, monkeypatch):
    """Two started workers, each warmed by one request, then a DEADLINE_S deadline on every request."""
    monkeypatch.setattr(tokenizer_procs, "PIPE_SIZE", 0, raising=False)  # 64 KiB pipes: requests outgrow them
    tok = TextTokenizer(hf)
    tok.use_processes(2, rayon_threads=1)
    procs = list(tok._processes._procs)
    for _ in procs:  # each worker in turn (they are handed out in order): started and its tokenizer built
        tok(TEXTS[:64], None)
    assert tok._processes is not None
    monkeypatch.setattr(tokenizer_procs, "deadline_s", lambda *args, **kwargs: DEADLINE_S, raising=False)
    yield tok
    for proc in procs:  # where the test failed: unblock a hung call, leave nothing behind
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    tok.close()


def _same(got, want):
    assert got.lengths.tolist() == want.lengths.tolist()
    assert [a.tolist() for a in got.ids] == [a.tolist() for a in want.ids]


def _start_time(pid: int) -> str | None:
    """The process's start time (tells a reused pid apart), or None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _rchar(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/io").read_text().split("rchar:")[1].split()[0])
    except OSError:
        return -1


def _writing(pid: int) -> bool:
    """Whether the process is in write(1, ...): blocked on a full stdout pipe, its reply half sent."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return len(fields) > 1 and fields[0] == str(WRITE) and fields[1] == "0x1"


def _assert_gone(started: dict[int, str]) -> None:
    """Every worker reaped (by its Popen, so no longer our child to wait for) and no longer running."""
    for pid, start in started.items():
        with pytest.raises(ChildProcessError):  # (pid, status) here would be a zombie; (0, 0) one still running
            print(f"pid {pid}: waitpid ->", os.waitpid(pid, os.WNOHANG))
        assert _start_time(pid) != start, f"worker {pid} is still there"


def _call_in_thread(tok, texts):
    """-> (result or exception, seconds); fails when the call is still running after BOUND_S."""
    box = {}

    def run():
        FEEDING.active = True  # as a pipeline feeding thread
        try:
            box["result"] = tok(texts, None)
        except BaseException as exc:
            box["result"] = exc

    thread = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(BOUND_S)
    elapsed = time.monotonic() - start
    assert not thread.is_alive(), f"the call hung (still running after {BOUND_S} s)"
    return box["result"], elapsed


def _fault(base: dict[int, int], sig: int, phase: str, size: int, done: threading.Event, hit: list) -> None:
    """Send ``sig`` to the worker that has the request (it has read ``size`` bytes more than ``base``, its
    count before the call), once it is in ``phase``: "compute" (it has read the whole request), "reply" (it is
    writing its reply, which the parent has begun to read)."""
    give_up, target = time.monotonic() + BOUND_S, None
    while not done.is_set() and time.monotonic() < give_up:
        if target is None:
            target = next((pid for pid in base if _rchar(pid) >= base[pid] + size), None)
            if target is None:
                time.sleep(0.0005)
                continue
        if phase == "compute" or _writing(target):
            os.kill(target, sig)
            hit.append(target)
            return
        start = time.perf_counter()  # "reply": hold the GIL a while, so the call reads the reply slowly and
        while time.perf_counter() - start < 0.002:  # the worker is seen blocked writing it
            pass


@pytest.mark.parametrize("phase", ["request", "compute", "reply"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_a_worker_killed_or_stopped_mid_call(tok, want, caplog, sig, phase):
    """ "request": every worker signalled before the call, whose request is larger than the pipe (a stopped
    worker leaves the write blocked); "compute" / "reply": the worker the request went to, once it has read it /
    while it writes its reply. The call gives the in-process rows, within the deadline, the workers are off
    with one warning that names the worker and how it failed, and no worker is left, not even a zombie."""
    if phase == "reply" and (WRITE is None or not Path(f"/proc/{os.getpid()}/syscall").exists()):
        pytest.skip("no /proc/<pid>/syscall to see a worker writing its reply")
    procs = list(tok._processes._procs)
    started = {proc.pid: _start_time(proc.pid) for proc in procs}
    size = len(tokenizer_procs._request(TEXTS, False, None, True, False, False))
    assert size > 64 * 1024
    for _ in range(8):  # "reply": the worker may finish its reply before it is caught writing it
        hit, done = [], threading.Event()
        if phase == "request":
            for proc in procs:
                os.kill(proc.pid, sig)
            hit = [proc.pid for proc in procs]
        else:
            base = {pid: _rchar(pid) for pid in started}
            fault = threading.Thread(target=_fault, args=(base, sig, phase, size, done, hit), daemon=True)
            fault.start()
        with caplog.at_level(logging.WARNING, logger="st_backend"):
            result, elapsed = _call_in_thread(tok, TEXTS)
        done.set()
        if hit:
            break
        assert tok._processes is not None  # nothing happened to the workers: the call went through them
    else:
        pytest.skip("never caught a worker writing its reply")
    assert not isinstance(result, BaseException), repr(result)
    _same(result, want)
    # "reply": the signal can land just after the reply's last byte (seen writing, then done before the kill), so
    # that call went through the worker; the next request that worker gets (they take requests in turn) meets it.
    for _ in procs if phase == "reply" else ():
        if tok._processes is None:
            break
        with caplog.at_level(logging.WARNING, logger="st_backend"):
            result, elapsed = _call_in_thread(tok, TEXTS)
        assert not isinstance(result, BaseException), repr(result)
        _same(result, want)
    assert tok._processes is None and tok.processes_off
    warnings = [r.getMessage() for r in caplog.records if "tokenizer processes off" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert any(f"(pid {pid})" in warnings[0] for pid in hit), warnings[0]
    how = "was killed by signal SIGKILL" if sig == signal.SIGKILL else f"timed out after {DEADLINE_S:.1f} s"
    assert how in warnings[0]
    if sig == signal.SIGSTOP:
        assert "stopped" in warnings[0]  # its state, as /proc gave it before it was killed
        assert elapsed >= DEADLINE_S
    _assert_gone(started)


def test_threads_sharing_the_workers_when_one_stops(tok, want, caplog):
    """Four threads call over and over while the worker one of them uses stops (the others wait for workers
    or use the other one): every call gives the in-process rows within the bound, and the workers are turned
    off with one warning, though several threads see them fail."""
    texts = TEXTS[:1500]
    procs = list(tok._processes._procs)
    started = {proc.pid: _start_time(proc.pid) for proc in procs}
    size = len(tokenizer_procs._request(texts, False, None, True, False, False))
    base, done, hit = {pid: _rchar(pid) for pid in started}, threading.Event(), []
    results = []

    def run():  # until the workers are off, and once more
        FEEDING.active = True  # as a pipeline feeding thread
        while True:
            off = tok._processes is None
            try:
                results.append(tok(texts, None))
            except BaseException as exc:
                results.append(exc)
            if off or time.monotonic() > end:
                return

    fault = threading.Thread(target=_fault, args=(base, signal.SIGSTOP, "compute", size, done, hit), daemon=True)
    threads = [threading.Thread(target=run, daemon=True) for _ in range(4)]
    end = time.monotonic() + BOUND_S
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        fault.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        done.set()
    assert not any(thread.is_alive() for thread in threads), f"calls hung (still running after {BOUND_S} s)"
    assert hit and len(results) >= 2 * len(threads)
    for result in results:
        assert not isinstance(result, BaseException), repr(result)
        assert [a.tolist() for a in result.ids] == [a.tolist() for a in want.ids[: len(texts)]]
    warnings = [r.getMessage() for r in caplog.records if "tokenizer processes off" in r.getMessage()]
    assert len(warnings) == 1 and f"(pid {hit[0]}) timed out" in warnings[0], warnings
    assert tok._processes is None
    _assert_gone(started)


def test_ctrl_c_mid_call_then_the_next_call_is_correct(tok, want, monkeypatch):
    """SIGINT reaches the main thread while it waits for a worker's reply; then a call gives correct rows, and
    the interrupted worker was killed and reaped.

    No race with the worker's or the scheduler's speed (a loaded machine): once the call starts waiting for the
    reply, the worker that has the request (it has read all of it) is stopped, and the call's deadline is past the
    test's bound, so the call can only be waiting for the reply when another thread, which has seen the main thread
    inside that wait, sends SIGINT. (Sent when the worker was seen to have read the request, as this test did, the
    signal could land after a quick reply had ended the call.)"""
    procs = list(tok._processes._procs)
    started = {proc.pid: _start_time(proc.pid) for proc in procs}
    size = len(tokenizer_procs._request(TEXTS, False, None, True, False, False))
    reply = tokenizer_procs.HEAD + 4 * len(TEXTS) + 4 * int(want.lengths.sum())  # ids and lengths, no type ids
    base = {pid: _rchar(pid) for pid in started}
    waiting, hit = threading.Event(), []
    recv = tokenizer_procs._Worker.recv

    def stop_then_recv(worker, nbytes, deadline, ready=True):
        """The call's first wait for the reply: stop the worker there once it has read the request, then wait."""
        if not ready and not hit:
            pid, give_up = worker.proc.pid, time.monotonic() + BOUND_S
            while _rchar(pid) < base[pid] + size:  # the last of the request may still be in the pipe
                assert time.monotonic() < give_up, "the worker never read the request"
                time.sleep(0.0005)
            os.kill(pid, signal.SIGSTOP)
            while not tokenizer_procs._state(pid).startswith("T"):  # from here on it writes nothing
                assert time.monotonic() < give_up, "the worker did not stop"
                time.sleep(0.0005)
            import fcntl  # (Linux only, as the module)

            pipe = fcntl.fcntl(worker.stdout.fileno(), fcntl.F_GETPIPE_SZ)
            assert reply > pipe, "the reply fits in the pipe: the stopped worker may have sent it all"
            hit.append(pid)
            waiting.set()
        return recv(worker, nbytes, deadline, ready)

    def interrupt():  # once the main thread is inside the wait for the reply, which it cannot leave by itself
        if not waiting.wait(BOUND_S):
            return
        main, give_up = threading.main_thread().ident, time.monotonic() + BOUND_S
        while time.monotonic() < give_up:
            frame = sys._current_frames().get(main)
            if frame is not None and frame.f_code is tokenizer_procs._wait.__code__:
                signal.pthread_kill(main, signal.SIGINT)
                return
            time.sleep(0.0005)

    def unhang():  # a call that never returns would hang the test: kill the workers, so that it fails
        for proc in procs:
            proc.kill()

    assert threading.current_thread() is threading.main_thread()
    monkeypatch.setattr(tokenizer_procs._Worker, "recv", stop_then_recv)
    monkeypatch.setattr(tokenizer_procs, "deadline_s", lambda *args, **kwargs: 4 * BOUND_S)  # the watchdog's first
    watchdog, interrupter = threading.Timer(BOUND_S, unhang), threading.Thread(target=interrupt, daemon=True)
    returned, interrupted = None, False
    try:
        try:
            watchdog.start()
            interrupter.start()
            returned = tok(TEXTS, None)
        finally:
            waiting.set()
            watchdog.cancel()
            interrupter.join()
    except KeyboardInterrupt:
        interrupted = True
    assert hit and interrupted and returned is None, "the call was not interrupted while it waited"
    monkeypatch.setattr(tokenizer_procs._Worker, "recv", recv)
    monkeypatch.setattr(tokenizer_procs, "deadline_s", lambda *args, **kwargs: DEADLINE_S)
    result, _ = _call_in_thread(tok, TEXTS)
    assert not isinstance(result, BaseException), repr(result)
    _same(result, want)
    with pytest.raises(ChildProcessError):
        os.waitpid(hit[0], os.WNOHANG)
    assert _start_time(hit[0]) != started[hit[0]]
    if tok._processes is not None:  # the call went to the other worker: it still works
        _same(tok(TEXTS, None), want)
    tok.close()
    _assert_gone(started)


def test_the_deadline_grows_with_the_work_sent():
    deadline_s = tokenizer_procs.deadline_s
    assert deadline_s(0, 0) == tokenizer_procs.DEADLINE_FLOOR_S >= 1.0
    small, large = deadline_s(1000, 100_000), deadline_s(100_000, 10_000_000)
    assert small < large
    assert deadline_s(1000, 100_000, starting=True, spec=1_000_000) > small + tokenizer_procs.DEADLINE_START_S


# Runs in a "parent" process, which must not import st_backend (torch: seconds): the engine's folder is loaded
# as a bare package. Starts two workers, prints their pids, and ends as ``mode`` says.
PARENT = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time, types
    engine_dir, model_dir, mode = sys.argv[1:4]
    package = types.ModuleType("_engine")
    package.__path__ = [engine_dir]
    sys.modules["_engine"] = package
    from _engine.tokenizer_procs import TokenizerProcesses

    spec = open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8").read()
    procs = TokenizerProcesses(spec, 2, rayon_threads=1)
    texts = [f"text {i} of the interpreter-exit test, some words long" for i in range(30000)]
    for _ in range(2):  # both workers started and answering
        procs.encode(texts[:100], None, True, False, False)
    others = []
    if mode == "killed-forked":  # a child that keeps the workers' pipes open: they see no EOF
        holder = os.fork()
        if holder == 0:
            time.sleep(60)
            os._exit(0)
        others.append(holder)
    print(json.dumps({"workers": [p.pid for p in procs._procs], "others": others}), flush=True)
    if mode == "exit-stopped":  # a worker that cannot read its EOF: the exit must kill it
        os.kill(procs._procs[1].pid, signal.SIGSTOP)
    elif mode in ("exit-busy", "killed", "killed-forked"):  # a call in flight
        threading.Thread(target=procs.encode, args=(texts, None, True, False, False), daemon=True).start()
        time.sleep(0.3)
    if mode.startswith("killed"):
        os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no finalizer: the workers must go by themselves
    """
)

# Becomes the subreaper of the parent's orphans, so that workers the parent left behind come to it (wherever
# the tests run, pid 1 may not reap): it waits for each and reports when they ended.
HARNESS = textwrap.dedent(
    """
    import ctypes, json, os, signal, subprocess, sys, time
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    parent = subprocess.Popen([sys.executable, "-c", sys.argv[1], *sys.argv[2:]], stdout=subprocess.PIPE, text=True)
    line = parent.stdout.readline()
    code = parent.wait(timeout=60)
    exited = time.monotonic()
    started = json.loads(line)
    ended, left = {}, set(started["workers"])
    while left and time.monotonic() < exited + 8:
        for pid in list(left):
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not a child of ours: the parent reaped it before it exited
                ended[pid], got = "reaped by the parent", None
            else:
                if got:
                    ended[pid] = f"{time.monotonic() - exited:.2f} s after the parent, status {status}"
            if got != 0:
                left.discard(pid)
        time.sleep(0.02)
    for pid in [*left, *started["others"]]:  # clean up what is left (the test fails on it)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    print(json.dumps({"parent": code, "ended": ended, "left": sorted(left)}))
    """
)


@pytest.mark.parametrize("mode", ["exit", "exit-stopped", "exit-busy", "killed", "killed-forked"])
def test_no_worker_outlives_its_parent(default_model_path, mode):
    """exit*: the parent's interpreter exits (idle workers / one of them stopped / a call in flight): it stops
    and reaps them itself. killed: the parent is SIGKILLed with a call in flight: the workers end on their
    own, by their stdin's EOF or a broken pipe; killed-forked: also with a forked child of the parent holding
    their pipes open, so they see neither: they notice their parent is gone."""
    command = [sys.executable, "-c", HARNESS, PARENT, str(ENGINE), str(default_model_path), mode]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["left"], f"workers outlived their parent: {report}"
    assert len(report["ended"]) == 2, report
    if mode.startswith("exit"):
        assert report["parent"] == 0, done.stderr
        assert all(how == "reaped by the parent" for how in report["ended"].values()), report
    else:
        assert report["parent"] == -signal.SIGKILL
