"""Fusions for the Llama-style decoders the engine runs (Qwen3, Qwen2, Llama): RMSNorm, SiLU-mul in the MLP, and
rotary embeddings inside attention. Each matches transformers' own classes by name and module (never a subclass
or remote code, whose forward may differ), and every fused forward calls the module's own projections, so
whatever the Linear layers are (quantized, say) they run as they are."""

from __future__ import annotations

import torch

from . import Fusion, Ops, register

_FAMILIES = ("Llama", "Qwen2", "Qwen3")


def _is(module: torch.nn.Module, suffix: str) -> bool:
    cls = type(module)
    return cls.__module__.startswith("transformers.models.") and cls.__name__ in {f + suffix for f in _FAMILIES}


def _rms_norm_forward(module, ops: Ops):
    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        return ops.rms_norm(hidden_states, module.weight, module.variance_epsilon)

    return forward


def _silu_mlp(module) -> bool:
    return _is(module, "MLP") and type(module.act_fn).__name__ in ("SiLU", "SiLUActivation")


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

    def forward(hidden_states, position_embeddings, attention_mask=None, past_key_values=None, cache=None, **kwargs):
        if past_key_values is not None or cache is not None:
            raise RuntimeError("st_backend's fused attention runs without a KV cache")
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, module.head_dim)
        query = module.q_proj(hidden_states).view(hidden_shape)
        key = module.k_proj(hidden_states).view(hidden_shape)
        if qk_norm:
            query, key = module.q_norm(query), module.k_norm(key)
        value = module.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query, key = ops.rope(query.transpose(1, 2), key.transpose(1, 2), cos, sin)
        attention = ALL_ATTENTION_FUNCTIONS[module.config._attn_implementation]
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


def _rotary_attention(module) -> bool:
    # Full-width rotary only: a partial one (rotary dim < head_dim) would need the kernel's rotary_dim.
    return _is(module, "Attention") and getattr(module.config, "partial_rotary_factor", 1.0) == 1.0


register(Fusion("rms_norm", lambda m: _is(m, "RMSNorm"), _rms_norm_forward))
register(Fusion("swiglu", _silu_mlp, _mlp_forward))
register(Fusion("rope", _rotary_attention, _attention_forward))
