"""What runs here: versions, device, and which attention backends work and why the others do not."""

from __future__ import annotations

import importlib.metadata
import platform

import torch

from .engine.architectures import ARCHITECTURES
from .engine.attention import probe
from .engine.kernels import FUSIONS
from .engine.kernels.ops import ops_for
from .engine.rewrites import rewrites_for
from .engine.runner import RUNNERS


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def info(
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    xformers_torch_ops: bool = False,
    model: str | None = None,
) -> dict:
    """Versions, device and the backend probe for each layer pattern (and a model's tokenizer), as a dict."""
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    report = {
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in ("st-backend", "sentence-transformers", "transformers", "torch", "tokenizers", "xformers")
        },
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "backends": {},
        "compile_rewrites": list(rewrites_for(device)),
    }
    ops, why = ops_for(device, dtype)
    report["fused_kernels"] = {"ops": ops.name, "fusions": list(FUSIONS)} if ops is not None else {"off": why}
    if model is not None:
        report["tokenizer"] = tokenizer_report(model)
    report["runners"] = runner_families()
    for label, kinds in layer_sets().items():
        result = probe(device, dtype, list(kinds), xformers_torch_ops)
        chosen = next((name for name, reason in result.reasons.items() if reason is None), None)
        report["backends"][label] = {"chosen": chosen, "reasons": dict(result.reasons), "notes": dict(result.notes)}
    return report


def tokenizer_report(model: str) -> dict:
    """Whether texts far past this model's max length are cut before tokenizing (engine/precut.py), or why not."""
    from transformers import AutoTokenizer

    from .default_model import resolve_model
    from .engine.precut import PreCut

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return {"model": model, "long_text_cut": "off: not a fast (Rust) tokenizer; long texts are tokenized whole"}
    reason = PreCut(backend.to_str(), getattr(tokenizer, "truncation_side", "right")).reason
    cut = "on (provably exact)" if reason is None else f"off: {reason}; long texts are tokenized whole"
    return {"model": model, "tokenizer": type(tokenizer).__name__, "long_text_cut": cut}


def layer_sets() -> dict[str, tuple]:
    """The registered architectures grouped by the layer patterns the probe checks for them."""
    groups: dict[tuple, list[str]] = {}
    for spec in ARCHITECTURES.values():
        if spec.runner != "packed":  # no packed attention backend (runner_families)
            continue
        groups.setdefault(spec.typical_layer_kinds(), []).append(spec.family or spec.model_type)
    names = {(False, None): "bidirectional", (True, None): "causal"}
    out = {}
    for kinds, families in groups.items():
        pattern = " + ".join(names.get(k, f"{'causal' if k[0] else 'bidirectional'} sliding window") for k in kinds)
        out[f"{pattern} ({', '.join(families)})"] = kinds
    return out


def runner_families() -> dict[str, list[str]]:
    """What runs the architectures that take no packed attention backend (their runner's label -> families)."""
    out: dict[str, list[str]] = {}
    for spec in ARCHITECTURES.values():
        if spec.runner != "packed":
            label = getattr(RUNNERS[spec.runner], "label", spec.runner)
            out.setdefault(label, []).append(spec.family or spec.model_type)
    return out


def format_info(report: dict) -> str:
    lines = [f"python {report['python']}"]
    lines += [f"{name} {version}" for name, version in report["versions"].items()]
    lines.append(f"device {report['device']} ({report['device_name']}), dtype {report['dtype']}")
    for label, entry in report["backends"].items():
        lines.append(f"attention for {label}: {entry['chosen']}")
        for name, reason in entry["reasons"].items():
            note = entry.get("notes", {}).get(name)
            works = f"works ({note})" if note else "works"
            lines.append(f"  {name:10s} {works if reason is None else 'no: ' + reason}")
    for label, families in report.get("runners", {}).items():
        lines.append(f"attention for {', '.join(families)}: {label}")
    if "tokenizer" in report:
        t = report["tokenizer"]
        lines.append(
            f"tokenizer of {t['model']}: texts far past max_seq_length cut before tokenizing: {t['long_text_cut']}"
        )
    rewrites = ", ".join(report.get("compile_rewrites", [])) or "none"
    lines.append(f"graph rewrites under EngineConfig(compile=True) here: {rewrites}")
    fused = report.get("fused_kernels", {})
    if fused:
        found = f"{', '.join(fused['fusions'])} on {fused['ops']}" if "ops" in fused else f"off: {fused['off']}"
        lines.append(f"fused kernels in the eager forward (Llama-style decoders): {found}")
    return "\n".join(lines)
