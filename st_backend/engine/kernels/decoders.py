"""Fusions for the Llama-style decoders the engine runs (Qwen3, Qwen2, Llama): RMSNorm, SiLU-mul in the MLP, and
rotary embeddings inside attention. Each matches transformers' own classes by name and module (never a subclass
or remote code, whose forward may differ), and every fused forward calls the module's own projections, so
whatever the Linear layers are (quantized, say) they run as they are."""

from __future__ import annotations

import sys

import torch

from . import Fusion, Ops, register
from .ops import REFERENCE, check_rope, compare

T = 17  # tokens in a check: not a multiple of 16 nor 1, the sizes Triton specialises on

_FAMILIES = ("Llama", "Qwen2", "Qwen3")


def _is(module: torch.nn.Module, suffix: str) -> bool:
    cls = type(module)
    return cls.__module__.startswith("transformers.models.") and cls.__name__ in {f + suffix for f in _FAMILIES}


def _rms_norm_forward(module, ops: Ops):
    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        return ops.rms_norm(hidden_states, module.weight, module.variance_epsilon)

    return forward


def _same_dtype(module, dtype: torch.dtype) -> str | None:
    # The kernels write the activations' dtype; transformers' weight * x would promote to a wider weight's.
    weights = {p.dtype for p in module.parameters(recurse=False)}
    return None if weights <= {dtype} else f"weights in {sorted(map(str, weights))}, activations in {dtype}"


def _rand(module, dtype, *shape) -> torch.Tensor:
    device = next(module.parameters()).device
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)


def _verify_rms_norm(module, ops: Ops, dtype: torch.dtype) -> str | None:
    x = _rand(module, dtype, 1, T, module.weight.shape[0])
    got = ops.rms_norm(x, module.weight, module.variance_epsilon)
    return _same_dtype(module, dtype) or compare(got, REFERENCE.rms_norm(x, module.weight, module.variance_epsilon))


def _silu_mlp(module) -> bool:
    return _is(module, "MLP") and type(module.act_fn).__name__ in ("SiLU", "SiLUActivation")


def _verify_mlp(module, ops: Ops, dtype: torch.dtype) -> str | None:
    gate, up = (_rand(module, dtype, 1, T, module.gate_proj.out_features) for _ in range(2))
    return compare(ops.silu_mul(gate, up.flip(1)), REFERENCE.silu_mul(gate, up.flip(1)))


def _mlp_forward(module, ops: Ops):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return module.down_proj(ops.silu_mul(module.gate_proj(x), module.up_proj(x)))

    return forward


def _attention_forward(module, ops: Ops):
    """transformers' Llama / Qwen2 / Qwen3 attention forward (5.17-5.25) for the engine's calls (no cache), with
    the rotary embedding as one kernel. Qwen3 normalises q and k per head first; Qwen2 and Qwen3 pass their
    layer's sliding window (None on full layers), Llama none."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    qk_norm = hasattr(module, "q_norm")
    window = {"sliding_window": module.sliding_window} if hasattr(module, "sliding_window") else {}
    eager = sys.modules[type(module).__module__].eager_attention_forward
    own = type(module).forward

    def forward(hidden_states, position_embeddings, attention_mask=None, past_key_values=None, cache=None, **kwargs):
        cos, sin = position_embeddings
        if past_key_values is not None or cache is not None or cos.shape[-1] != module.head_dim:
            # A cache, or a partial rotary embedding: the module's own forward, as transformers runs it.
            cached = {"past_key_values": past_key_values} if past_key_values is not None else {}
            cached |= {"cache": cache} if cache is not None else {}
            return own(module, hidden_states, position_embeddings, attention_mask, **cached, **kwargs)
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, module.head_dim)
        query = module.q_proj(hidden_states).view(hidden_shape)
        key = module.k_proj(hidden_states).view(hidden_shape)
        if qk_norm:
            query, key = module.q_norm(query), module.k_norm(key)
        value = module.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        query, key = ops.rope(query.transpose(1, 2), key.transpose(1, 2), cos, sin)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation, eager)
        out, weights = attention(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=module.attention_dropout if module.training else 0.0,
            scaling=module.scaling,
            **window,
            **kwargs,
        )
        return module.o_proj(out.reshape(*input_shape, -1).contiguous()), weights

    return forward


def _verify_rope(module, ops: Ops, dtype: torch.dtype) -> str | None:
    """The rotary kernel at this attention's head counts and head_dim."""
    config, device = module.config, next(module.parameters()).device
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return check_rope(ops, T, heads, kv_heads, module.head_dim, device, dtype, torch.Generator().manual_seed(1))


register(Fusion("rms_norm", lambda m: _is(m, "RMSNorm"), _rms_norm_forward, _verify_rms_norm))
register(Fusion("swiglu", _silu_mlp, _mlp_forward, _verify_mlp))
# Partial rotary embeddings (cos narrower than head_dim) run the module's own forward, checked per call.
register(Fusion("rope", lambda m: _is(m, "Attention"), _attention_forward, _verify_rope))
