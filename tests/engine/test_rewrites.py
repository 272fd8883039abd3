"""Graph rewrites of the compiled forward: they fire where the pattern is, nowhere else, and keep the math."""

import pytest
import sentence_transformers
import torch
import torch.nn.functional as F
from compare import assert_rows_close
from tiny_models import build_st_dir

import st_backend
from st_backend.engine.packing import pack
from st_backend.engine.rewrites import REWRITES, compile_options, fuse_linear_gelu, linear_gelu, rewrites_for
from st_backend.engine.runner import PackedRunner


class Up(torch.nn.Module):
    def __init__(self, approximate="none", reuse=False):
        super().__init__()
        self.dense = torch.nn.Linear(8, 16)
        self.approximate, self.reuse = approximate, reuse

    def forward(self, x):
        h = self.dense(x)
        out = F.gelu(h, approximate=self.approximate)
        return out + h if self.reuse else out


def dynamo_rewritten(module, x):
    """Run ``module`` through Dynamo (the graph Inductor's pre-grad pass sees) with the rewrite applied."""
    seen = {}

    def backend(gm, example_inputs):
        seen["count"] = fuse_linear_gelu(gm.graph)
        gm.recompile()
        seen["targets"] = [n.target for n in gm.graph.nodes if n.op == "call_function"]
        return gm.forward

    torch._dynamo.reset()
    out = torch.compile(module, backend=backend, dynamic=True)(x)
    return out, seen


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_linear_gelu_is_fused_and_keeps_the_math(approximate):
    module = Up(approximate)
    x = torch.randn(3, 5, 8)
    out, seen = dynamo_rewritten(module, x)
    assert seen["count"] == 1
    assert seen["targets"] == [torch.ops.st_backend.linear_gelu.default]
    assert torch.equal(out, module(x))


def test_linear_used_elsewhere_is_left_alone():
    module = Up(reuse=True)
    x = torch.randn(3, 5, 8)
    out, seen = dynamo_rewritten(module, x)
    assert seen["count"] == 0
    assert torch.equal(out, module(x))


def test_linear_gelu_op_has_a_shape_for_symbolic_tracing():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        out = linear_gelu(torch.empty(1, 7, 8), torch.empty(16, 8), None, "none")
    assert out.shape == (1, 7, 16)


def test_rewrites_are_chosen_per_device_and_passed_with_a_compile_mode():
    assert rewrites_for(torch.device("cpu")) == ()
    assert "linear_gelu" in rewrites_for(torch.device("cuda"))
    assert compile_options(None, ()) == (None, None)
    options, rewrite_pass = compile_options("max-autotune-no-cudagraphs", ("linear_gelu",))
    assert options["max_autotune"] and options["pre_grad_custom_pass"] is rewrite_pass
    assert rewrite_pass.uuid() != compile_options(None, tuple(REWRITES) + ("x",))[1].uuid()


def test_compiled_runner_with_the_rewrite_equals_plain_st(tiny_root):
    """The rewrite inside a real compiled packed forward (forced on CPU) fires, and the outputs stay ST's. (On
    CPU the reference attention backend breaks the graph, and a layer's compiled pieces serve every layer, so
    the count of sites is not the count of layers; caches are off so that the pass runs at all.)"""
    path = build_st_dir("bert", tiny_root)
    plain = sentence_transformers.SentenceTransformer(str(path), device="cpu")
    fast = st_backend.SentenceTransformer(str(path), device="cpu")
    plan = fast.engine_for(None).plan
    runner = PackedRunner(
        plan.model, plan.arch, fast.engine_for(None).runner(fast.device).backend, True, ("linear_gelu",)
    )
    texts = ["a short one", "the quick brown fox jumps over the lazy dog", "x"]
    tokens = fast.engine_for(None).tokenize(texts)
    batch = pack(tokens.ids, tokens.type_ids, torch.arange(len(texts)).numpy())
    torch._dynamo.reset()
    with (
        torch._inductor.config.patch(fx_graph_cache=False),
        torch._functorch.config.patch(enable_autograd_cache=False),
        torch.inference_mode(),
    ):
        hidden = runner.forward(batch)
    assert runner.rewrite_pass.counts["linear_gelu"] >= 1
    want = plain.encode(texts, output_value="token_embeddings", convert_to_tensor=False)
    got = torch.split(hidden, batch.host_lengths.tolist())
    assert_rows_close(torch.cat(got), torch.cat(want), what="token embeddings")
