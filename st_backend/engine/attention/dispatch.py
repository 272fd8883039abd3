"""Choosing an attention backend: a probe that asks each registered backend why it cannot run here (device,
dtype, library, layer pattern) and runs every candidate on a small packed batch against the reference, so a
kernel that imports but computes wrongly is never chosen. Its results are data (ProbeResult), cached per
device, dtype and layer pattern."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import torch

from .base import AttentionBackend, PackedAttention, hf_attention_function
from .reference import ReferenceBackend
from .registry import make_backend, priority

logger = logging.getLogger(__name__)

LayerKind = tuple[bool, int | None]  # (causal, sliding window each side or None)


_REGISTERED: dict[str, AttentionBackend] = {}


def register(backend: AttentionBackend) -> str:
    """Register a backend with transformers' AttentionInterface; returns its name.

    No mask function is registered: transformers' mask builders then return no mask at once, as for any custom
    attention (the layout travels in cu_seqlens). A registered one made them scan position_ids for packed
    sequences first, a host sync per forward (decoders on every release; BERT-family models from 5.25 on)."""
    from transformers import AttentionInterface

    name = backend.hf_name
    if _REGISTERED.get(name) is not backend:
        AttentionInterface.register(name, hf_attention_function(backend))
        _REGISTERED[name] = backend
    return name


@dataclass
class ProbeResult:
    device: str
    dtype: str
    layer_kinds: list[LayerKind]
    reasons: dict[str, str | None] = field(default_factory=dict)  # backend -> None (works) or why not
    notes: dict[str, str] = field(default_factory=dict)  # backend -> how it runs here, when it works
    shared_prefix: dict[str, bool] = field(default_factory=dict)  # backend -> key-prefix masks checked right
    chosen: str | None = None

    def lines(self) -> list[str]:
        out = []
        for name in priority():
            if name not in self.reasons:
                continue
            reason = self.reasons[name]
            mark = "chosen" if name == self.chosen else ("works" if reason is None else "no")
            out.append(f"{name:10s} {mark:7s} {reason or self.notes.get(name, '')}".rstrip())
        return out


def _check_numerics(backend: AttentionBackend, device: torch.device, dtype: torch.dtype, kind: LayerKind) -> str | None:
    """Run the backend on a small packed batch and compare with the reference backend."""
    causal, window = kind
    gen = torch.Generator().manual_seed(0)
    lengths = [7, 1, 33, 16]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    total, heads, kv_heads, dim = sum(lengths), 4, 2, 64
    q = torch.randn(total, heads, dim, generator=gen).to(device, dtype)
    k = torch.randn(total, kv_heads, dim, generator=gen).to(device, dtype)
    v = torch.randn(total, kv_heads, dim, generator=gen).to(device, dtype)
    packed = PackedAttention(cu, max(lengths))
    try:
        got = backend.attend(q, k, v, packed, scale=dim**-0.5, causal=causal, window=window)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:
        return f"failed on a test batch ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    ref = ReferenceBackend().attend(
        q.double().cpu(),
        k.double().cpu(),
        v.double().cpu(),
        PackedAttention(cu.cpu(), max(lengths)),
        scale=dim**-0.5,
        causal=causal,
        window=window,
    )
    err = (got.double().cpu() - ref).abs().max().item()
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    if not err <= tol:
        return f"wrong result on a test batch (causal={causal}, window={window}): max error {err:.2e} > {tol}"
    return None


def _check_key_prefix(
    backend: AttentionBackend, device: torch.device, dtype: torch.dtype, window: int | None = None
) -> str | None:
    """Causal attention with more keys than queries per sequence (a shared prefix's keys in front) must align
    the mask (and a sliding window) to the bottom right, as the reference backend does."""
    gen = torch.Generator().manual_seed(1)
    q_lengths, k_lengths = [3, 1, 9], [8, 6, 9]
    cu_q = torch.tensor([0, *torch.tensor(q_lengths).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(k_lengths).cumsum(0).tolist()], dtype=torch.int32)
    q = torch.randn(sum(q_lengths), 4, 64, generator=gen)
    k, v = (torch.randn(sum(k_lengths), 2, 64, generator=gen) for _ in range(2))
    try:
        packed = PackedAttention(cu_q.to(device), max(q_lengths), cu_k.to(device), max(k_lengths))
        inputs = (x.to(device, dtype) for x in (q, k, v))
        got = backend.attend(*inputs, packed, scale=0.125, causal=True, window=window)
    except Exception as exc:
        return f"failed with a key prefix ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    packed = PackedAttention(cu_q, max(q_lengths), cu_k, max(k_lengths))
    ref = ReferenceBackend().attend(q.double(), k.double(), v.double(), packed, scale=0.125, causal=True, window=window)
    err = (got.double().cpu() - ref).abs().max().item()
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    if err <= tol:
        return None
    return f"causal mask (window={window}) with a key prefix differs from the reference: max error {err:.2e}"


_PROBES: dict[tuple, ProbeResult] = {}


def probe(
    device: torch.device,
    dtype: torch.dtype,
    layer_kinds: list[LayerKind],
    xformers_torch_ops: bool = False,
) -> ProbeResult:
    """Which backends run here for a model with these layer kinds, and why the others do not (cached)."""
    key = (str(device), dtype, tuple(layer_kinds), xformers_torch_ops)
    if key in _PROBES:
        return _PROBES[key]
    result = ProbeResult(device=str(device), dtype=str(dtype).replace("torch.", ""), layer_kinds=list(layer_kinds))
    for name in priority():
        backend = make_backend(name, xformers_torch_ops)
        reason = backend.why_not(device, dtype)
        for kind in layer_kinds if reason is None else []:
            reason = backend.why_not_layer(*kind) or _check_numerics(backend, device, dtype, kind)
            if reason:
                break
        result.reasons[name] = reason
        notes = [note for note in (backend.describe(),) if note and reason is None]
        causal_windows = [window for causal, window in layer_kinds if causal]
        if reason is None and backend.shared_prefix and causal_windows:
            checks = (_check_key_prefix(backend, device, dtype, w) for w in causal_windows if name != "reference")
            why = next((c for c in checks if c), None)
            # The backend still runs, without shared prefixes, where its key-prefix masks are wrong.
            result.shared_prefix[name] = why is None
            notes.append(f"shared prefixes off: {why}" if why else "shared prefixes")
        if notes:
            result.notes[name] = "; ".join(notes)
    _PROBES[key] = result
    return result


def choose(
    requested: str,
    device: torch.device,
    dtype: torch.dtype,
    layer_kinds: list[LayerKind],
    xformers_torch_ops: bool = False,
) -> tuple[AttentionBackend, ProbeResult]:
    """Pick the backend (``requested`` = "auto" or a name); raise with every reason if it cannot run."""
    result = probe(device, dtype, layer_kinds, xformers_torch_ops)
    candidates = priority() if requested == "auto" else (requested,)
    for name in candidates:
        if result.reasons.get(name) is None:
            result = replace(result, chosen=name)  # the cached probe stays as it was
            if name == "xformers" and xformers_torch_ops:
                logger.info("xformers runs on its PyTorch-kernel operators (build check lifted by EngineConfig)")
            return make_backend(name, xformers_torch_ops), result
    raise RuntimeError(
        f"attention backend {requested!r} cannot run on {device} / {dtype}:\n  " + "\n  ".join(result.lines())
    )
