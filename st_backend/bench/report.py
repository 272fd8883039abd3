"""Plain-text reports of ``st-backend bench`` runs."""

from __future__ import annotations


def format_report(r: dict) -> str:
    if r["task"] == "maxsim":
        return _maxsim(r)
    head = f"{r['model']} ({r['task']}, corpus {r['corpus']}) on {r['device']}, {r['dtype']}"
    if r.get("max_seq_length"):
        head += f", max_seq_length {r['max_seq_length']}"
    if "latency" in r:
        lines = [head, f"{r['calls']} calls of one input each (the default call), alternating sides:"]
        for name, row in r["latency"].items():
            lines.append(f"  {name:12s} p50 {row['p50_ms']:8.3f} ms   p99 {row['p99_ms']:8.3f} ms")
        lines.append(f"st_backend no slower than plain ST at p50 and p99: {'yes' if r['latency_ok'] else 'NO'}")
        if "cuda_graphs" in r.get("engine", {}):
            lines.append(f"CUDA graphs: {r['engine']['cuda_graphs']}")
        return "\n".join(lines)
    unit = "pairs" if r["task"] in ("rerank", "rank") else "texts"
    head += f", attention {r['attention_backend']}"
    if r.get("rewrites"):
        head += ", rewrites " + ", ".join(f"{name} ({n} sites)" for name, n in r["rewrites"].items())
    lines = [
        head,
        f"{r['inputs']} {unit}, {r['tokens']} tokens; padding avoided vs ST at bs 32: {r['padding_tokens_avoided']}",
    ]
    if r.get("shape"):
        shape = r["shape"]
        call = "rank(query, documents) per query" if r["task"] == "rank" else "one predict(pairs)"
        lines.append(f"{shape['queries']} queries x {shape['docs_per_query']} documents, {shape['order']}: {call}")
    if "layer_tokens" in r:  # reports of runs before it was counted have none
        lines.append(_layer_tokens(r["layer_tokens"]))
    if r.get("cpu_defaults"):
        lines.append(
            f"CPU defaults (a quick run; give these options for a longer one): {format_options(r['cpu_defaults'])}"
        )
    for name, row in r["rows"].items():
        peak = f"peak {row['peak_mb']:8.0f} MB  " if row.get("peak_mb") is not None else ""  # measured on CUDA only
        lines.append(
            f"  {name:24s} {row['seconds']:8.3f}s  {row['tokens_per_s'] / 1e6:6.3f} M tok/s  "
            f"{row['inputs_per_s']:9.0f} {unit}/s  {peak}first call {row['first_call_seconds']:.2f}s"
        )
    lines.append(f"speedup, default call (what unchanged code gets): {r['speedup_default_call']:.2f}x")
    lines.append(f"speedup, tuned vs best plain ST (bs={r['best_plain_batch_size']}): {r['speedup']:.2f}x")
    lines.append(f"st_backend default call / tuned throughput: {100 * r['default_share_of_tuned']:.0f}%")
    f = r["fidelity"]
    for label in ("default call", "tuned"):
        lines.append(f"fidelity ({label}): {f[label]['metric']} {f[label]['value']:.6f} (>= {f['threshold']})")
    lines.append(f"fidelity: {'OK' if f['ok'] else 'FAIL'}")
    if r.get("profile_of_last_st_backend_run"):
        lines.append("profile of the last tuned st_backend run (seconds; thread-summed stages can exceed wall):")
        lines += [f"  {k:45s} {v:8.3f}" for k, v in r["profile_of_last_st_backend_run"].items()]
    return "\n".join(lines)


def _layer_tokens(counted: dict | None) -> str:
    """The st_backend default call's tokens through the layers against the tokens in its rows."""
    if counted is None:
        return "st_backend default call: ST's own path (tokens through the layers not counted)"
    share = f" ({100 * counted['forward_share']:.1f}%)" if counted["forward_share"] is not None else ""
    return (
        f"st_backend default call: {counted['forward_tokens']} tokens through the layers of "
        f"{counted['row_tokens']} in the rows{share}"
    )


def format_options(values: dict) -> str:
    """{"num_texts": 256, "st_batch_sizes": [64]} -> "--num-texts 256 --st-batch-sizes 64"."""
    return " ".join(
        f"--{name.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}"
        for name, v in values.items()
    )


def _maxsim(r: dict) -> str:
    f = r["fidelity"]
    defaults = [f"CPU defaults: {format_options(r['cpu_defaults'])}"] if r.get("cpu_defaults") else []
    return "\n".join(
        [
            *defaults,
            f"{r['model']} MaxSim rerank on {r['device']}, {r['dtype']}: {r['queries']} queries x "
            f"{r['documents_per_query']} documents ({r['document_tokens']} document tokens)",
            f"  plain ST similarity  {r['plain']['seconds']:8.3f}s  {r['plain']['docs_per_s']:12.0f} docs/s",
            f"  st_backend packed    {r['st_backend']['seconds']:8.3f}s  {r['st_backend']['docs_per_s']:12.0f} docs/s",
            f"speedup: {r['speedup']:.2f}x; fidelity: max relative score diff {f['max relative score diff']:.2e}, "
            f"pearson {f['pearson']:.6f}: {'OK' if f['ok'] else 'FAIL'}",
        ]
    )
