"""Fused kernels (engine/kernels): the fused forwards, run with the reference ops on the CPU, equal plain ST on every
Llama-style decoder (sliding windows and shared prefixes included); the user's model keeps its own forwards; a
kernel library that computes wrongly is refused by the check. The Triton kernels themselves: tests/test_gpu.py."""

from __future__ import annotations

import numpy as np
import pytest
import sentence_transformers
import torch
from family_check import PAIRS, TEXTS
from test_cross_encoder import QWEN_TEMPLATE, causal_pair
from tiny_models import build_st_dir

import st_backend
from st_backend.engine import kernels
from st_backend.engine.kernels import ops as ops_module

ALL = tuple(kernels.FUSIONS)


def _layers(model) -> int:
    return model[0].auto_model.config.num_hidden_layers


@pytest.mark.parametrize("arch", ["qwen3", "llama", "qwen2"])
def test_fused_forwards_equal_plain_st(tiny_root, arch):
    path = str(build_st_dir(arch, tiny_root, pooling_mode="lasttoken"))
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    fast = st_backend.SentenceTransformer(path, device="cpu", engine=st_backend.EngineConfig(kernels=ALL))
    np.testing.assert_allclose(fast.encode(TEXTS, batch_size=3), plain.encode(TEXTS), atol=1e-5)
    found = fast.engine_for().describe(torch.device("cpu"))["kernels"]
    layers = _layers(plain)
    norms = 2 * layers + 1 + (2 * layers if arch == "qwen3" else 0)  # two per layer, the final one, Qwen3's q/k
    assert found == {"ops": "reference", "rms_norm": norms, "swiglu": layers, "rope": layers}, found
    # Only the engine's view runs them: the user's modules keep their class forward.
    assert not [name for name, m in fast.named_modules() if "forward" in m.__dict__]


def test_fused_attention_with_shared_prefixes_equals_plain_st(tiny_root, monkeypatch):
    monkeypatch.setattr(st_backend.EngineConfig, "__init__", _forcing(st_backend.EngineConfig.__init__))
    plain, fast = causal_pair(tiny_root, "qwen3", QWEN_TEMPLATE)
    described = fast.engine().describe(torch.device("cpu"))
    assert described["kernels"]["rope"] > 0
    assert described["shared_prefixes"] and described["shared_prefix_limits"] == "none", described
    docs = [d for _, d in PAIRS] * 3
    got = [r["score"] for r in fast.rank("what is a cat", docs)]
    np.testing.assert_allclose(got, [r["score"] for r in plain.rank("what is a cat", docs)], atol=1e-5)


def _forcing(init):
    def forced(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "kernels": ALL})

    return forced


def test_off_on_cpu_by_default_with_the_reason(tiny_root):
    path = str(build_st_dir("qwen3", tiny_root, pooling_mode="lasttoken"))
    fast = st_backend.SentenceTransformer(path, device="cpu")
    found = fast.engine_for().describe(torch.device("cpu"))["kernels"]
    assert "off" in found and "cpu" in found["off"], found
    off = st_backend.SentenceTransformer(path, device="cpu", engine=st_backend.EngineConfig(kernels=()))
    assert off.engine_for().describe(torch.device("cpu"))["kernels"] == {"off": "EngineConfig(kernels=())"}


def test_a_library_that_computes_wrongly_is_refused():
    wrong = ops_module.Ops(
        "wrong", ops_module.REFERENCE.rms_norm, lambda gate, up: gate * up, ops_module.REFERENCE.rope
    )
    why = ops_module.check(wrong, torch.device("cpu"), torch.float32)
    assert why is not None and "silu_mul" in why, why
    assert ops_module.check(ops_module.REFERENCE, torch.device("cpu"), torch.float32) is None


@pytest.mark.parametrize("value", ["rms_norm", ("rms_norm", "nope"), 3])
def test_config_names_bad_kernels(value):
    with pytest.raises(ValueError, match="EngineConfig.kernels"):
        st_backend.EngineConfig(kernels=value)


def test_a_kernel_failing_at_a_models_sizes_leaves_those_modules_their_own_forward(tiny_root, monkeypatch):
    def failing(gate, up):
        raise RuntimeError("no kernel for these sizes")

    broken = ops_module.Ops("broken", ops_module.REFERENCE.rms_norm, failing, ops_module.REFERENCE.rope)
    monkeypatch.setattr(kernels, "ops_for", lambda device, dtype, forced: (broken, None))
    path = str(build_st_dir("llama", tiny_root, pooling_mode="lasttoken"))
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    fast = st_backend.SentenceTransformer(path, device="cpu", engine=st_backend.EngineConfig(kernels=ALL))
    np.testing.assert_allclose(fast.encode(TEXTS), plain.encode(TEXTS), atol=1e-5)
    found = fast.engine_for().describe(torch.device("cpu"))["kernels"]
    assert found["swiglu"] == 0 and "no kernel for these sizes" in found["kept"]["swiglu"], found
    assert found["rms_norm"] > 0 and found["rope"] > 0, found


def test_no_fusion_for_models_without_llama_style_modules(tiny_root):
    path = str(build_st_dir("bert", tiny_root))
    fast = st_backend.SentenceTransformer(path, device="cpu", engine=st_backend.EngineConfig(kernels=ALL))
    found = fast.engine_for().describe(torch.device("cpu"))["kernels"]
    assert "off" in found and "no module" in found["off"], found
