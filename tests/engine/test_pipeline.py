"""The feeding pipeline: every input exactly once, in any chunking and thread count, errors surfaced."""

import numpy as np
import pytest

from st_backend.engine.pipeline import packed_batches
from st_backend.engine.tokenizer import Tokenized


def fake_tokenize(lengths):
    def tokenize(start, stop):
        ids = [np.full(n, i, dtype=np.int64) for i, n in enumerate(lengths[start:stop], start=start)]
        return Tokenized(ids, None, np.array([len(a) for a in ids], dtype=np.int64))

    return tokenize


@pytest.mark.parametrize("chunk_size,threads", [(None, 1), (7, 1), (7, 3), (1, 2), (1000, 4)])
def test_every_input_once_with_its_own_tokens(chunk_size, threads):
    lengths = np.random.default_rng(0).integers(1, 40, size=101).tolist()
    seen = []
    for batch in packed_batches(
        len(lengths), fake_tokenize(lengths), max_tokens=64, max_sequences=5, chunk_size=chunk_size, threads=threads
    ):
        assert batch.num_tokens <= 64 or len(batch.indices) == 1
        assert len(batch.indices) <= 5
        for i, start, stop in zip(batch.indices, batch.cu_seqlens[:-1], batch.cu_seqlens[1:]):
            # each input's own tokens (filled with its index) land in its own segment
            assert batch.input_ids[start:stop].tolist() == [i] * lengths[i]
        seen.extend(batch.indices.tolist())
    assert sorted(seen) == list(range(len(lengths)))


def test_tokenizer_errors_reach_the_caller():
    def broken(start, stop):
        raise RuntimeError(f"chunk {start}:{stop} failed")

    with pytest.raises(RuntimeError, match="chunk 0:1 failed"):
        list(packed_batches(10, broken, max_tokens=8, max_sequences=2, chunk_size=4, threads=2))


def test_stopping_early_does_not_hang():
    lengths = [3] * 1000
    batches = packed_batches(1000, fake_tokenize(lengths), max_tokens=9, max_sequences=3, chunk_size=10, threads=2)
    next(batches)
    batches.close()  # the producer thread is told to stop and joined


def test_chunks_start_small_and_grow_to_chunk_size():
    from st_backend.engine.pipeline import chunk_bounds

    for n, chunk in ((1000, 128), (5, 128), (1, 1), (2048, 2048), (130, 7)):
        bounds = list(chunk_bounds(n, chunk))
        assert [a for a, _ in bounds] == [0] + [b for _, b in bounds[:-1]] and bounds[-1][1] == n  # cover 0..n once
        sizes = [b - a for a, b in bounds]
        assert max(sizes) <= chunk and sizes[0] == min(n, max(1, chunk // 8))
        assert all(b >= a for a, b in zip(sizes[:-2], sizes[1:-1]))  # growing until the remainder
    assert [b - a for a, b in chunk_bounds(1000, 128)] == [16, 32, 64, 128, 128, 128, 128, 128, 128, 120]


def test_slices_cover_a_chunk_in_order_with_a_minimum_size():
    from st_backend.engine.pipeline import slices

    assert slices(0, 128, 4, 64) == [(0, 64), (64, 128)]
    assert slices(100, 1124, 4, 64) == [(100, 356), (356, 612), (612, 868), (868, 1124)]
    assert slices(0, 10, 4, 64) == [(0, 10)]  # shorter than one minimum slice: one
    assert slices(5, 6, 3) == [(5, 6)]
    for start, stop, parts in ((0, 1000, 3), (7, 300, 4), (0, 65, 2)):
        got = slices(start, stop, parts, 16)
        assert got[0][0] == start and got[-1][1] == stop
        assert all(a[1] == b[0] for a, b in zip(got, got[1:]))
        assert all(b - a >= 16 for a, b in got)


def test_joined_slices_keep_each_inputs_tokens_and_types():
    from st_backend.engine.pipeline import join

    def part(values, types):
        ids = [np.full(v, v) for v in values]
        prefix = (np.array([9]),)
        return Tokenized(ids, [np.full(v, 1) for v in values] if types else None, np.array(values), prefix)

    joined = join([part([1, 2], True), part([3], True)])
    assert [a.tolist() for a in joined.ids] == [[1], [2, 2], [3, 3, 3]]
    assert [len(t) for t in joined.type_ids] == [1, 2, 3] and joined.lengths.tolist() == [1, 2, 3]
    assert [p.tolist() for p in joined.prefix] == [[9]]
    assert join([part([1], False), part([2], False)]).type_ids is None
    with pytest.raises(RuntimeError, match="type ids"):
        join([part([1], False), part([2], True)])


def test_each_chunk_is_tokenized_in_slices_on_every_thread():
    calls = []
    lengths = [2] * 1000

    def tokenize(start, stop):
        calls.append((start, stop))
        return fake_tokenize(lengths)(start, stop)

    batches = packed_batches(
        1000, tokenize, max_tokens=10_000, max_sequences=10_000, chunk_size=512, threads=4, min_slice=16
    )
    sizes = [len(b.indices) for b in batches]
    assert sizes == [64, 128, 256, 512, 40]  # one batch per chunk: slices joined before batching
    assert sorted(calls)[:4] == [(0, 16), (16, 32), (32, 48), (48, 64)]  # the first chunk, cut four ways
    assert len(calls) == 4 + 4 + 4 + 4 + 2


def test_weighted_slices_share_a_few_long_texts_out():
    from st_backend.engine.pipeline import slices
    from st_backend.engine.tokenizer import WEIGHT_CAP, text_weights

    weights = np.array([1000] * 8 + [1] * 56)  # 8 long texts first, then short ones
    got = slices(0, 64, 4, 64, weights, min_weight=1000)
    assert len(got) == 4 and got[0][0] == 0 and got[-1][1] == 64
    assert all(a[1] == b[0] for a, b in zip(got, got[1:]))
    shares = [int(weights[a:b].sum()) for a, b in got]
    assert max(shares) <= 2 * 8056 / 4  # near-equal weight, not near-equal counts
    assert slices(0, 64, 4, 64) == [(0, 64)]  # by count alone: one slice, as before
    assert slices(0, 64, 4, 64, weights, min_weight=10**6) == [(0, 64)]  # too little work to share
    assert slices(0, 3, 8, 1, np.array([5, 5, 5]), min_weight=1) == [(0, 1), (1, 2), (2, 3)]
    assert text_weights(["ab", ("abc", "d"), "x" * (WEIGHT_CAP + 5)]).tolist() == [2, 4, WEIGHT_CAP]
