"""CUDA graphs' padding (engine/graphs.py), checked on the CPU: a batch padded to its bucket by filler sequences
gives the unpadded batch's rows, for every packed architecture. The capture itself runs in tests/test_gpu.py."""

import numpy as np
import pytest
import torch
from tiny_models import ARCHS, build_st_dir

import st_backend
from st_backend.bench.factory import FAMILIES
from st_backend.engine.graphs import SEQUENCE_BUCKETS, TOKEN_BUCKETS, StaticInputs, bucket, padded_cu_seqlens
from st_backend.engine.packing import pack


def test_bucket_is_the_smallest_that_leaves_a_token_for_every_filler():
    def fits(total, seqs, tokens, sequences):
        return seqs >= sequences and total - tokens >= seqs - sequences + 1

    # Every count near a bucket's edge (and a sweep between), past the largest bucket too.
    edges = {t + d for t in TOKEN_BUCKETS for d in range(-70, 3)} | set(range(1, TOKEN_BUCKETS[-1] + 80, 13))
    for tokens in sorted(t for t in edges if t >= 1):
        for sequences in sorted({*range(1, 10), *(s + d for s in SEQUENCE_BUCKETS for d in (-1, 0, 1))}):
            if sequences > tokens:
                continue
            candidates = [(t, s) for s in SEQUENCE_BUCKETS for t in TOKEN_BUCKETS if fits(t, s, tokens, sequences)]
            size = bucket(tokens, sequences)
            if not candidates:
                assert size is None, (tokens, sequences)
                continue
            assert size in candidates, (tokens, sequences, size)
            assert size[1] == min(s for _, s in candidates)
            assert size[0] == min(t for t, s in candidates if s == size[1])


@pytest.mark.parametrize("lengths", [[5], [1, 1, 1], [7, 3], [30, 1, 2, 9, 4]])
def test_padded_layout_is_real_then_fillers(lengths):
    lengths = np.array(lengths)
    total, seqs = bucket(int(lengths.sum()), len(lengths))
    cu = padded_cu_seqlens(lengths, total, seqs)
    assert cu.dtype == np.int32 and len(cu) == seqs + 2
    assert list(cu[: len(lengths) + 1]) == [0, *np.cumsum(lengths)]
    assert cu[-1] == total and (np.diff(cu) >= 1).all()


PACKED = [a for a in (*ARCHS, *sorted(FAMILIES)) if a not in ("mpnet", "deberta-v2", "t5")]


@pytest.mark.parametrize("arch", PACKED)
def test_fillers_leave_real_rows_alone(tiny_root, arch):
    fast = st_backend.SentenceTransformer(str(build_st_dir(arch, tiny_root)), device="cpu")
    engine = fast.engine_for(None)
    runner = engine.runner(fast.device)
    texts = ["a short one", "the quick brown fox jumps over the lazy dog", "x y z", "seven tired cats"]
    tokens = engine.tokenize(texts)
    for chosen in ([0], [1, 3], [0, 1, 2, 3]):
        batch = pack(tokens.ids, tokens.type_ids, np.array(chosen))
        kwargs = runner.inputs(batch)
        assert StaticInputs.fits(kwargs)
        size = bucket(batch.num_tokens, len(chosen))
        static = StaticInputs(kwargs, *size, fast.device)
        # Leftovers of an earlier, longer batch in the filler rows must not matter either.
        for t in static.tensors.values():
            t.fill_(1)
        static.fill(kwargs, batch.host_lengths, batch.num_tokens)
        with torch.inference_mode():
            want = runner.model(**kwargs, return_dict=True).last_hidden_state[0]
            got = runner.model(**static.kwargs, return_dict=True).last_hidden_state[0][: batch.num_tokens]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_no_graphs_on_cpu_and_reported(tiny_root):
    fast = st_backend.SentenceTransformer(str(build_st_dir("bert", tiny_root)), device="cpu")
    engine = fast.engine_for(None)
    assert engine.runner(fast.device).graphs is None
    assert engine.describe(fast.device)["cuda_graphs"] == "off"


def test_a_batch_with_shared_prefix_keys_runs_eagerly():
    ids = torch.zeros(1, 4, dtype=torch.long)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    plain = {"input_ids": ids, "position_ids": ids, "cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": 4}
    assert StaticInputs.fits({**plain, "use_cache": False})
    assert not StaticInputs.fits({**plain, "st_prefix_keys": [ids], "st_prefix_values": [ids]})
    assert not StaticInputs.fits({**plain, "st_kv_index": ids[0]})
