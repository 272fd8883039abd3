"""The kernels fusions call, as one small interface with two implementations: ``REFERENCE`` (plain PyTorch, the
exact math transformers' modules compute: what CPU tests run the fused forwards with) and Liger-Kernel's Triton
kernels on CUDA (``pip install liger-kernel``; optional). Each library is checked against the reference on a test
tensor before any model uses it, as attention backends are."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Ops:
    name: str
    # (x (..., H), weight (H,), eps) -> transformers' Llama-style RMSNorm: rstd in fp32, scaled x cast back, * weight
    rms_norm: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    # (gate, up) -> silu(gate) * up
    silu_mul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    # (q (B, H, T, D), k (B, Hkv, T, D), cos (B, T, D), sin) -> (q, k) rotated as transformers' apply_rotary_pos_emb
    rope: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(q, k, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


REFERENCE = Ops("reference", _rms_norm, lambda gate, up: F.silu(gate) * up, _rope)


def _liger() -> Ops:
    from importlib.metadata import version

    from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    from liger_kernel.ops.rope import LigerRopeFunction
    from liger_kernel.ops.swiglu import LigerSiLUMulFunction

    return Ops(
        f"liger-kernel {version('liger-kernel')}",
        # "llama" casting: fp32 inside, the scaled row cast back before the weight (as transformers' RMSNorm).
        lambda x, weight, eps: LigerRMSNormFunction.apply(x, weight, eps, 0.0, "llama", False),
        LigerSiLUMulFunction.apply,
        # In place on the contiguous (B, T, H, D) storage a projection's view(...).transpose(1, 2) leaves.
        lambda q, k, cos, sin: LigerRopeFunction.apply(q, k, cos, sin),
    )


def compare(got: torch.Tensor, want: torch.Tensor) -> str | None:
    """None when ``got`` matches ``want`` to the dtype's rounding, else by how much it does not (NaN never matches)."""
    tol = 1e-4 if want.dtype == torch.float32 else 3e-2
    err = ((got.float() - want.float()).abs() / (want.float().abs() + 1)).max().item()
    return None if err <= tol else f"differs from the reference by {err:.2e} > {tol}"


def check_rope(ops: Ops, tokens: int, heads: int, kv_heads: int, dim: int, device, dtype, gen) -> str | None:
    """``ops.rope`` against the reference, q and k laid out as the fused attention passes them ((1, heads, T, dim)
    views of (1, T, heads, dim) projections), cos / sin as transformers' rotary embedding gives them ((1, T, dim),
    halves repeated)."""
    q = torch.randn(1, tokens, heads, dim, generator=gen).to(device, dtype).transpose(1, 2)
    k = torch.randn(1, tokens, kv_heads, dim, generator=gen).to(device, dtype).transpose(1, 2)
    angles = torch.rand(1, tokens, dim // 2, generator=gen) * 6
    cos, sin = (torch.cat([f(angles)] * 2, -1).to(device, dtype) for f in (torch.cos, torch.sin))

    def run(o: Ops) -> torch.Tensor:
        return torch.cat([t.flatten() for t in o.rope(q.clone(), k.clone(), cos, sin)])

    return compare(run(ops), run(REFERENCE))


def check(ops: Ops, device: torch.device, dtype: torch.dtype) -> str | None:
    """None when ``ops`` match the reference on test tensors of this device and dtype, else why not."""
    try:
        return _check(ops, device, dtype)
    except Exception as exc:
        return f"{ops.name} failed on a test tensor ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"


def _check(ops: Ops, device: torch.device, dtype: torch.dtype) -> str | None:
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device, dtype)

    # The layouts the fused forwards pass: (1, T, hidden) activations, (1, T, heads, head_dim) for q/k norms.
    x, w, heads, w_head = rand(1, 37, 256), rand(256), rand(1, 37, 4, 64), rand(64)
    cases = (
        ("rms_norm", lambda o: o.rms_norm(x, w, 1e-6)),
        ("rms_norm per head", lambda o: o.rms_norm(heads, w_head, 1e-6)),
        ("silu_mul", lambda o: o.silu_mul(x, x.flip(1))),
    )
    for name, case in cases:
        why = compare(case(ops), case(REFERENCE))
        if why:
            return f"{ops.name} {name} {why}"
    why = check_rope(ops, 37, 4, 2, 64, device, dtype, gen)
    return f"{ops.name} rope {why}" if why else None


_CHECKED: dict[tuple[str, torch.dtype], tuple[Ops | None, str | None]] = {}


def ops_for(device: torch.device, dtype: torch.dtype, forced: bool = False) -> tuple[Ops | None, str | None]:
    """(kernels, None) for this device and dtype, or (None, why not). ``forced`` (fusions named in EngineConfig):
    the reference ops where no kernel library runs, so CPU tests exercise every fused forward."""
    key = (str(device), dtype)
    if key not in _CHECKED:
        found: tuple[Ops | None, str | None]
        if device.type != "cuda":
            found = None, f"no fused kernels on {device.type} (Liger-Kernel's are Triton kernels for CUDA)"
        else:
            try:
                ops = _liger()
            except ImportError as exc:
                found = None, f"liger-kernel is not installed ({exc}); pip install liger-kernel"
            except Exception as exc:  # an install that does not import (its own settings, say)
                found = None, f"liger-kernel does not import ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            else:
                why = check(ops, device, dtype)
                found = (None, why) if why else (ops, None)
        _CHECKED[key] = found
    ops, reason = _CHECKED[key]
    if ops is None and forced:
        return REFERENCE, None
    return ops, reason
