"""The reference backend against a per-sequence loop of plain SDPA, for every layer pattern."""

import pytest
import torch
import torch.nn.functional as F

from st_backend.engine.attention import PackedAttention, choose, make_backend, probe


def naive(q, k, v, lengths, causal, window, scale):
    outs, start = [], 0
    heads = q.shape[1]
    for n in lengths:
        qs, ks, vs = (x[start : start + n].transpose(0, 1) for x in (q, k, v))
        ks = ks.repeat_interleave(heads // ks.shape[0], dim=0)
        vs = vs.repeat_interleave(heads // vs.shape[0], dim=0)
        i = torch.arange(n)
        allowed = torch.ones(n, n, dtype=torch.bool)
        if causal:
            allowed &= i[None, :] <= i[:, None]
        if window is not None:
            allowed &= (i[None, :] - i[:, None]).abs() <= window
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, attn_mask=allowed, scale=scale).transpose(0, 1))
        start += n
    return torch.cat(outs)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [None, 2, 5])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_reference_matches_per_sequence_sdpa(causal, window, kv_heads):
    gen = torch.Generator().manual_seed(1)
    lengths = [1, 9, 4, 17, 2]
    total = sum(lengths)
    q = torch.randn(total, 4, 16, generator=gen, dtype=torch.float64)
    k = torch.randn(total, kv_heads, 16, generator=gen, dtype=torch.float64)
    v = torch.randn(total, kv_heads, 16, generator=gen, dtype=torch.float64)
    cu = torch.tensor([0, 1, 10, 14, 31, 33], dtype=torch.int32)
    got = make_backend("reference").attend(q, k, v, PackedAttention(cu, 17), scale=0.3, causal=causal, window=window)
    want = naive(q, k, v, lengths, causal, window, 0.3)
    assert got.shape == want.shape == (total, 4, 16)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_probe_explains_every_backend_on_cpu():
    result = probe(torch.device("cpu"), torch.float32, [(False, None)])
    assert result.reasons["reference"] is None
    for name in ("varlen", "xformers"):
        assert result.reasons[name]  # a reason in words, never a silent absence
    backend, _ = choose("auto", torch.device("cpu"), torch.float32, [(False, None)])
    assert backend.name == "reference"


def test_choosing_a_backend_that_cannot_run_names_why():
    with pytest.raises(RuntimeError, match="varlen"):
        choose("varlen", torch.device("cpu"), torch.float32, [(False, None)])


def _fake_varlen(native: bool):
    """A varlen_attn stand-in (reference math) that takes fewer K/V heads only when ``native``; records calls."""
    from st_backend.engine.attention.reference import ReferenceBackend

    calls = []

    def fn(q, k, v, cu, cu_k, max_q, max_k, *, scale=None, **kwargs):
        calls.append(k.shape[1])
        if k.shape[1] != q.shape[1] and not native:
            raise RuntimeError("heads must match")
        return ReferenceBackend().attend(q, k, v, PackedAttention(cu, max_q), scale=scale, causal=False, window=None)

    return fn, calls


@pytest.mark.parametrize("native", [True, False])
def test_varlen_without_enable_gqa_checks_whether_the_kernel_takes_fewer_kv_heads(native):
    from st_backend.engine.attention.varlen import VarlenBackend

    backend = VarlenBackend()
    backend._has_gqa, backend.native_gqa = False, None  # as on torch 2.11
    backend._fn, calls = _fake_varlen(native)
    assert backend._gqa_runs_natively(torch.device("cpu"), torch.float32) is native
    backend.native_gqa = native
    assert "native" in backend.describe() if native else "repeated" in backend.describe()
    q, k = torch.randn(10, 4, 8), torch.randn(10, 2, 8)
    calls.clear()
    backend.attend(
        q, k, k, PackedAttention(torch.tensor([0, 4, 10], dtype=torch.int32), 6), scale=0.3, causal=False, window=None
    )
    assert calls == [2 if native else 4]  # K/V repeated per query head only when the kernel cannot take them


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta", "modernbert", "qwen3", "llama"])
def test_packed_forward_builds_no_mask_and_scans_no_positions(tiny_root, arch, monkeypatch):
    """transformers' mask builders return no mask for the packed backends without scanning position_ids for packed
    sequences (a host sync per forward: decoders on every release, BERT-family masks from 5.25 on)."""
    import sentence_transformers
    from tiny_models import build_st_dir
    from transformers import masking_utils

    import st_backend

    path = str(build_st_dir(arch, tiny_root))
    texts = ["the cat sat", "a much longer text about the dog and the cat", "x"]
    fast = st_backend.SentenceTransformer(path, device="cpu")
    want = sentence_transformers.SentenceTransformer(path, device="cpu").encode(texts)
    fast.encode(texts)  # the engine and its runner built, outside the patch

    def scanned(*args, **kwargs):
        raise AssertionError("find_packed_sequence_indices ran inside a packed forward")

    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", scanned)
    torch.testing.assert_close(torch.from_numpy(fast.encode(texts)), torch.from_numpy(want), atol=1e-5, rtol=1e-4)
