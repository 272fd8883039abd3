"""``st-backend compare`` and ``encode`` as a newcomer meets them: bad paths fail in one line before a model loads,
the STS sample ships inside the package, and text files are read one text per line (CRLF, blank lines)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from st_backend import cli
from st_backend.bench.corpora import read_sts, read_texts
from st_backend.data import STS_SAMPLE

LINES = ["A man is playing a guitar.", "", "Stock markets fell sharply on Monday.", "", "   ", "How do I reset my PIN?"]


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a command gets as far as resolving (then loading) a model."""
    import st_backend.default_model

    def refuse(name):
        raise AssertionError(f"a model was resolved ({name}) before the inputs were checked")

    monkeypatch.setattr(st_backend.default_model, "resolve_model", refuse)


def _one_error_line(capsys, command: str, *words: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"st-backend {command}: error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize(
    "argv, command, words",
    [
        (["compare", "--model", "default", "--sts", "{missing}"], "compare", ["--sts", "No such file", "--sts sample"]),
        (["compare", "--model", "default", "--texts", "{missing}"], "compare", ["--texts", "No such file"]),
        (["encode", "{missing}", "{out}"], "encode", ["input", "No such file"]),
        (["compare", "--sts", "{folder}"], "compare", ["Is a directory"]),
        (["compare", "--sts", "{bad_sts}"], "compare", ["bad.tsv:2: expected >= 7"]),
        (["compare", "--texts", "{empty}"], "compare", ["empty"]),
        (["encode", "{not_utf8}", "{out}"], "encode", ["not UTF-8"]),
        (["encode", "{lines}", "{folder}/no/such/folder/out.npy"], "encode", ["no such folder"]),
    ],
)
def test_a_bad_input_is_one_line_and_exit_2_before_a_model_loads(tmp_path, capsys, no_model, argv, command, words):
    (tmp_path / "bad.tsv").write_text("g\tf\t2012\t1\t5.0\ta\tb\nonly\tthree\tcolumns\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "lines.txt").write_text("a\n", encoding="utf-8")
    paths = {
        "missing": tmp_path / "missing.csv",
        "out": tmp_path / "out.npy",
        "folder": tmp_path,
        "bad_sts": tmp_path / "bad.tsv",
        "empty": tmp_path / "empty.txt",
        "not_utf8": tmp_path / "latin1.txt",
        "lines": tmp_path / "lines.txt",
    }
    assert cli.main([arg.format(**paths) for arg in argv]) == 2
    _one_error_line(capsys, command, *words)


def test_the_console_command_prints_no_traceback(tmp_path):
    """As the README's command runs it, with a path that is not there: exit code 2 and one line on stderr."""
    missing = tmp_path / "stsbenchmark" / "sts-test.csv"
    done = subprocess.run(
        [sys.executable, "-m", "st_backend.cli", "compare", "--model", "default", "--sts", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"st-backend compare: error: --sts {missing}: No such file or directory "
        "(--sts sample: the STS sample shipped with st-backend)"
    ]
    assert done.stdout == ""


def test_sts_and_texts_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", "--sts", "sample", "--texts", "x.txt"])
    assert exit_.value.code == 2
    assert "not allowed with argument --sts" in capsys.readouterr().err


def test_the_sts_sample_ships_in_the_package():
    assert STS_SAMPLE.parent.name == "data" and STS_SAMPLE.parent.parent.name == "st_backend"
    s1, s2, gold = read_sts(STS_SAMPLE)
    assert len(s1) == len(s2) == len(gold) == 250
    assert all(0.0 <= g <= 5.0 for g in gold) and len(set(gold)) > 20
    assert all(s1) and all(s2)
    label, t1, t2, g = cli.read_sts_file("sample")
    assert (t1, t2, g) == (s1, s2, gold) and "shipped" in label
    assert (STS_SAMPLE.parent / "README.md").read_text(encoding="utf-8").count("CC BY-SA") >= 2  # the attribution


def test_compare_default_texts_are_the_sample_and_the_edge_cases():
    texts = cli.default_compare_texts()
    assert len(texts) == 2 * 250 + len(cli.SAMPLE_TEXTS) >= 500
    assert "" in texts  # an empty text
    assert max(texts, key=len) == cli.SAMPLE_TEXTS[-1] and len(texts[-1]) > 500  # a long one


@pytest.mark.parametrize("final_newline", [True, False])
def test_text_files_one_text_per_line(tmp_path, final_newline):
    """LF and CRLF read the same; blank lines stay rows (row i is line i); a final newline adds no row; a BOM goes."""
    body = "\n".join(LINES) + ("\n" if final_newline else "")
    lf, crlf, bom = tmp_path / "lf.txt", tmp_path / "crlf.txt", tmp_path / "bom.txt"
    lf.write_bytes(body.encode("utf-8"))
    crlf.write_bytes(body.replace("\n", "\r\n").encode("utf-8"))
    bom.write_bytes(b"\xef\xbb\xbf" + body.replace("\n", "\r\n").encode("utf-8"))
    assert read_texts(lf) == read_texts(crlf) == read_texts(bom) == LINES
    assert len(read_texts(lf)) == len(body.splitlines())
    (tmp_path / "inner_cr.txt").write_bytes(b"a\rb\r\nc\n")  # a lone \r is text, not a line end
    assert read_texts(tmp_path / "inner_cr.txt") == ["a\rb", "c"]
    (tmp_path / "blank_last.txt").write_bytes(b"a\n\n")  # a blank last line is a line
    assert read_texts(tmp_path / "blank_last.txt") == ["a", ""]


def test_encode_crlf_equals_lf_and_keeps_blank_lines(tmp_path, capsys):
    body = "\n".join(LINES) + "\n"
    (tmp_path / "lf.txt").write_bytes(body.encode("utf-8"))
    (tmp_path / "crlf.txt").write_bytes(body.replace("\n", "\r\n").encode("utf-8"))
    for name in ("lf", "crlf"):
        assert cli.main(["encode", str(tmp_path / f"{name}.txt"), str(tmp_path / name), "--device", "cpu"]) == 0
    assert f"to {tmp_path / 'crlf.npy'}" in capsys.readouterr().out  # .npy added, as np.save adds it
    lf, crlf = np.load(tmp_path / "lf.npy"), np.load(tmp_path / "crlf.npy")
    assert lf.shape[0] == crlf.shape[0] == len(LINES) == body.count("\n")  # a row per line, blank lines too
    np.testing.assert_array_equal(lf, crlf)
    np.testing.assert_array_equal(lf[1], lf[3])  # the two empty lines: the same (empty-text) embedding


def test_encode_help_documents_every_argument(capsys):
    encode = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["encode"]
    named = {a.dest: a.help for a in encode._actions if a.dest != "help"}
    assert set(named) == {"input", "output", "model", "device", "batch_size", "normalize"}
    assert all(help_ and len(help_) > 10 for help_ in named.values()), named
    assert "blank lines are kept" in named["input"]
    with pytest.raises(SystemExit):
        cli.main(["encode", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Blank lines are kept on purpose" in text and "a final newline adds no row" in text
    assert "\\n or \\r\\n" in text


def test_compare_reads_texts_and_a_small_sts_file(tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_bytes(("\r\n".join(LINES) + "\r\n").encode("utf-8"))
    assert cli.main(["compare", "--model", "default", "--texts", str(texts), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"texts {len(LINES)} from {texts}" in out and "time (median of 3 runs): plain ST" in out
    assert out.strip().endswith("OK")
    rows = STS_SAMPLE.read_text(encoding="utf-8").splitlines()[:12]
    (tmp_path / "sts.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert cli.main(["compare", "--sts", str(tmp_path / "sts.tsv"), "--device", "cpu", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert (
        "time (1 run): plain ST" in out
        and "texts 24 from" in out
        and "STS Spearman (12 pairs): plain ST" in out
        and out.strip().endswith("OK")
    )
