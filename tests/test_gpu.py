"""GPU checks (run on the device machine): every working backend equals the reference backend, and fp16
encode equals plain ST in fp16 (cosine >= 0.999)."""

from __future__ import annotations

import json
import os

import pytest
import sentence_transformers
import torch
from compare import assert_rows_close
from tiny_models import ARCHS, build_hf_dir, build_st_dir

import st_backend
from st_backend import EngineConfig
from st_backend.bench.factory import FAMILIES
from st_backend.engine.attention import PRIORITY, make_backend, probe

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

WORDS = "the quick brown fox jumps over a lazy dog while seven tired cats watch from under wet grass".split()
TEXTS = ["", "a", *[" ".join(WORDS[: i % len(WORDS) + 1] * (1 + i // 7)) for i in range(60)]]
REPORT: dict = {}


@pytest.fixture(scope="module", autouse=True)
def write_report():
    yield
    if os.environ.get("ST_BACKEND_GPU_REPORT"):
        with open(os.environ["ST_BACKEND_GPU_REPORT"], "w") as f:
            json.dump(REPORT, f, indent=2)


def _encode(path, dtype, attention, xformers_torch_ops=False):
    config = EngineConfig(attention=attention, dtype=dtype, xformers_torch_ops=xformers_torch_ops)
    model = st_backend.SentenceTransformer(str(path), device="cuda", engine=config)
    out = model.encode(TEXTS, convert_to_tensor=True, batch_size=16)
    engine = model.engine_for(None)
    return out.float(), engine.runner(model.device).backend.name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_working_backend_equals_reference(tiny_root, arch, dtype):
    path = build_st_dir(arch, tiny_root)
    ref, _ = _encode(path, dtype, "reference")
    ran = []
    for torch_ops in (False, True):
        plan = st_backend.SentenceTransformer(str(path), device="cuda").engine_for(None).plan
        kinds = plan.arch.layer_kinds(plan.model.config)
        reasons = probe(torch.device("cuda"), dtype, kinds, torch_ops).reasons
        for name in PRIORITY:
            key = (name, torch_ops and name == "xformers")  # the option only changes xformers
            if name == "reference" or reasons[name] is not None or key in ran:
                continue
            got, used = _encode(path, dtype, name, torch_ops)
            assert used == name
            assert_rows_close(got, ref, min_cosine=0.999, max_abs=float("inf"), what=f"{name} vs reference")
            ran.append(key)
        REPORT.setdefault(f"{arch}/{str(dtype)[6:]}", {})[f"xformers_torch_ops={torch_ops}"] = reasons
    REPORT.setdefault("ran", {})[f"{arch}/{str(dtype)[6:]}"] = [f"{n}{' (torch ops)' if t else ''}" for n, t in ran]
    assert ran, f"no backend besides reference works on CUDA for {arch}: {reasons}"


@pytest.mark.parametrize("arch", [*ARCHS, *sorted(FAMILIES)])  # every family, packed or grouped
def test_fp16_encode_equals_plain_st_fp16(tiny_root, arch):
    path = build_st_dir(arch, tiny_root)
    plain = sentence_transformers.SentenceTransformer(str(path), device="cuda").half()
    want = plain.encode(TEXTS, convert_to_tensor=True, batch_size=16).float()
    got, used = _encode(path, torch.float16, "auto")
    REPORT.setdefault("auto", {})[arch] = used
    assert_rows_close(got, want, min_cosine=0.999, max_abs=float("inf"), what=f"{arch} fp16 ({used})")


# T5's sequence classifier is an encoder-decoder: it runs ST's own path.
@pytest.mark.parametrize("arch", sorted(set(FAMILIES) - {"t5"}))
def test_family_cross_encoder_fp16_equals_plain_st_fp16(tiny_root, arch):
    path = str(build_hf_dir(arch, tiny_root, "seq-cls", num_labels=3))
    pairs = [(t, TEXTS[-1 - i]) for i, t in enumerate(TEXTS)]
    plain = sentence_transformers.CrossEncoder(path, device="cuda").half()
    fast = st_backend.CrossEncoder(path, device="cuda").half()
    assert not isinstance(fast.engine(), str), fast.engine()
    want = plain.predict(pairs, convert_to_tensor=True).float()
    got = fast.predict(pairs, convert_to_tensor=True).float()
    assert_rows_close(got, want, min_cosine=0.999, max_abs=float("inf"), what=f"{arch} seq-cls fp16")


def test_real_minilm_fp16_equals_plain_st_fp16():
    from st_backend.default_model import default_model_path

    try:
        path = default_model_path()
    except ImportError:
        pytest.skip("the embedded default model is not installed here")
    plain = sentence_transformers.SentenceTransformer(path, device="cuda").half()
    fast = st_backend.SentenceTransformer(path, device="cuda", engine=EngineConfig(dtype=torch.float16))
    want = plain.encode(TEXTS, convert_to_tensor=True).float()
    got = fast.encode(TEXTS, convert_to_tensor=True).float()
    REPORT.setdefault("auto", {})["all-MiniLM-L6-v2"] = fast.engine_for(None).runner(fast.device).backend.name
    assert_rows_close(got, want, min_cosine=0.999, max_abs=float("inf"), what="all-MiniLM-L6-v2 fp16")


@pytest.mark.parametrize("arch", ("bert", "xlm-roberta", "modernbert"))
def test_multi_vector_fp16_equals_plain_st_fp16(tiny_root, arch):
    from colbert_models import build_colbert_dir

    path = build_colbert_dir("st", arch, tiny_root, query_expansion={"strategy": "fixed", "attend": True, "length": 32})
    fast = st_backend.MultiVectorEncoder(str(path), device="cuda").half()
    plain = sentence_transformers.MultiVectorEncoder(str(path), device="cuda").half()
    for method in ("encode_query", "encode_document"):
        got, want = getattr(fast, method)(TEXTS), getattr(plain, method)(TEXTS)
        assert [len(g) for g in got] == [len(w) for w in want]
        assert_rows_close(torch.cat(got).float(), torch.cat(want).float(), min_cosine=0.999, max_abs=2e-2)
    q, d = plain.encode_query(TEXTS[:8]), plain.encode_document(TEXTS)
    scores, ref = fast.similarity(q, fast.encode_packed(TEXTS)), plain.similarity(q, d)
    assert torch.allclose(scores, ref, rtol=1e-2, atol=5e-2)
    REPORT[f"multi_vector/{arch}"] = {"backend": fast.engine_for("document").runner(fast.device).backend.name}


@pytest.mark.parametrize("window", [None, 2])
def test_working_backends_attend_with_a_key_prefix(window):
    from test_shared_prefix import _full_and_split

    ran = []
    for name in PRIORITY:
        kinds = [(True, None)] + ([(True, window)] if window else [])
        reasons = probe(torch.device("cuda"), torch.float16, kinds).reasons
        if name == "reference" or reasons[name] or not make_backend(name).shared_prefix:
            continue
        got, want, _ = _full_and_split(True, window, name, "cuda", torch.float16)
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)
        ran.append(name)
    REPORT[f"key_prefix/window={window}"] = ran
    assert ran, "no GPU backend shares prefixes here (the probe found no bottom-right key-prefix mask)"


@pytest.mark.parametrize("arch", ("qwen3", "llama"))
def test_causal_reranker_sharing_its_template_head_fp16_equals_plain_st_fp16(tiny_root, arch):
    import numpy as np
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.cross_encoder.modules.logit_score import LogitScore
    from test_cross_encoder import PAIRS, QWEN_TEMPLATE
    from tiny_models import build_hf_dir

    path = str(build_hf_dir(arch, tiny_root, "causal-lm"))
    transformer = Transformer(
        path, transformer_task="text-generation", processor_kwargs={"chat_template": QWEN_TEMPLATE}
    )
    transformer.max_seq_length = 256
    vocab = transformer.tokenizer.get_vocab()
    modules = [transformer, LogitScore(vocab[sorted(vocab)[-1]], vocab[sorted(vocab)[-2]])]
    plain = sentence_transformers.CrossEncoder(modules=modules, device="cuda").half()
    fast = st_backend.CrossEncoder(modules=modules, device="cuda").half()
    pairs = [p for p in PAIRS if len(p[0]) < 100 and len(p[1]) < 100] * 4
    want = plain.predict(pairs, activation_fn=torch.nn.Identity())
    got = fast.predict(pairs, activation_fn=torch.nn.Identity())
    runner = fast.engine().runner(fast.device)
    REPORT[f"shared_prefix/{arch}"] = {"backend": runner.backend.name, "shares": runner.shares_prefixes}
    assert fast.engine().shared_prefix(None, 2, fast.device) is not None, "the template head was not shared"
    np.testing.assert_allclose(got, want, atol=2e-2, rtol=2e-2)


def test_many_chunks_on_tokenizer_processes_equal_plain_st_fp16(tiny_root):
    """Thousands of inputs in many chunks on two tokenizer processes: the feeding path the GPU bench takes."""
    path = build_st_dir("bert", tiny_root)
    texts = [TEXTS[i % len(TEXTS)] + f" {i}" for i in range(5000)]
    plain = sentence_transformers.SentenceTransformer(str(path), device="cuda").half()
    want = plain.encode(texts, convert_to_tensor=True, batch_size=256).float()
    config = EngineConfig(dtype=torch.float16, chunk_size=256, tokenizer_processes=2)
    got = st_backend.SentenceTransformer(str(path), device="cuda", engine=config).encode(texts, convert_to_tensor=True)
    assert_rows_close(got.float(), want, min_cosine=0.999, max_abs=float("inf"), what="5,000 inputs in chunks")


@pytest.mark.parametrize("arch", ("bert", "qwen3"))
def test_compiled_fp16_with_rewrites_equals_plain_st_fp16(tiny_root, arch):
    """The compiled forward the GPU bench runs: graph rewrites (Linear + GELU on eager kernels) and the probe's
    backend (CUTLASS for bidirectional layers), against plain ST in fp16."""
    path = build_st_dir(arch, tiny_root)
    plain = sentence_transformers.SentenceTransformer(str(path), device="cuda").half()
    want = plain.encode(TEXTS, convert_to_tensor=True, batch_size=16).float()
    torch._dynamo.reset()
    config = EngineConfig(dtype=torch.float16, compile=True)
    with (  # caches off, so that the rewrite runs (and counts) here
        torch._inductor.config.patch(fx_graph_cache=False),
        torch._functorch.config.patch(enable_autograd_cache=False),
    ):
        fast = st_backend.SentenceTransformer(str(path), device="cuda", engine=config)
        got = fast.encode(TEXTS, convert_to_tensor=True, batch_size=16).float()
    runner = fast.engine_for(None).runner(fast.device)
    counts = runner.rewrite_pass.counts
    REPORT.setdefault("compiled", {})[arch] = {"backend": runner.backend.name, "rewrites": counts}
    assert_rows_close(got, want, min_cosine=0.999, max_abs=float("inf"), what=f"{arch} compiled fp16")
    if arch == "bert":  # GELU MLP; Qwen3's SiLU-gated MLP has no Linear + GELU
        assert counts["linear_gelu"] >= 1
        assert runner.backend.name == "efficient"
    else:
        assert counts["linear_gelu"] == 0
        assert runner.backend.name == "varlen"


GRAPH_ARCHS = ("bert", "xlm-roberta", "modernbert", "qwen3", "mistral", "gemma3_text")


@pytest.mark.parametrize("arch", GRAPH_ARCHS)
def test_cuda_graphs_replay_small_batches_equal_plain_st_fp16(tiny_root, arch):
    """One text per call, and calls of a few: the replayed graphs (buckets padded by filler sequences) equal
    plain ST in fp16 and the eager forward; rows do not depend on which bucket a text landed in."""
    path = build_st_dir(arch, tiny_root)
    plain = sentence_transformers.SentenceTransformer(str(path), device="cuda").half()
    want = plain.encode(TEXTS, convert_to_tensor=True).float()
    eager = st_backend.SentenceTransformer(str(path), device="cuda", engine=EngineConfig(cuda_graphs=False)).half()
    fast = st_backend.SentenceTransformer(str(path), device="cuda").half()
    calls = [TEXTS[i : i + size] for size in (1, 3) for _ in range(3) for i in range(0, len(TEXTS), size)]
    for texts in calls:  # every bucket these land in is seen three times: captured, then replayed
        fast.encode(texts)
    got = torch.cat([fast.encode(TEXTS[i : i + 1], convert_to_tensor=True) for i in range(len(TEXTS))]).float()
    triples = torch.cat([fast.encode(TEXTS[i : i + 3], convert_to_tensor=True) for i in range(0, len(TEXTS), 3)])
    tokens = fast.encode(TEXTS[5:6], output_value="token_embeddings")[0].float()
    graphs = fast.engine_for(None).runner(fast.device).graphs
    REPORT.setdefault("cuda_graphs", {})[arch] = graphs.describe()
    assert graphs.reason is None and graphs.replays > 0, graphs.describe()
    assert_rows_close(got, want, min_cosine=0.999, max_abs=float("inf"), what=f"{arch} graphs, one per call")
    assert_rows_close(triples.float(), want, min_cosine=0.999, max_abs=float("inf"), what=f"{arch} graphs, three")
    ref = eager.encode(TEXTS, convert_to_tensor=True).float()
    assert_rows_close(got, ref, min_cosine=0.9999, max_abs=float("inf"), what=f"{arch} graphs vs eager")
    want_tokens = plain.encode(TEXTS[5:6], output_value="token_embeddings")[0].float()
    assert_rows_close(tokens, want_tokens, min_cosine=0.999, max_abs=float("inf"), what=f"{arch} token rows")


def test_cuda_graphs_from_many_threads_equal_one_thread(tiny_root):
    """Replays share static buffers: concurrent callers (a server's) must each get their own rows."""
    from concurrent.futures import ThreadPoolExecutor

    path = build_st_dir("bert", tiny_root)
    fast = st_backend.SentenceTransformer(str(path), device="cuda").half()
    for _ in range(3):
        for t in TEXTS:
            fast.encode(t)
    want = [fast.encode(t, convert_to_tensor=True).float() for t in TEXTS]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda t: fast.encode(t, convert_to_tensor=True).float(), TEXTS * 4))
    assert fast.engine_for(None).runner(fast.device).graphs.replays > len(TEXTS)
    for i, row in enumerate(got):
        assert_rows_close(row[None], want[i % len(TEXTS)][None], min_cosine=0.9999, max_abs=float("inf"), what=f"{i}")


def test_cuda_graphs_large_buckets_share_one_pool_and_equal_eager(tiny_root):
    """A 32-sentence request's batch (33-64 inputs, 512-2048 tokens) replays a graph too; graphs of several buckets
    share one memory pool, so replays in any order after one another must each give their own batch's rows."""
    path = build_st_dir("bert", tiny_root)
    eager = st_backend.SentenceTransformer(str(path), device="cuda", engine=EngineConfig(cuda_graphs=False)).half()
    fast = st_backend.SentenceTransformer(str(path), device="cuda").half()
    words = "the a cat dog man woman plays runs guitar street city river quickly slowly red green".split()
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(5 + i % 23)) for i in range(64)]
    calls = [texts[:40], texts[:3], texts[10:64], texts[5:6], texts[:40]]
    for _ in range(3):
        for call in calls:
            fast.encode(call)
    graphs = fast.engine_for(None).runner(fast.device).graphs
    sizes = {key[:2] for key in graphs.graphs}
    assert any(s > 32 for _, s in sizes) and any(t > 512 for t, _ in sizes), sizes
    assert len(graphs.graphs) > 1 and all(g.graph.pool() == graphs.pool for g in graphs.graphs.values())
    replays = graphs.replays
    plain = sentence_transformers.SentenceTransformer(str(path), device="cuda").half()
    for call in calls:
        got = fast.encode(call, convert_to_tensor=True).float()
        want = eager.encode(call, convert_to_tensor=True).float()
        assert_rows_close(got, want, min_cosine=0.9999, max_abs=float("inf"), what=f"{len(call)} texts")
        ref = plain.encode(call, convert_to_tensor=True).float()
        assert_rows_close(got, ref, min_cosine=0.999, max_abs=float("inf"), what=f"{len(call)} texts, plain ST")
    assert graphs.replays == replays + len(calls), graphs.describe()


def test_cuda_graphs_captured_again_when_weights_move(tiny_root):
    """A graph reads weights at the addresses of its capture: after ``param.data = new`` (same Parameter objects,
    new storage) replays must use the new weights, equal to plain ST given the same ones."""
    path = build_st_dir("bert", tiny_root)
    plain = sentence_transformers.SentenceTransformer(str(path), device="cuda").half()
    fast = st_backend.SentenceTransformer(str(path), device="cuda").half()
    for _ in range(4):
        fast.encode(TEXTS[3])
    graphs = fast.engine_for(None).runner(fast.device).graphs
    assert graphs.graphs and graphs.replays > 0, graphs.describe()
    torch.manual_seed(7)
    for model in (plain, fast):
        torch.manual_seed(7)
        for p in model[0].model.parameters():
            p.data = p.data + torch.randn_like(p) * 0.02
    for _ in range(4):
        got = fast.encode(TEXTS[3:4], convert_to_tensor=True).float()
    want = plain.encode(TEXTS[3:4], convert_to_tensor=True).float()
    assert graphs.recaptures >= 1, graphs.describe()
    assert_rows_close(got, want, min_cosine=0.999, max_abs=float("inf"), what="after param.data = new")


def test_no_cuda_graphs_for_a_backend_that_reads_its_layout_on_the_host(tiny_root):
    """The reference backend (and xformers: its mask is built from host lengths and cached) would replay the
    capture's layout: such backends run eagerly."""
    path = build_st_dir("bert", tiny_root)
    fast = st_backend.SentenceTransformer(str(path), device="cuda", engine=EngineConfig(attention="reference"))
    for _ in range(4):
        fast.encode(TEXTS[3])
    assert fast.engine_for(None).runner(fast.device).graphs is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("arch", ("qwen3", "llama", "qwen2"))
def test_fused_kernels_equal_plain_st(tiny_root, arch, dtype):
    """The default engine on CUDA runs Liger-Kernel's fused RMSNorm, SiLU-mul and rotary kernels where installed:
    equal to plain ST in the same dtype, and to the same engine without them."""
    pytest.importorskip("liger_kernel")
    path = build_st_dir(arch, tiny_root, pooling_mode="lasttoken")
    plain = sentence_transformers.SentenceTransformer(str(path), device="cuda").to(dtype)
    want = plain.encode(TEXTS, convert_to_tensor=True, batch_size=16).float()
    fast = st_backend.SentenceTransformer(str(path), device="cuda").to(dtype)
    got = fast.encode(TEXTS, convert_to_tensor=True, batch_size=16).float()
    found = fast.engine_for(None).describe(fast.device)["kernels"]
    REPORT[f"kernels/{arch}/{dtype}"] = found
    assert found.get("ops", "").startswith("liger-kernel") and found["rope"] > 0, found
    assert_rows_close(got, want, min_cosine=0.999, max_abs=float("inf"), what=f"{arch} {dtype} fused")
    off = st_backend.SentenceTransformer(str(path), device="cuda", engine=EngineConfig(kernels=())).to(dtype)
    unfused = off.encode(TEXTS, convert_to_tensor=True, batch_size=16).float()
    assert_rows_close(got, unfused, min_cosine=0.999, max_abs=float("inf"), what=f"{arch} {dtype} fused vs not")
