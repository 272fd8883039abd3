"""``st-backend bench`` on CPU: quick defaults where --num-texts / --repeats / --st-batch-sizes are not given, said
in the report; a progress line per timed call on stderr; no peak-memory column where none is measured; the JSON
report's keys the same as on CUDA (a value not measured is null)."""

from __future__ import annotations

import argparse
import json

import torch

from st_backend import cli
from st_backend.bench.report import format_report
from st_backend.bench.run import CPU_DEFAULTS, GPU_DEFAULTS, apply_defaults, progress

ROW_KEYS = {"seconds", "tokens_per_s", "inputs_per_s", "peak_mb", "first_call_seconds"}
REPORT_KEYS = {
    "model",
    "task",
    "corpus",
    "device",
    "dtype",
    "versions",
    "inputs",
    "max_seq_length",
    "config",
    "cpu_defaults",
    "tokens",
    "shape",
    "layer_tokens",
    "engine",
    "attention_backend",
    "rewrites",
    "tokenizer_processes",
    "padding_tokens_avoided",
    "rows",
    "best_plain_batch_size",
    "speedup_default_call",
    "speedup",
    "default_share_of_tuned",
    "fidelity",
    "profile_of_last_st_backend_run",
}


def _args(**given) -> argparse.Namespace:
    return argparse.Namespace(
        **{"task": "embed", "num_texts": None, "repeats": None, "st_batch_sizes": None, "docs_per_query": 1000, **given}
    )


def test_defaults_by_device_and_only_where_not_given():
    args = _args()
    assert apply_defaults(args, torch.device("cpu")) == CPU_DEFAULTS
    assert (args.num_texts, args.repeats, args.st_batch_sizes) == tuple(CPU_DEFAULTS.values())
    assert args.st_batch_sizes is not CPU_DEFAULTS["st_batch_sizes"]  # a copy: the table stays as it is
    args = _args(num_texts=100, st_batch_sizes=[16])
    assert apply_defaults(args, torch.device("cpu")) == {"repeats": CPU_DEFAULTS["repeats"]}
    assert (args.num_texts, args.st_batch_sizes) == (100, [16])
    args = _args()
    assert apply_defaults(args, torch.device("cuda")) == GPU_DEFAULTS
    assert GPU_DEFAULTS == {"num_texts": 20000, "repeats": 3, "st_batch_sizes": [32, 256]}  # as before
    args = _args(task="maxsim")  # it encodes --docs-per-query of the texts: it gets them all
    apply_defaults(args, torch.device("cpu"))
    assert args.num_texts >= args.docs_per_query


def test_quiet_means_no_progress_lines(capsys):
    progress(argparse.Namespace(quiet=False), "a line")
    progress(argparse.Namespace(quiet=True), "not this one")
    assert capsys.readouterr().err == "bench: a line\n"


def test_bench_on_cpu_progress_defaults_and_no_peak_column(tmp_path, capsys):
    out = tmp_path / "report.json"
    argv = ["bench", "--model", "default", "--device", "cpu", "--num-texts", "12", "--repeats", "1", "--json", str(out)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads(out.read_text())
    sizes = CPU_DEFAULTS["st_batch_sizes"]
    assert report["cpu_defaults"] == {"st_batch_sizes": sizes}  # only what was not given
    assert report["config"]["num_texts"] == 12 and report["config"]["st_batch_sizes"] == sizes
    option = f"--st-batch-sizes {','.join(map(str, sizes))}"
    assert f"CPU defaults (a quick run; give these options for a longer one): {option}" in captured.out
    # a line per call as it goes: every call's warm-up and timed run, on stderr
    runs = 2 * (3 + len(sizes))
    progress = [line for line in captured.err.splitlines() if line.startswith("bench: [")]
    assert len(progress) == runs, captured.err
    assert progress[-1].startswith(f"bench: [{runs}/{runs}] run 1/1 st_backend tuned"), progress[-1]
    assert "bench: [" not in captured.out
    # no peak memory where none is measured, in the text; null in the JSON, whose keys stay those of a CUDA run
    assert "peak" not in captured.out and "MB" not in captured.out
    assert set(report) == REPORT_KEYS
    for row in report["rows"].values():
        assert set(row) == ROW_KEYS and row["peak_mb"] is None
    assert report["fidelity"]["ok"]
    measured = {**report, "rows": {k: {**row, "peak_mb": 123.0} for k, row in report["rows"].items()}}
    assert "peak      123 MB" in format_report(measured)
