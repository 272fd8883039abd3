"""Tokenizer worker processes give exactly the in-process tokenizer's ids, and any failure falls back to it."""

import logging

import numpy as np
import pytest
import sentence_transformers
from compare import assert_rows_close
from tiny_models import ARCHS, build_hf_dir, build_st_dir, corpus, load_tokenizer
from transformers import AutoTokenizer

import st_backend
from st_backend.engine.config import EngineConfig
from st_backend.engine.tokenizer import REMOTE_MIN_TEXTS, TextTokenizer


@pytest.fixture(autouse=True)
def _feeding(feeding_thread):
    """These tests call the tokenizer as a feeding thread does."""


TEXTS = ["", "a", "Hello, World!", "Ünïcödé 東京 🙂", "  spaces   inside  ", "word " * 300, *corpus()] * 2
PAIRS = [(TEXTS[i], TEXTS[-1 - i]) for i in range(len(TEXTS))]
assert len(TEXTS) >= REMOTE_MIN_TEXTS


@pytest.fixture
def remote_of():
    made = []

    def make(hf, processes=2):
        tok = TextTokenizer(hf)
        tok.use_processes(processes, rayon_threads=1)
        made.append(tok)
        return tok

    yield make
    for tok in made:
        tok.close()


def _same(got, want):
    assert got.lengths.tolist() == want.lengths.tolist()
    assert [a.tolist() for a in got.ids] == [a.tolist() for a in want.ids]
    if want.type_ids is None:
        assert got.type_ids is None
    else:
        assert [a.tolist() for a in got.type_ids] == [a.tolist() for a in want.type_ids]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("max_length", [None, 64, 7])
def test_processes_match_in_process(tiny_root, remote_of, arch, max_length):
    hf = load_tokenizer(arch, tiny_root)
    local, remote = TextTokenizer(hf), remote_of(hf)
    _same(remote(TEXTS, max_length), local(TEXTS, max_length))
    _same(remote(PAIRS, max_length), local(PAIRS, max_length))
    _same(remote(TEXTS, max_length, add_special_tokens=False), local(TEXTS, max_length, add_special_tokens=False))
    assert remote._processes is not None  # still running: nothing fell back


def test_pairs_keep_type_ids_and_left_truncation(tiny_root, remote_of):
    hf = load_tokenizer("bert", tiny_root)
    hf.truncation_side = "left"
    local, remote = TextTokenizer(hf), remote_of(hf, processes=1)
    got = remote(PAIRS, 9)
    _same(got, local(PAIRS, 9))
    assert got.type_ids is not None and any(1 in row for row in got.type_ids)


def test_refused_input_raises_the_tokenizers_own_error(default_model_path, remote_of):
    hf = AutoTokenizer.from_pretrained(default_model_path)
    local, remote = TextTokenizer(hf), remote_of(hf)
    bad = list(TEXTS)
    bad[3] = "\ud800 a lone surrogate"
    with pytest.raises(Exception) as want:
        local(bad, None)
    with pytest.raises(type(want.value)):
        remote(bad, None)
    _same(remote(TEXTS, 32), local(TEXTS, 32))  # the workers are still usable afterwards


def test_a_dead_worker_falls_back_in_process(default_model_path, remote_of, caplog):
    hf = AutoTokenizer.from_pretrained(default_model_path)
    local, remote = TextTokenizer(hf), remote_of(hf)
    remote(TEXTS, None)
    for proc in remote._processes._procs:
        proc.kill()
        proc.wait()
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        _same(remote(TEXTS, None), local(TEXTS, None))
    assert remote._processes is None
    assert any("tokenizing in-process" in r.getMessage() for r in caplog.records)


def test_small_calls_stay_in_process(default_model_path, remote_of, monkeypatch):
    remote = remote_of(AutoTokenizer.from_pretrained(default_model_path))

    def refuse(*args, **kwargs):
        raise AssertionError("a small call went to a worker process")

    monkeypatch.setattr(remote._processes, "encode", refuse)
    assert len(remote(TEXTS[: REMOTE_MIN_TEXTS - 1], None).ids) == REMOTE_MIN_TEXTS - 1


def test_config_defaults_and_validation():
    import torch

    assert EngineConfig().processes(torch.device("cpu")) == 0
    assert EngineConfig(tokenizer_processes=3).processes(torch.device("cpu")) == 3
    assert EngineConfig(tokenizer_processes=0).processes(torch.device("cuda")) == 0
    assert EngineConfig(compile="max-autotune-no-cudagraphs").compile == "max-autotune-no-cudagraphs"


def test_encode_and_predict_through_processes_equal_plain_st(tiny_root):
    engine = EngineConfig(tokenizer_processes=2)
    texts = list(TEXTS)
    path = str(build_st_dir("bert", tiny_root))
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    fast = st_backend.SentenceTransformer(path, device="cpu", engine=engine)
    assert_rows_close(fast.encode(texts, batch_size=16), plain.encode(texts, batch_size=16))
    assert fast.engine_for(None).tokenizer._processes is not None  # the call did go through the workers
    short = texts[: REMOTE_MIN_TEXTS - 1]
    assert_rows_close(fast.encode(short), plain.encode(short))

    path = str(build_hf_dir("bert", tiny_root, "seq-cls"))
    plain_ce = sentence_transformers.CrossEncoder(path, device="cpu")
    fast_ce = st_backend.CrossEncoder(path, device="cpu", engine=engine)
    np.testing.assert_allclose(fast_ce.predict(PAIRS), plain_ce.predict(PAIRS), atol=1e-5)
    assert fast_ce.engine().tokenizer._processes is not None


def test_a_forked_child_tokenizes_in_process_and_leaves_the_workers_alone(default_model_path, remote_of):
    import os

    hf = AutoTokenizer.from_pretrained(default_model_path)
    local, remote = TextTokenizer(hf), remote_of(hf)
    want = local(TEXTS, 16)
    pid = os.fork()
    if pid == 0:  # the child: same answer, in-process; its exit must not stop the parent's workers
        ok = [a.tolist() for a in remote(TEXTS, 16).ids] == [a.tolist() for a in want.ids]
        remote.close()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert remote._processes is not None and remote._processes.alive()
    _same(remote(TEXTS, 16), want)


def test_an_interrupt_mid_reply_never_hands_a_stale_reply_to_the_next_call(default_model_path, remote_of, monkeypatch):
    from st_backend.engine import tokenizer_procs

    hf = AutoTokenizer.from_pretrained(default_model_path)
    local, remote = TextTokenizer(hf), remote_of(hf, processes=1)
    real_recv, calls = tokenizer_procs._Worker.recv, []

    def interrupted(worker, size, deadline, ready=True):
        data = real_recv(worker, size, deadline, ready)
        if not calls:  # the reply's head is read, its body is still in the pipe
            calls.append(size)
            raise KeyboardInterrupt
        return data

    monkeypatch.setattr(tokenizer_procs._Worker, "recv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        remote(TEXTS, None)
    other = [t[::-1] for t in TEXTS]
    _same(remote(other, None), local(other, None))  # not the interrupted call's reply
    assert remote.processes_off and remote._processes is None


def test_workers_that_cannot_start_leave_tokenization_in_process(default_model_path, monkeypatch, caplog):
    monkeypatch.setattr("sys.executable", "/nonexistent/python")
    hf = AutoTokenizer.from_pretrained(default_model_path)
    tok = TextTokenizer(hf)
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        tok.use_processes(2, 1)
    assert tok._processes is None and "could not start" in tok.processes_off
    _same(tok(TEXTS, 32), TextTokenizer(hf)(TEXTS, 32))
    tok.use_processes(2, 1)  # never retried
    assert tok._processes is None


def test_a_worker_refusing_what_in_process_accepts_turns_them_off(default_model_path, remote_of, monkeypatch):
    from st_backend.engine.tokenizer_procs import TokenizerProcessError

    hf = AutoTokenizer.from_pretrained(default_model_path)
    local, remote = TextTokenizer(hf), remote_of(hf)

    def refuse(*args, **kwargs):
        raise TokenizerProcessError("ImportError: something in the worker", refused=True)

    monkeypatch.setattr(remote._processes, "encode", refuse)
    _same(remote(TEXTS, None), local(TEXTS, None))
    assert "refused" in remote.processes_off and remote._processes is None
